//! Criterion benchmark of the task input queue: hand-off cost per message between a
//! producer thread and a consumer thread, for batch sizes 1, 32 and 256 (the producer
//! hands over through a `Batcher` of that size, the consumer pops up to that many at a
//! time). One criterion iteration is one message, so the reported time is ns/message.

use std::hint::black_box;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use streamnf_runtime::queue::{Batcher, MessageQueue};

/// Queue bound in messages: room for four of the largest batches.
const CAPACITY: usize = 1024;

/// Moves `n` messages from a fresh producer thread to this thread; returns the elapsed time.
fn hand_off(n: u64, batch: usize) -> Duration {
    let q = Arc::new(MessageQueue::<u64>::new(CAPACITY));
    let qp = Arc::clone(&q);
    let start = Instant::now();
    let producer = thread::spawn(move || {
        let mut b = Batcher::with_batch_size(qp, batch);
        for i in 0..n {
            if b.push(i).is_err() {
                return;
            }
        }
        b.flush().ok();
    });
    let mut out = Vec::with_capacity(batch);
    let mut got = 0u64;
    let mut sum = 0u64;
    while got < n {
        out.clear();
        match q.pop_batch_wait(&mut out, batch, Duration::from_secs(10)) {
            Ok(k) => got += k as u64,
            Err(_) => break,
        }
        sum = sum.wrapping_add(out.iter().sum::<u64>());
    }
    black_box(sum);
    let elapsed = start.elapsed();
    q.close();
    producer.join().ok();
    elapsed
}

fn queue_hand_off(c: &mut Criterion) {
    let mut g = c.benchmark_group("queue_hand_off");
    g.throughput(Throughput::Elements(1));
    for batch in [1usize, 32, 256] {
        g.bench_function(BenchmarkId::new("batch", batch), |b| b.iter_custom(|iters| hand_off(iters, batch)));
    }
    g.finish();
}

criterion_group!(benches, queue_hand_off);
criterion_main!(benches);
