//! Bounded, batched message queues: the input queue of each downstream task in the
//! parallel physical DAG (§4.3 of the paper: "the framework stores all the outputs received
//! from the upstream tasks in a queue at the downstream task, and the downstream task polls
//! the queue for input").
//!
//! What this module owns: holding messages between producers (upstream tasks, splitters)
//! and the one task that consumes them, back-pressure when the queue is full, the hand-over
//! in batches (one lock acquisition per batch, never one per message), closing, and the
//! occupancy counters the vertex manager reads ([`QueueStats`]). [`MessageQueue::retain`]
//! and [`MessageQueue::inspect`] let the framework look at queued messages (for duplicate
//! suppression by logical clock, §5.2) through a predicate the *caller* supplies.
//!
//! What it must never do: inspect packets, route, filter, reorder, or drop messages on its
//! own. A full queue blocks its producers (or reports [`PushError::Full`] for the
//! non-blocking variant); it never discards anything silently. Messages leave the queue
//! only through a pop or through a caller's explicit [`MessageQueue::retain`].
//!
//! Admission rule: a batch is admitted whole, when `len() + batch.len() <= capacity()`, or
//! when the queue is empty (so a batch larger than the whole capacity cannot deadlock).
//! Hence `len()` exceeds `capacity()` only while such an oversize batch is queued, and then
//! never by more than that batch. Each batch lands contiguously, so the messages of one
//! producer keep their order.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use streamnf_runtime::queue::{Batcher, MessageQueue};
//!
//! let q = Arc::new(MessageQueue::new(64));
//! let mut b = Batcher::new(Arc::clone(&q));
//! for i in 0..40u32 {
//!     b.push(i).unwrap();
//! }
//! b.flush().unwrap(); // end of the input burst: hand over the partial batch
//! let mut out = Vec::new();
//! assert_eq!(q.pop_batch_wait(&mut out, 100, Duration::from_millis(10)), Ok(40));
//! assert_eq!(out, (0..40).collect::<Vec<_>>());
//! ```

use parking_lot::{Condvar, Mutex, MutexGuard};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Empty batch vectors a queue keeps for producers.
const SPARE_VECS: usize = 16;

/// Polls of an empty queue before a consumer sleeps (a few microseconds).
const SPIN_BEFORE_WAIT: u32 = 2000;

/// Default number of messages a [`Batcher`] collects before handing them over.
pub const DEFAULT_BATCH_SIZE: usize = 32;

/// The queue was closed: it accepts no more messages (on push), or it is closed and has
/// been drained (on pop).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("message queue closed")]
pub struct QueueClosed;

/// Why a non-blocking (or timed) push did not hand over its batch. The batch is left
/// untouched in both cases.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The batch does not fit now (for [`MessageQueue::push_batch_timeout`]: it still did
    /// not fit when the timeout passed).
    #[error("message queue full")]
    Full,
    /// The queue was closed.
    #[error("message queue closed")]
    Closed,
}

impl From<QueueClosed> for PushError {
    fn from(_: QueueClosed) -> Self {
        PushError::Closed
    }
}

/// Counters of one queue since its creation, for the vertex manager (queue lengths are a
/// straggler hint, §5.2). Invariant: `pushed == popped + deleted + len()`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct QueueStats {
    /// Messages admitted.
    pub pushed: u64,
    /// Messages handed to the consumer.
    pub popped: u64,
    /// Messages removed by [`MessageQueue::retain`].
    pub deleted: u64,
    /// Non-empty batches admitted.
    pub batches_pushed: u64,
    /// Push calls that had to wait for space at least once (each call counts once).
    pub blocked_pushes: u64,
    /// Largest length the queue ever reached.
    pub high_water: u64,
}

struct Inner<T> {
    /// Queued batches, oldest first (never an empty one). Batches move in and out whole,
    /// by swapping vectors: a message is not copied on its way through.
    batches: VecDeque<Vec<T>>,
    /// Messages in `batches`.
    len: usize,
    /// Empty vectors (with their capacity) handed back to producers.
    spare: Vec<Vec<T>>,
    closed: bool,
    stats: QueueStats,
}

/// A bounded multi-producer queue of messages of type `T`, shared through an [`Arc`].
///
/// Producers hand over whole batches; the consumer takes up to `max` messages at a time.
/// See the [module documentation](self) for the admission rule.
pub struct MessageQueue<T> {
    inner: Mutex<Inner<T>>,
    /// Messages held, readable without the lock: an empty queue is skipped (and waited
    /// for by spinning) without touching the mutex's cache line.
    len_hint: AtomicUsize,
    /// Signalled when messages arrive or the queue closes (consumers wait on it).
    not_empty: Condvar,
    /// Signalled when space frees or the queue closes (producers wait on it).
    not_full: Condvar,
    capacity: usize,
}

/// Whether a batch of `n` messages may enter a queue holding `len` of `capacity`.
fn admits(len: usize, n: usize, capacity: usize) -> bool {
    len == 0 || len.saturating_add(n) <= capacity
}

/// `now + timeout`, or `None` when that is not representable (wait without deadline).
fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

impl<T> MessageQueue<T> {
    /// An open, empty queue holding at most `capacity` messages (a `capacity` of 0 is
    /// treated as 1).
    pub fn new(capacity: usize) -> Self {
        MessageQueue {
            inner: Mutex::new(Inner {
                batches: VecDeque::new(),
                len: 0,
                spare: Vec::new(),
                closed: false,
                stats: QueueStats::default(),
            }),
            len_hint: AtomicUsize::new(0),
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
            capacity: capacity.max(1),
        }
    }

    /// Moves all of `batch` into the queue, blocking while the batch does not fit; `batch`
    /// is left empty (its vector swapped for a spare one of the queue's). A batch larger than
    /// the capacity is admitted once the queue is empty. An empty batch returns at once.
    ///
    /// Errors: [`QueueClosed`] if the queue is closed before the batch is admitted; the
    /// batch is then left untouched.
    pub fn push_batch(&self, batch: &mut Vec<T>) -> Result<(), QueueClosed> {
        // Without a deadline the only failure is a closed queue.
        self.push_until(batch, None).map_err(|_| QueueClosed)
    }

    /// Like [`push_batch`](Self::push_batch), but gives up after `timeout` with
    /// [`PushError::Full`], leaving the batch untouched. A timeout too large to represent
    /// waits without deadline.
    pub fn push_batch_timeout(&self, batch: &mut Vec<T>, timeout: Duration) -> Result<(), PushError> {
        self.push_until(batch, deadline_after(timeout))
    }

    /// Admits `batch`, waiting for room until `deadline` (`None` = for ever).
    fn push_until(&self, batch: &mut Vec<T>, deadline: Option<Instant>) -> Result<(), PushError> {
        let mut g = self.inner.lock();
        if g.closed {
            return Err(PushError::Closed);
        }
        if batch.is_empty() {
            return Ok(());
        }
        let mut counted = false;
        while !admits(g.len, batch.len(), self.capacity) {
            if !counted {
                g.stats.blocked_pushes += 1;
                counted = true;
            }
            match deadline {
                Some(d) => {
                    if Instant::now() >= d {
                        return Err(PushError::Full);
                    }
                    self.not_full.wait_until(&mut g, d);
                }
                None => self.not_full.wait(&mut g),
            }
            if g.closed {
                return Err(PushError::Closed);
            }
        }
        self.admit(&mut g, batch);
        Ok(())
    }

    /// Moves all of `batch` into the queue if it fits now; never blocks. On failure
    /// ([`PushError::Full`] or [`PushError::Closed`]) the batch is left untouched.
    pub fn try_push_batch(&self, batch: &mut Vec<T>) -> Result<(), PushError> {
        let mut g = self.inner.lock();
        if g.closed {
            return Err(PushError::Closed);
        }
        if batch.is_empty() {
            return Ok(());
        }
        if !admits(g.len, batch.len(), self.capacity) {
            return Err(PushError::Full);
        }
        self.admit(&mut g, batch);
        Ok(())
    }

    /// Admits a non-empty batch (space already checked) and wakes consumers.
    fn admit(&self, g: &mut MutexGuard<'_, Inner<T>>, batch: &mut Vec<T>) {
        let n = batch.len();
        if n == 0 {
            return;
        }
        let fresh = g.spare.pop().unwrap_or_default();
        let full = std::mem::replace(batch, fresh);
        g.batches.push_back(full);
        g.len += n;
        self.len_hint.store(g.len, Ordering::Release);
        g.stats.pushed += n as u64;
        g.stats.batches_pushed += 1;
        let len = g.len as u64;
        if len > g.stats.high_water {
            g.stats.high_water = len;
        }
        // All consumers: with several, one popping a small `max` must not strand the rest.
        self.not_empty.notify_all();
    }

    /// Appends up to `max` messages, oldest first, to `out`; never blocks. Returns how many
    /// were moved (0 when the queue is empty, also when it is closed: see
    /// [`is_closed`](Self::is_closed)). Wakes producers waiting for space.
    pub fn pop_batch(&self, out: &mut Vec<T>, max: usize) -> usize {
        // An empty queue is skipped without taking the lock (a racing push is seen on the
        // next call).
        if self.len_hint.load(Ordering::Acquire) == 0 {
            return 0;
        }
        let mut g = self.inner.lock();
        self.take(&mut g, out, max)
    }

    /// Appends up to `max` messages, oldest first, to `out`, waiting up to `timeout` for the
    /// first one. Returns `Ok(n)` with `n > 0` when messages were moved, `Ok(0)` when the
    /// timeout passed (or `max` is 0), and `Err(QueueClosed)` once the queue is closed
    /// *and* empty: messages queued before [`close`](Self::close) are still delivered.
    pub fn pop_batch_wait(
        &self,
        out: &mut Vec<T>,
        max: usize,
        timeout: Duration,
    ) -> Result<usize, QueueClosed> {
        let deadline = deadline_after(timeout);
        // A producer usually comes back within microseconds: spin briefly before sleeping
        // (a sleep and a wake-up cost more than a whole batch).
        for _ in 0..SPIN_BEFORE_WAIT {
            if self.len_hint.load(Ordering::Acquire) > 0 {
                break;
            }
            std::hint::spin_loop();
        }
        let mut g = self.inner.lock();
        loop {
            if g.len > 0 {
                return Ok(self.take(&mut g, out, max));
            }
            if g.closed {
                return Err(QueueClosed);
            }
            if max == 0 {
                return Ok(0);
            }
            match deadline {
                Some(d) => {
                    if Instant::now() >= d {
                        return Ok(0);
                    }
                    self.not_empty.wait_until(&mut g, d);
                }
                None => self.not_empty.wait(&mut g),
            }
        }
    }

    /// Moves up to `max` messages into `out` and wakes producers if any moved.
    fn take(&self, g: &mut MutexGuard<'_, Inner<T>>, out: &mut Vec<T>, max: usize) -> usize {
        let mut n = 0;
        while n < max {
            let room = max - n;
            let Some(front) = g.batches.front_mut() else { break };
            if front.len() > room {
                out.extend(front.drain(..room));
                n += room;
                break;
            }
            let Some(mut b) = g.batches.pop_front() else { break };
            n += b.len();
            if out.is_empty() {
                std::mem::swap(out, &mut b);
            } else {
                out.append(&mut b);
            }
            if b.capacity() > 0 && g.spare.len() < SPARE_VECS {
                g.spare.push(b);
            }
        }
        if n == 0 {
            return 0;
        }
        g.len -= n;
        self.len_hint.store(g.len, Ordering::Release);
        g.stats.popped += n as u64;
        // All producers: they wait for different amounts of space.
        self.not_full.notify_all();
        n
    }

    /// Deletes every queued message for which `keep` returns false (order of the rest
    /// unchanged) and returns how many were deleted; wakes producers if space freed.
    ///
    /// `keep` runs with the queue locked: it must not call back into this queue.
    pub fn retain(&self, keep: impl FnMut(&T) -> bool) -> usize {
        let mut g = self.inner.lock();
        let before = g.len;
        let mut keep = keep;
        for b in g.batches.iter_mut() {
            b.retain(&mut keep);
        }
        g.batches.retain(|b| !b.is_empty());
        g.len = g.batches.iter().map(Vec::len).sum();
        self.len_hint.store(g.len, Ordering::Release);
        let deleted = before - g.len;
        if deleted > 0 {
            g.stats.deleted += deleted as u64;
            self.not_full.notify_all();
        }
        deleted
    }

    /// Calls `f` on every queued message, oldest first, without removing any.
    ///
    /// `f` runs with the queue locked: it must not call back into this queue.
    pub fn inspect(&self, f: impl FnMut(&T)) {
        let g = self.inner.lock();
        g.batches.iter().flatten().for_each(f);
    }

    /// Closes the queue and wakes every waiting producer and consumer. Later pushes fail
    /// with [`QueueClosed`] / [`PushError::Closed`]; pops still drain what is queued and
    /// then report closed. Closing twice is harmless.
    pub fn close(&self) {
        let mut g = self.inner.lock();
        g.closed = true;
        self.not_empty.notify_all();
        self.not_full.notify_all();
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.lock().closed
    }

    /// Messages currently queued.
    pub fn len(&self) -> usize {
        self.inner.lock().len
    }

    /// Whether messages are probably queued, read without the lock (may lag a concurrent
    /// push or pop by a moment; for polling loops).
    pub fn has_messages(&self) -> bool {
        self.len_hint.load(Ordering::Acquire) > 0
    }

    /// Whether no message is queued.
    pub fn is_empty(&self) -> bool {
        self.inner.lock().len == 0
    }

    /// The bound, in messages (at least 1).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> QueueStats {
        self.inner.lock().stats.clone()
    }
}

impl<T> std::fmt::Debug for MessageQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = self.inner.lock();
        f.debug_struct("MessageQueue")
            .field("len", &g.len)
            .field("capacity", &self.capacity)
            .field("closed", &g.closed)
            .finish()
    }
}

/// A producer-side buffer in front of one [`MessageQueue`]: collects messages and hands
/// them over a batch at a time, so the queue's lock is taken once per batch.
///
/// **Callers must call [`flush`](Self::flush) at the end of every input burst** (before
/// waiting for more input, and before finishing): a partial batch is otherwise held back
/// indefinitely. Dropping a `Batcher` does *not* flush (a flush may block on a full queue,
/// which a destructor must not do); messages still pending then are discarded, so recover
/// them with [`take_pending`](Self::take_pending) if needed.
pub struct Batcher<T> {
    queue: Arc<MessageQueue<T>>,
    buf: Vec<T>,
    batch_size: usize,
    closed: bool,
}

impl<T> Batcher<T> {
    /// A batcher of [`DEFAULT_BATCH_SIZE`] messages in front of `queue`.
    pub fn new(queue: Arc<MessageQueue<T>>) -> Self {
        Self::with_batch_size(queue, DEFAULT_BATCH_SIZE)
    }

    /// A batcher of `batch_size` messages (0 is treated as 1) in front of `queue`.
    pub fn with_batch_size(queue: Arc<MessageQueue<T>>, batch_size: usize) -> Self {
        let batch_size = batch_size.max(1);
        Batcher { queue, buf: Vec::with_capacity(batch_size), batch_size, closed: false }
    }

    /// Buffers `item`, and hands the batch over (blocking on a full queue) once it holds
    /// `batch_size` messages.
    ///
    /// Errors: [`QueueClosed`] if the queue is closed. The batch that failed stays pending;
    /// once a close has been seen, later pushes fail at once and discard their item.
    pub fn push(&mut self, item: T) -> Result<(), QueueClosed> {
        if self.closed {
            return Err(QueueClosed);
        }
        self.buf.push(item);
        if self.buf.len() >= self.batch_size {
            self.flush()
        } else {
            Ok(())
        }
    }

    /// Hands all pending messages over (blocking on a full queue). Nothing to do when none
    /// are pending.
    ///
    /// Errors: [`QueueClosed`] if the queue is closed; the messages then stay pending.
    pub fn flush(&mut self) -> Result<(), QueueClosed> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let r = self.queue.push_batch(&mut self.buf);
        if r.is_err() {
            self.closed = true;
        }
        r
    }

    /// Messages buffered and not yet handed over.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Removes and returns the messages not yet handed over.
    pub fn take_pending(&mut self) -> Vec<T> {
        std::mem::take(&mut self.buf)
    }

    /// The configured batch size.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// The queue this batcher feeds.
    pub fn queue(&self) -> &Arc<MessageQueue<T>> {
        &self.queue
    }
}

impl<T> std::fmt::Debug for Batcher<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("pending", &self.buf.len())
            .field("batch_size", &self.batch_size)
            .field("queue", &self.queue)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::mpsc;
    use std::thread;

    /// Generous bound for "this must happen": only reached when the code under test is
    /// broken (then the test fails instead of hanging).
    const SOON: Duration = Duration::from_secs(10);

    fn drain<T>(q: &MessageQueue<T>) -> Vec<T> {
        let mut out = Vec::new();
        q.pop_batch(&mut out, usize::MAX);
        out
    }

    /// Waits until `n` push calls have registered as blocked. `blocked_pushes` is bumped
    /// under the lock right before the producer parks, so once it is seen the producer is
    /// parked (or re-checking under the lock): no sleep involved.
    fn wait_blocked<T>(q: &MessageQueue<T>, n: u64) {
        let start = Instant::now();
        while q.stats().blocked_pushes < n {
            assert!(start.elapsed() < SOON, "producer never blocked");
            thread::yield_now();
        }
    }

    #[test]
    fn fifo_and_batch_drained() {
        let q = MessageQueue::new(8);
        let mut b = vec![1, 2, 3];
        q.push_batch(&mut b).unwrap();
        assert!(b.is_empty());
        q.push_batch(&mut vec![4, 5]).unwrap();
        let mut out = vec![0];
        assert_eq!(q.pop_batch(&mut out, 2), 2);
        assert_eq!(out, vec![0, 1, 2]);
        assert_eq!(q.pop_batch(&mut out, 0), 0);
        assert_eq!(q.pop_batch(&mut out, 10), 3);
        assert_eq!(out, vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(q.pop_batch(&mut out, 10), 0);
        let s = q.stats();
        assert_eq!((s.pushed, s.popped, s.deleted, s.batches_pushed, s.high_water), (5, 5, 0, 2, 5));
        assert_eq!(s.blocked_pushes, 0);
    }

    #[test]
    fn zero_capacity_is_one_and_empty_batch_is_noop() {
        let q = MessageQueue::<u8>::new(0);
        assert_eq!(q.capacity(), 1);
        q.push_batch(&mut Vec::new()).unwrap();
        assert_eq!(q.try_push_batch(&mut Vec::new()), Ok(()));
        assert_eq!(q.stats().batches_pushed, 0);
        assert!(q.is_empty());
    }

    #[test]
    fn back_pressure_blocks_until_pop() {
        let q = Arc::new(MessageQueue::new(4));
        q.push_batch(&mut vec![0, 1, 2, 3]).unwrap();
        let (done_tx, done_rx) = mpsc::channel();
        let qp = Arc::clone(&q);
        let h = thread::spawn(move || {
            let r = qp.push_batch(&mut vec![4, 5]);
            done_tx.send(r).ok();
        });
        wait_blocked(&q, 1);
        // Parked on a full queue: it cannot have finished, nothing was added.
        assert!(done_rx.try_recv().is_err());
        assert_eq!(q.len(), 4);
        // One slot is not enough for a batch of two: the whole batch waits.
        let mut out = Vec::new();
        assert_eq!(q.pop_batch(&mut out, 1), 1);
        assert!(q.len() <= 3);
        // Second slot freed: now it must go through.
        assert_eq!(q.pop_batch(&mut out, 1), 1);
        assert_eq!(done_rx.recv_timeout(SOON), Ok(Ok(())));
        h.join().unwrap();
        assert_eq!(drain(&q), vec![2, 3, 4, 5]);
        assert_eq!(q.stats().blocked_pushes, 1);
        assert_eq!(q.stats().high_water, 4);
    }

    #[test]
    fn oversize_batch_admitted_when_empty() {
        let q = MessageQueue::new(2);
        q.push_batch(&mut vec![1, 2, 3, 4, 5]).unwrap();
        assert_eq!(q.len(), 5);
        assert_eq!(q.stats().high_water, 5);
        assert_eq!(q.try_push_batch(&mut vec![6]), Err(PushError::Full));
        let mut out = Vec::new();
        q.pop_batch(&mut out, 3);
        assert_eq!(q.try_push_batch(&mut vec![6]), Err(PushError::Full));
        q.pop_batch(&mut out, 1);
        assert_eq!(q.try_push_batch(&mut vec![6]), Ok(()));
        assert_eq!(drain(&q), vec![5, 6]);
    }

    #[test]
    fn oversize_batch_waits_for_empty_queue() {
        let q = Arc::new(MessageQueue::new(2));
        q.push_batch(&mut vec![0]).unwrap();
        let (done_tx, done_rx) = mpsc::channel();
        let qp = Arc::clone(&q);
        let h = thread::spawn(move || {
            done_tx.send(qp.push_batch(&mut vec![1, 2, 3, 4, 5])).ok();
        });
        wait_blocked(&q, 1);
        assert!(done_rx.try_recv().is_err());
        let mut out = Vec::new();
        assert_eq!(q.pop_batch(&mut out, 1), 1);
        assert_eq!(done_rx.recv_timeout(SOON), Ok(Ok(())));
        h.join().unwrap();
        assert_eq!(drain(&q), vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn try_push_full_leaves_batch_intact() {
        let q = MessageQueue::new(3);
        q.push_batch(&mut vec![1, 2]).unwrap();
        let mut b = vec![7, 8];
        let cap = b.capacity();
        assert_eq!(q.try_push_batch(&mut b), Err(PushError::Full));
        assert_eq!(b, vec![7, 8]);
        assert_eq!(b.capacity(), cap);
        assert_eq!(q.len(), 2);
        assert_eq!(q.stats().blocked_pushes, 0, "try_push never waits");
        b.truncate(1);
        assert_eq!(q.try_push_batch(&mut b), Ok(()));
        assert!(b.is_empty());
        assert_eq!(drain(&q), vec![1, 2, 7]);
    }

    #[test]
    fn push_timeout_gives_up_and_keeps_batch() {
        let q = MessageQueue::new(1);
        q.push_batch(&mut vec![1]).unwrap();
        let mut b = vec![2];
        let t0 = Instant::now();
        assert_eq!(q.push_batch_timeout(&mut b, Duration::from_millis(20)), Err(PushError::Full));
        assert!(t0.elapsed() >= Duration::from_millis(20));
        assert_eq!(b, vec![2]);
        assert_eq!(q.stats().blocked_pushes, 1);
        drain(&q);
        assert_eq!(q.push_batch_timeout(&mut b, Duration::from_millis(20)), Ok(()));
        assert_eq!(drain(&q), vec![2]);
    }

    #[test]
    fn retain_deletes_exactly_matching() {
        let q = MessageQueue::new(16);
        q.push_batch(&mut (0..10).collect()).unwrap();
        assert_eq!(q.retain(|x| x % 3 != 0), 4);
        assert_eq!(q.retain(|_| true), 0);
        let mut seen = Vec::new();
        q.inspect(|x| seen.push(*x));
        assert_eq!(seen, vec![1, 2, 4, 5, 7, 8]);
        let s = q.stats();
        assert_eq!((s.pushed, s.deleted, s.popped), (10, 4, 0));
        assert_eq!(drain(&q), seen);
    }

    #[test]
    fn retain_wakes_blocked_producer() {
        let q = Arc::new(MessageQueue::new(4));
        q.push_batch(&mut vec![0, 1, 2, 3]).unwrap();
        let (done_tx, done_rx) = mpsc::channel();
        let qp = Arc::clone(&q);
        let h = thread::spawn(move || {
            done_tx.send(qp.push_batch(&mut vec![10, 11])).ok();
        });
        wait_blocked(&q, 1);
        assert!(done_rx.try_recv().is_err());
        assert_eq!(q.retain(|x| *x % 2 == 0), 2);
        assert_eq!(done_rx.recv_timeout(SOON), Ok(Ok(())));
        h.join().unwrap();
        assert_eq!(drain(&q), vec![0, 2, 10, 11]);
    }

    #[test]
    fn close_rejects_pushes_and_drains_rest() {
        let q = MessageQueue::new(8);
        q.push_batch(&mut vec![1, 2, 3]).unwrap();
        q.close();
        q.close();
        assert!(q.is_closed());
        let mut b = vec![4];
        assert_eq!(q.push_batch(&mut b), Err(QueueClosed));
        assert_eq!(q.try_push_batch(&mut b), Err(PushError::Closed));
        assert_eq!(q.push_batch_timeout(&mut b, Duration::from_millis(1)), Err(PushError::Closed));
        assert_eq!(b, vec![4]);
        let mut out = Vec::new();
        assert_eq!(q.pop_batch_wait(&mut out, 2, SOON), Ok(2));
        assert_eq!(q.pop_batch_wait(&mut out, 2, SOON), Ok(1));
        assert_eq!(out, vec![1, 2, 3]);
        assert_eq!(q.pop_batch_wait(&mut out, 2, SOON), Err(QueueClosed));
        assert_eq!(q.pop_batch(&mut out, 2), 0);
    }

    #[test]
    fn close_wakes_blocked_consumer() {
        let q = Arc::new(MessageQueue::<u32>::new(4));
        let (tx, rx) = mpsc::channel();
        let qc = Arc::clone(&q);
        let h = thread::spawn(move || {
            let mut out = Vec::new();
            tx.send(qc.pop_batch_wait(&mut out, 4, Duration::from_secs(3600))).ok();
        });
        q.close();
        assert_eq!(rx.recv_timeout(SOON), Ok(Err(QueueClosed)));
        h.join().unwrap();
    }

    #[test]
    fn close_wakes_blocked_producer_and_keeps_its_batch() {
        let q = Arc::new(MessageQueue::new(1));
        q.push_batch(&mut vec![0]).unwrap();
        let (tx, rx) = mpsc::channel();
        let qp = Arc::clone(&q);
        let h = thread::spawn(move || {
            let mut b = vec![1, 2];
            let r = qp.push_batch(&mut b);
            tx.send((r, b)).ok();
        });
        wait_blocked(&q, 1);
        q.close();
        assert_eq!(rx.recv_timeout(SOON), Ok((Err(QueueClosed), vec![1, 2])));
        h.join().unwrap();
        assert_eq!(drain(&q), vec![0]);
    }

    #[test]
    fn pop_wait_times_out_empty_and_wakes_on_push() {
        let q = Arc::new(MessageQueue::new(4));
        let mut out = Vec::new();
        let t0 = Instant::now();
        assert_eq!(q.pop_batch_wait(&mut out, 4, Duration::from_millis(20)), Ok(0));
        assert!(t0.elapsed() >= Duration::from_millis(20));
        assert_eq!(q.pop_batch_wait(&mut out, 0, Duration::from_secs(3600)), Ok(0));

        let (tx, rx) = mpsc::channel();
        let qc = Arc::clone(&q);
        let h = thread::spawn(move || {
            let mut out = Vec::new();
            let r = qc.pop_batch_wait(&mut out, 4, Duration::from_secs(3600));
            tx.send((r, out)).ok();
        });
        q.push_batch(&mut vec![9]).unwrap();
        assert_eq!(rx.recv_timeout(SOON), Ok((Ok(1), vec![9])));
        h.join().unwrap();
    }

    #[test]
    fn batcher_flushes_when_full_and_on_demand() {
        let q = Arc::new(MessageQueue::new(16));
        assert_eq!(Batcher::new(Arc::clone(&q)).batch_size(), DEFAULT_BATCH_SIZE);
        let mut b = Batcher::with_batch_size(Arc::clone(&q), 3);
        b.push(1).unwrap();
        b.push(2).unwrap();
        assert_eq!((q.len(), b.pending()), (0, 2));
        b.push(3).unwrap();
        assert_eq!((q.len(), b.pending()), (3, 0));
        b.push(4).unwrap();
        assert_eq!(q.len(), 3);
        b.flush().unwrap();
        b.flush().unwrap();
        assert_eq!((q.len(), b.pending()), (4, 0));
        let s = q.stats();
        assert_eq!((s.pushed, s.batches_pushed), (4, 2));
        assert_eq!(drain(&q), vec![1, 2, 3, 4]);
    }

    #[test]
    fn batcher_on_closed_queue_keeps_pending() {
        let q = Arc::new(MessageQueue::new(16));
        let mut b = Batcher::with_batch_size(Arc::clone(&q), 2);
        b.push(1).unwrap();
        q.close();
        assert_eq!(b.push(2), Err(QueueClosed));
        assert_eq!(b.pending(), 2);
        assert_eq!(b.push(3), Err(QueueClosed));
        assert_eq!(b.flush(), Err(QueueClosed));
        assert_eq!(b.take_pending(), vec![1, 2]);
        assert_eq!(b.pending(), 0);
        assert!(q.is_empty());
    }

    #[test]
    fn stats_serialize() {
        let q = MessageQueue::new(4);
        q.push_batch(&mut vec![1u8]).unwrap();
        let v = serde_json::to_value(q.stats()).unwrap();
        assert_eq!(v["pushed"], 1);
        assert_eq!(v["high_water"], 1);
        for k in ["popped", "deleted", "batches_pushed", "blocked_pushes"] {
            assert!(v.get(k).is_some(), "{k} missing");
        }
    }

    /// Single-threaded model check: the queue behaves like a VecDeque under the
    /// admission rule, for any sequence of operations.
    #[derive(Clone, Debug)]
    enum Op {
        TryPush(usize),
        Pop(usize),
        RetainNotMultipleOf(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0usize..10).prop_map(Op::TryPush),
            (0usize..10).prop_map(Op::Pop),
            (2u32..5).prop_map(Op::RetainNotMultipleOf),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn matches_model(cap in 1usize..8, ops in proptest::collection::vec(op(), 0..60)) {
            let q = MessageQueue::new(cap);
            let mut model: VecDeque<u32> = VecDeque::new();
            let mut next = 0u32;
            let (mut deleted, mut popped) = (0u64, 0u64);
            for op in ops {
                match op {
                    Op::TryPush(n) => {
                        let mut b: Vec<u32> = (next..next + n as u32).collect();
                        let fits = n == 0 || model.is_empty() || model.len() + n <= cap;
                        let r = q.try_push_batch(&mut b);
                        if fits {
                            prop_assert_eq!(r, Ok(()));
                            prop_assert!(b.is_empty());
                            model.extend(next..next + n as u32);
                            next += n as u32;
                        } else {
                            prop_assert_eq!(r, Err(PushError::Full));
                            prop_assert_eq!(b.len(), n);
                        }
                    }
                    Op::Pop(max) => {
                        let mut out = Vec::new();
                        let got = q.pop_batch(&mut out, max);
                        let want: Vec<u32> = model.drain(..max.min(model.len())).collect();
                        prop_assert_eq!(got, want.len());
                        prop_assert_eq!(out, want);
                        popped += got as u64;
                    }
                    Op::RetainNotMultipleOf(m) => {
                        let before = model.len();
                        model.retain(|x| x % m != 0);
                        let d = q.retain(|x| x % m != 0);
                        prop_assert_eq!(d, before - model.len());
                        deleted += d as u64;
                    }
                }
                prop_assert_eq!(q.len(), model.len());
                let mut seen = Vec::new();
                q.inspect(|x| seen.push(*x));
                prop_assert_eq!(&seen, &model.iter().copied().collect::<Vec<_>>());
            }
            let s = q.stats();
            prop_assert_eq!(s.pushed, u64::from(next));
            prop_assert_eq!((s.popped, s.deleted), (popped, deleted));
            prop_assert_eq!(s.pushed, s.popped + s.deleted + q.len() as u64);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Concurrent producers and one consumer: every item exactly once, each producer's
        /// items in its order, and the consumer never sees more than the capacity queued
        /// unless an oversize batch (and then at most that batch) is in the queue.
        #[test]
        fn concurrent_exactly_once_in_order(
            cap in 1usize..12,
            producers in proptest::collection::vec(proptest::collection::vec(0usize..16, 1..40), 1..=4),
            maxes in proptest::collection::vec(1usize..20, 1..8),
        ) {
            let q = Arc::new(MessageQueue::<(usize, u32)>::new(cap));
            let max_batch = producers.iter().flatten().copied().max().unwrap_or(0);
            let bound = cap.max(max_batch);
            let (consumer_result, counts) = thread::scope(|s| {
                let consumer = s.spawn(|| {
                    let mut got = Vec::new();
                    let mut max_seen = 0usize;
                    let mut i = 0usize;
                    loop {
                        max_seen = max_seen.max(q.len());
                        let max = maxes[i % maxes.len()];
                        i += 1;
                        match q.pop_batch_wait(&mut got, max, Duration::from_millis(50)) {
                            Ok(_) => {}
                            Err(QueueClosed) => break,
                        }
                    }
                    (got, max_seen)
                });
                let handles: Vec<_> = producers
                    .iter()
                    .enumerate()
                    .map(|(p, sizes)| {
                        let q = &q;
                        s.spawn(move || {
                            let mut seq = 0u32;
                            let mut b = Vec::new();
                            for &n in sizes {
                                b.extend((seq..seq + n as u32).map(|k| (p, k)));
                                seq += n as u32;
                                q.push_batch(&mut b).map_err(|_| "closed early")?;
                            }
                            Ok::<u32, &str>(seq)
                        })
                    })
                    .collect();
                let counts: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
                q.close();
                (consumer.join(), counts)
            });
            let (got, max_seen) = match consumer_result {
                Ok(r) => r,
                Err(_) => return Err(TestCaseError::fail("consumer panicked")),
            };
            let mut next = vec![0u32; producers.len()];
            for (p, k) in &got {
                prop_assert_eq!(*k, next[*p], "producer {} out of order or duplicated", p);
                next[*p] += 1;
            }
            for (p, c) in counts.into_iter().enumerate() {
                match c {
                    Ok(Ok(n)) => prop_assert_eq!(next[p], n, "producer {} lost items", p),
                    _ => return Err(TestCaseError::fail(format!("producer {p} failed"))),
                }
            }
            prop_assert!(max_seen <= bound, "len {} > bound {}", max_seen, bound);
            let st = q.stats();
            prop_assert!(st.high_water as usize <= bound);
            prop_assert_eq!(st.pushed, got.len() as u64);
            prop_assert_eq!(st.popped, got.len() as u64);
            let nonempty = producers.iter().flatten().filter(|&&n| n > 0).count() as u64;
            prop_assert_eq!(st.batches_pushed, nonempty);
        }
    }
}
