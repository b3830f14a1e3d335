//! The Redis backend: [`RedisStore`] implements [`StateStore`] on one Redis 7 server
//! (`redis://HOST:PORT`) or a Redis Cluster (`redis+cluster://H:P,H:P,...`) with the
//! embedded store's semantics (the conformance suite runs on all three).
//!
//! What this module owns:
//! - **Server-side operations.** Every Table 1 update is one call of a versioned Redis
//!   Functions library (`streamnf_v1`, `streamnf.lua`, loaded with `FUNCTION LOAD REPLACE`
//!   at start-up and again if a restarted server lost it). In one atomic step the function
//!   checks ownership (per-flow keys: `NotOwner`, nothing changes), looks the tag up in the
//!   key's clock log (a repeat returns the logged result: emulation), applies the op with
//!   exact 64-bit integer arithmetic, logs the result and, when the value changed, returns
//!   the new value (for local subscribers) and publishes it (for other processes).
//! - **Custom ops** ([`CustomOpFn`] is a Rust closure and cannot run in Lua) run as an
//!   optimistic transaction: `snf_cread` returns the logged result (a repeat) or the current
//!   value; the closure runs here; `snf_ccommit` sets the new value and logs the result only
//!   if the value is still the one that was read (else it reads again). Comparing whole
//!   values instead of versions is enough: the closure is a function of (value, argument),
//!   so an A→B→A change in between gives the same outcome as running after it.
//! - **Key layout.** `snf:NS:{STABLE}` holds the value and `snf:NS:{STABLE}:log` its clock
//!   log (hash `clock:seq` → encoded result), where `STABLE` is
//!   [`StateKey::to_stable_string`] (`dag/vertex/owner/object/hex(sub)`, binary safe). The
//!   braces are the cluster hash tag: a value and its log always share one slot. `NS` is the
//!   store's namespace: two chains (two namespaces) on one Redis never see each other.
//!   [`StateStore::snapshot`] SCANs `snf:NS:{DAG/*}` on every master and renders keys from
//!   the names.
//! - **Non-blocking updates** are buffered here and sent as one pipeline of function calls
//!   when the buffer holds [`RedisOptions::batch`] updates, before any read or blocking
//!   update of a key with buffered updates (so they are applied before any later read of
//!   that key), and on [`StateStore::flush`]. On a dropped connection the whole batch is
//!   re-sent after reconnecting: every update is clock-tagged, so the ones that had been
//!   applied are emulated (no lost and no doubled update). If the server does not come back
//!   within [`RedisOptions::reconnect_timeout`], the call fails with one error naming the
//!   URL and every later call fails with the same error (a clean stop, no hang). Errors of
//!   buffered updates found when they are applied (type mismatches) are counted
//!   ([`RedisStore::dropped_errors`]), as the trait allows.
//! - **Clock-log GC.** The store remembers which keys it logged to since the last GC (like
//!   the embedded store) and [`StateStore::gc_below`] sends one pipelined `snf_gc` per such
//!   key: O(work), no scan. Logs written by another process are collected by that process.
//! - **Callbacks.** Subscribers of this store get their notifications synchronously, before
//!   the update's call returns (from the function's reply; pipelined updates when their
//!   batch is applied). With [`RedisOptions::publish`], every change is also published on
//!   the namespace's pub/sub channel and, once this store has a subscriber, a background
//!   thread forwards changes made by *other* store instances (other processes) to it.
//!   Timers live in a sorted set per namespace; ids come from `INCR` (unique, increasing);
//!   `snf_tdue` pops due timers atomically. Timer calls carry a token whose reply is cached
//!   on the server for two minutes, so re-sending one after a dropped connection neither
//!   loses nor repeats timers.
//!
//! What it never does: keep NF state in the client beyond the not-yet-sent batch, use TLS
//! (`rediss://` is refused with one clear error: no TLS stack without a C build here), or
//! touch keys outside its namespace.

pub mod bench;
mod codec;
mod conn;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::redis::{Cmd, Value as RValue};
use parking_lot::{Condvar, Mutex};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::embedded::check_owner;
use crate::ops::{CustomOps, Subscriptions};
use crate::types::{
    Clock, CustomOpFn, CustomOpId, KeyFilter, Notification, Op, StateKey, StoreError, TaskId, Timer, Update,
    UpdateTag, Value,
};
use crate::StateStore;
use codec::{Names, Reply};
use conn::{Redis, Timeouts};

/// Options of a [`RedisStore`].
#[derive(Clone, Debug)]
pub struct RedisOptions {
    /// How long a lost server may stay away before the store gives up (one error, then every
    /// call fails). Default 10 s.
    pub reconnect_timeout: Duration,
    /// Connect/read/write timeout of one call. Default 5 s.
    pub io_timeout: Duration,
    /// Buffered non-blocking updates that trigger sending a pipeline. Default 512.
    pub batch: usize,
    /// Publish every change on the namespace's pub/sub channel, so subscribers in other
    /// processes see it. Default true.
    pub publish: bool,
    /// Delete every key of the namespace when the store is dropped (one-off runs). Default
    /// false.
    pub drop_namespace_on_drop: bool,
    /// Make non-blocking updates wait for the server's answer like blocking ones (the
    /// paper's "externalized, waiting for the ACK" model, for benchmarks). Default false.
    pub wait_for_ack: bool,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            reconnect_timeout: Duration::from_secs(10),
            io_timeout: Duration::from_secs(5),
            batch: 512,
            publish: true,
            drop_namespace_on_drop: false,
            wait_for_ack: false,
        }
    }
}

/// Buffered non-blocking updates, and how many buffered or in-flight updates each key has.
#[derive(Default)]
struct Pending {
    ups: Vec<Update>,
    keys: FxHashMap<StateKey, u32>,
}

struct Inner {
    redis: Redis,
    names: Names,
    channel: String,
    origin: String,
    opts: RedisOptions,
    customs: CustomOps,
    subs: Subscriptions,
    pending: Mutex<Pending>,
    flush_lock: Mutex<()>,
    logged: Mutex<FxHashSet<StateKey>>,
    tokens: AtomicU64,
    dropped_errors: AtomicU64,
    stop: AtomicBool,
    listener: Mutex<Option<JoinHandle<()>>>,
    /// Set (and `flush_wake` notified) when a full buffer should be sent by the flusher.
    flush_wanted: Mutex<bool>,
    flush_wake: Condvar,
    flusher: Mutex<Option<JoinHandle<()>>>,
}

/// The Redis / Redis Cluster backend (see the [module documentation](self)).
pub struct RedisStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.inner.redis.shown)
            .field("namespace", &self.inner.names.ns)
            .finish_non_exhaustive()
    }
}

/// Checks a namespace: 1 to 64 characters from `A-Z a-z 0-9 _ . -`.
pub fn valid_namespace(ns: &str) -> bool {
    (1..=64).contains(&ns.len()) && ns.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// A full buffer of non-blocking updates is sent by a background thread while the caller
/// goes on buffering; once this many buffers' worth pile up, the caller sends them itself
/// and waits (back-pressure, bounded memory).
const FLUSH_BACKLOG: usize = 4;

fn fcall(name: &str, keys: &[&str]) -> Cmd {
    let mut c = ::redis::cmd("FCALL");
    c.arg(name).arg(keys.len());
    for k in keys {
        c.arg(*k);
    }
    c
}

fn now_nanos() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

impl RedisStore {
    /// Opens a store on `url` (`redis://[USER[:PASS]@]HOST:PORT[/DB]` or
    /// `redis+cluster://[USER[:PASS]@]H:P,H:P,...`) under `namespace` (see
    /// [`valid_namespace`]). Connects and loads the function library; errors name the URL.
    pub fn open(url: &str, namespace: &str, opts: RedisOptions) -> Result<RedisStore, StoreError> {
        if !valid_namespace(namespace) {
            return Err(StoreError::Backend(format!(
                "redis namespace `{namespace}`: use 1 to 64 characters from A-Z a-z 0-9 _ . -"
            )));
        }
        let timeouts = Timeouts { io: opts.io_timeout, reconnect: opts.reconnect_timeout };
        let redis = Redis::open(url, timeouts)?;
        let names = Names::new(namespace);
        let channel = names.channel();
        let origin = format!("{:016x}", (now_nanos() as u64) ^ (u64::from(std::process::id()) << 40));
        Ok(RedisStore {
            inner: Arc::new(Inner {
                redis,
                names,
                channel,
                origin,
                opts,
                customs: CustomOps::default(),
                subs: Subscriptions::default(),
                pending: Mutex::new(Pending::default()),
                flush_lock: Mutex::new(()),
                logged: Mutex::new(FxHashSet::default()),
                tokens: AtomicU64::new(0),
                dropped_errors: AtomicU64::new(0),
                stop: AtomicBool::new(false),
                listener: Mutex::new(None),
                flush_wanted: Mutex::new(false),
                flush_wake: Condvar::new(),
                flusher: Mutex::new(None),
            }),
        })
    }

    /// Starts the background flusher (once): a thread that sends full buffers of
    /// non-blocking updates while the caller goes on (see [`FLUSH_BACKLOG`]).
    fn start_flusher(&self) {
        let mut slot = self.inner.flusher.lock();
        if slot.is_some() {
            return;
        }
        let inner = Arc::clone(&self.inner);
        *slot = std::thread::Builder::new()
            .name("streamnf-redis-flush".into())
            .spawn(move || loop {
                {
                    let mut wanted = inner.flush_wanted.lock();
                    while !*wanted && !inner.stop.load(Ordering::Acquire) {
                        inner.flush_wake.wait(&mut wanted);
                    }
                    if inner.stop.load(Ordering::Acquire) {
                        return;
                    }
                    *wanted = false;
                }
                // Errors leave the store dead (every later call reports them) or are
                // counted per update; there is no caller to return them to here.
                let _ = inner.flush();
            })
            .ok();
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.inner.names.ns
    }

    /// True when connected to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.inner.redis.is_cluster()
    }

    /// Buffered non-blocking updates that failed when applied (type mismatches); their
    /// errors cannot be returned to the caller.
    pub fn dropped_errors(&self) -> u64 {
        self.inner.dropped_errors.load(Ordering::Relaxed)
    }

    /// Calls that failed on a dropped connection (or a cluster reconfiguration) and were
    /// sent again after reconnecting.
    pub fn retried_calls(&self) -> u64 {
        self.inner.redis.retried.load(Ordering::Relaxed)
    }

    /// Notifications dropped because a bounded subscriber channel was full.
    pub fn dropped_notifications(&self) -> u64 {
        self.inner.subs.dropped()
    }

    /// Deletes every key of this store's namespace (state, clock logs, timers).
    pub fn clear_namespace(&self) -> Result<(), StoreError> {
        self.inner.flush()?;
        let keys = self.inner.redis.scan(&self.inner.names.all_pattern())?;
        for chunk in keys.chunks(512) {
            let mut p = self.inner.redis.pipe();
            for k in chunk {
                let mut c = ::redis::cmd("UNLINK");
                c.arg(k);
                p.add(c);
            }
            self.inner.redis.run(|c| c.pipeline(&p))?;
        }
        self.inner.logged.lock().clear();
        Ok(())
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::Release);
        {
            let _wanted = self.inner.flush_wanted.lock();
            self.inner.flush_wake.notify_all();
        }
        if let Some(h) = self.inner.flusher.lock().take() {
            let _ = h.join();
        }
        if let Some(h) = self.inner.listener.lock().take() {
            let _ = h.join();
        }
        let _ = self.inner.flush();
        if self.inner.opts.drop_namespace_on_drop && self.inner.redis.dead().is_ok() {
            let _ = self.clear_namespace();
        }
    }
}

impl Inner {
    /// The `snf_op` call of a (non-`Get`, non-custom) update.
    fn op_cmd(&self, u: &Update, want: bool) -> Cmd {
        let v = self.names.value(&u.key);
        let l = Names::log_of(&v);
        let mut c = fcall("snf_op", &[&v, &l]);
        let code = match &u.op {
            Op::Set(_) => "s",
            Op::Delete => "d",
            Op::Incr(_) => "+",
            Op::IncrIf { .. } => "?",
            Op::Push { .. } => ">",
            Op::Pop { .. } => "<",
            Op::CompareAndSet { .. } => "=",
            Op::LoggedGet => "r",
            Op::Get | Op::Custom { .. } => "g",
        };
        c.arg(code).arg(codec::tag_field(u.tag));
        match u.key.owner {
            Some(o) => c.arg(o.to_string()),
            None => c.arg(""),
        };
        c.arg(u.issuer.to_string()).arg(if want { "1" } else { "0" });
        self.publish_args(&mut c, u);
        match &u.op {
            Op::Set(v) => {
                c.arg(codec::encode(&Some(v.clone())));
            }
            Op::Incr(d) => {
                c.arg(d.to_string()).arg(d.wrapping_add(i64::MIN).to_string());
            }
            Op::IncrIf { delta, min, max } => {
                c.arg(delta.to_string()).arg(min.to_string()).arg(max.to_string());
            }
            Op::Push { back, item } => {
                c.arg(if *back { "1" } else { "0" }).arg(item.as_slice());
            }
            Op::Pop { back } => {
                c.arg(if *back { "1" } else { "0" });
            }
            Op::CompareAndSet { expected, new } => {
                c.arg(codec::encode(expected)).arg(codec::encode(new));
            }
            Op::Delete | Op::Get | Op::LoggedGet | Op::Custom { .. } => {}
        }
        c
    }

    /// Channel and header arguments (`""` = do not publish).
    fn publish_args(&self, c: &mut Cmd, u: &Update) {
        if self.opts.publish {
            c.arg(&self.channel).arg(format!(
                "{}|{}|{}|",
                self.origin,
                codec::tag_field(u.tag),
                u.key.to_stable_string()
            ));
        } else {
            c.arg("").arg("");
        }
    }

    /// Handles one parsed reply: notifications, the GC set, errors.
    fn settle(&self, u: &Update, reply: Reply) -> Result<Option<Value>, StoreError> {
        match reply {
            Reply::Applied { res, changed, new } => {
                self.logged.lock().insert(u.key);
                if changed && self.subs.active() {
                    if let Some(v) = new {
                        self.subs.notify(&u.key, &v, u.tag);
                    }
                }
                Ok(res)
            }
            Reply::Emulated(res) => Ok(res),
            Reply::Mismatch { expected, found } => {
                Err(StoreError::TypeMismatch { key: u.key.to_string(), expected, found })
            }
            Reply::NotOwner => Err(StoreError::NotOwner {
                key: u.key.to_string(),
                owner: u.key.owner.unwrap_or_default(),
                issuer: u.issuer,
            }),
            Reply::Current(_) | Reply::Retry => {
                Err(StoreError::Backend("redis: unexpected custom-op reply to an update".into()))
            }
        }
    }

    /// Sends buffered updates of `key`, if any, so a read or update of it comes after them.
    fn flush_key(&self, key: &StateKey) -> Result<(), StoreError> {
        if self.pending.lock().keys.contains_key(key) {
            self.flush()?;
        }
        Ok(())
    }

    /// Sends every buffered non-blocking update as one pipeline (re-sent as a whole after a
    /// dropped connection).
    fn flush(&self) -> Result<(), StoreError> {
        let _one_flusher = self.flush_lock.lock();
        let batch = std::mem::take(&mut self.pending.lock().ups);
        if batch.is_empty() {
            return self.redis.dead();
        }
        let want = self.subs.active();
        let mut pipe = self.redis.pipe();
        for u in &batch {
            pipe.add(self.op_cmd(u, want));
        }
        let sent = self.redis.run(|c| c.pipeline(&pipe));
        {
            let mut p = self.pending.lock();
            for u in &batch {
                if let Some(n) = p.keys.get_mut(&u.key) {
                    *n -= 1;
                    if *n == 0 {
                        p.keys.remove(&u.key);
                    }
                }
            }
        }
        let replies = sent.map_err(|e| match e {
            StoreError::Backend(m) => {
                StoreError::Backend(format!("{m}; {} buffered updates were not applied", batch.len()))
            }
            other => other,
        })?;
        for (u, r) in batch.iter().zip(replies.iter()) {
            let ok = Reply::parse(r).and_then(|reply| self.settle(u, reply));
            if ok.is_err() {
                self.dropped_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn execute_custom(&self, u: &Update, f: CustomOpFn, arg: &[u8]) -> Result<Option<Value>, StoreError> {
        let v = self.names.value(&u.key);
        let l = Names::log_of(&v);
        let field = codec::tag_field(u.tag);
        loop {
            let mut read = fcall("snf_cread", &[&v, &l]);
            read.arg(&field);
            let cur = match Reply::parse(&self.redis.run(|c| c.query(&read))?)? {
                Reply::Emulated(res) => return Ok(res),
                Reply::Current(cur) => cur,
                other => {
                    return Err(StoreError::Backend(format!("redis: unexpected custom-op reply {other:?}")))
                }
            };
            let mut new = cur.clone();
            let res = f(&mut new, arg)?;
            let mut commit = fcall("snf_ccommit", &[&v, &l]);
            commit.arg(&field);
            match u.key.owner {
                Some(o) => commit.arg(o.to_string()),
                None => commit.arg(""),
            };
            commit.arg(u.issuer.to_string()).arg(if self.subs.active() { "1" } else { "0" });
            self.publish_args(&mut commit, u);
            commit.arg(codec::encode(&cur)).arg(codec::encode(&new)).arg(codec::encode(&res));
            match Reply::parse(&self.redis.run(|c| c.query(&commit))?)? {
                Reply::Retry => continue,
                reply => return self.settle(u, reply),
            }
        }
    }

    fn execute(&self, u: &Update) -> Result<Option<Value>, StoreError> {
        if u.op.is_read() {
            return self.get(&u.key);
        }
        self.redis.dead()?;
        check_owner(u)?;
        let custom = self.customs.resolve(&u.op)?;
        self.flush_key(&u.key)?;
        if let (Some(f), Op::Custom { arg, .. }) = (custom, &u.op) {
            return self.execute_custom(u, f, arg);
        }
        let c = self.op_cmd(u, self.subs.active());
        let reply = self.redis.run(|k| k.query(&c))?;
        self.settle(u, Reply::parse(&reply)?)
    }

    fn get(&self, key: &StateKey) -> Result<Option<Value>, StoreError> {
        self.flush_key(key)?;
        let c = fcall("snf_get", &[&self.names.value(key)]);
        let reply = self.redis.run(|k| k.query(&c))?;
        codec::decode(codec::reply_bytes(&reply)?)
    }

    /// Reads (plain and logged) in one pipeline, after the buffered updates of any of their
    /// keys. A logged read by a task that does not own its per-flow key is refused without
    /// being sent, as [`Inner::execute`] does.
    fn execute_reads(&self, reads: &[Update], out: &mut Vec<Result<Option<Value>, StoreError>>) {
        let start = out.len();
        let want = self.subs.active();
        // Per read: None = send it, Some(error) = refused here.
        let refused: Vec<Option<StoreError>> = reads
            .iter()
            .map(|u| match u.op {
                Op::Get => None,
                Op::LoggedGet => check_owner(u).err(),
                _ => Some(crate::not_a_read(u)),
            })
            .collect();
        let sent = (|| {
            self.redis.dead()?;
            let pending = {
                let p = self.pending.lock();
                reads.iter().any(|u| p.keys.contains_key(&u.key))
            };
            if pending {
                self.flush()?;
            }
            let mut pipe = self.redis.pipe();
            for (u, _) in reads.iter().zip(&refused).filter(|(_, r)| r.is_none()) {
                if u.op == Op::Get {
                    pipe.add(fcall("snf_get", &[&self.names.value(&u.key)]));
                } else {
                    pipe.add(self.op_cmd(u, want));
                }
            }
            self.redis.run(|c| c.pipeline(&pipe))
        })();
        match sent {
            Ok(replies) => {
                let mut replies = replies.iter();
                for (u, refused) in reads.iter().zip(refused) {
                    if let Some(e) = refused {
                        out.push(Err(e));
                        continue;
                    }
                    out.push(match replies.next() {
                        None => Err(StoreError::Backend("redis: a pipelined read got no reply".into())),
                        Some(r) if u.op == Op::Get => codec::reply_bytes(r).and_then(codec::decode),
                        Some(r) => Reply::parse(r).and_then(|reply| self.settle(u, reply)),
                    });
                }
            }
            Err(e) => out.extend(reads.iter().map(|_| Err(e.clone()))),
        }
        debug_assert_eq!(out.len() - start, reads.len());
    }

    fn token(&self) -> String {
        format!("{}.{}", self.origin, self.tokens.fetch_add(1, Ordering::Relaxed))
    }

    fn timer_call(&self, name: &str, arg: &[u8]) -> Result<RValue, StoreError> {
        let (z, d, _) = self.names.timers();
        let r = self.names.timer_reply(&self.token());
        let mut c = fcall(name, &[&z, &d, &r]);
        c.arg(arg);
        self.redis.run(|k| k.query(&c))
    }

    fn schedule_timer(
        &self,
        at_ns: u64,
        dag: u32,
        vertex: u32,
        task: Option<TaskId>,
        payload: &[u8],
    ) -> Result<u64, StoreError> {
        let (z, d, idk) = self.names.timers();
        // A re-sent INCR only skips an id; ids stay unique and increasing.
        let mut incr = ::redis::cmd("INCR");
        incr.arg(&idk);
        let id: u64 = match self.redis.run(|k| k.query(&incr))? {
            RValue::Int(i) => {
                u64::try_from(i).map_err(|_| StoreError::Backend("redis: bad timer id".into()))?
            }
            other => return Err(StoreError::Backend(format!("redis: unexpected INCR reply {other:?}"))),
        };
        let idhex = format!("{id:016x}");
        let member = format!("{at_ns:016x}{idhex}");
        let mut data = format!("{dag:08x}{vertex:08x}").into_bytes();
        match task {
            Some(t) => data.extend_from_slice(format!("t{t:08x}").as_bytes()),
            None => data.extend_from_slice(b"---------"),
        }
        data.extend_from_slice(payload);
        let mut c = fcall("snf_tsched", &[&z, &d]);
        c.arg(&idhex).arg(&member).arg(data);
        self.redis.run(|k| k.query(&c))?;
        Ok(id)
    }

    fn due_timers(&self, now_ns: u64) -> Result<Vec<Timer>, StoreError> {
        let bound = match now_ns.checked_add(1) {
            Some(n) => format!("({n:016x}"),
            None => "+".to_owned(),
        };
        let blob = self.timer_call("snf_tdue", bound.as_bytes())?;
        let bad = || StoreError::Backend("redis: malformed timer entry".into());
        let hex = |b: &[u8]| -> Result<u64, StoreError> {
            std::str::from_utf8(b).ok().and_then(|s| u64::from_str_radix(s, 16).ok()).ok_or_else(bad)
        };
        let mut out = Vec::new();
        for e in codec::split_blob(codec::reply_bytes(&blob)?)? {
            if e.len() < 57 {
                return Err(bad());
            }
            let task = match e[48] {
                b't' => Some(u32::try_from(hex(&e[49..57])?).map_err(|_| bad())?),
                _ => None,
            };
            out.push(Timer {
                at_ns: hex(&e[0..16])?,
                id: hex(&e[16..32])?,
                dag: u32::try_from(hex(&e[32..40])?).map_err(|_| bad())?,
                vertex: u32::try_from(hex(&e[40..48])?).map_err(|_| bad())?,
                task,
                payload: e[57..].to_vec(),
            });
        }
        Ok(out)
    }

    /// Forgets clock-log entries below `watermark` of the keys written so far. Buffered
    /// non-blocking updates are not waited for (the engine calls this every few hundred
    /// packets, and waiting would drain the pipeline each time): their entries are written
    /// when they are sent and forgotten by the next call.
    fn gc_below(&self, watermark: Clock) -> Result<(), StoreError> {
        let keys: Vec<StateKey> = self.logged.lock().iter().copied().collect();
        let w = format!("{watermark:016x}");
        for chunk in keys.chunks(512) {
            let mut p = self.redis.pipe();
            for k in chunk {
                let mut c = fcall("snf_gc", &[&Names::log_of(&self.names.value(k))]);
                c.arg(&w);
                p.add(c);
            }
            let left = self.redis.run(|c| c.pipeline(&p))?;
            let mut logged = self.logged.lock();
            for (k, n) in chunk.iter().zip(left) {
                if matches!(n, RValue::Int(0)) {
                    logged.remove(k);
                }
            }
        }
        Ok(())
    }

    fn clock_log_len(&self) -> Result<usize, StoreError> {
        self.flush()?;
        let keys = self.redis.scan(&self.names.log_pattern())?;
        let mut total = 0usize;
        for chunk in keys.chunks(512) {
            let mut p = self.redis.pipe();
            for k in chunk {
                let mut c = ::redis::cmd("HLEN");
                c.arg(k);
                p.add(c);
            }
            for n in self.redis.run(|c| c.pipeline(&p))? {
                if let RValue::Int(n) = n {
                    total += usize::try_from(n).unwrap_or(0);
                }
            }
        }
        Ok(total)
    }

    fn snapshot(&self, dag: u32) -> Result<BTreeMap<String, Value>, StoreError> {
        self.flush()?;
        let keys = self.redis.scan(&self.names.dag_pattern(dag))?;
        let mut out = BTreeMap::new();
        for chunk in keys.chunks(512) {
            let mut p = self.redis.pipe();
            for k in chunk {
                p.add(fcall("snf_get", &[k]));
            }
            let vals = self.redis.run(|c| c.pipeline(&p))?;
            for (k, v) in chunk.iter().zip(vals) {
                let (Some(stable), Some(v)) =
                    (self.names.stable_of(k), codec::decode(codec::reply_bytes(&v)?)?)
                else {
                    continue;
                };
                out.insert(stable.to_owned(), v);
            }
        }
        Ok(out)
    }

    /// Forwards a published change made by another store instance to local subscribers.
    fn remote_notification(&self, payload: &[u8]) {
        let mut parts = payload.splitn(4, |&b| b == b'|');
        let (Some(origin), Some(tag), Some(key), Some(value)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return;
        };
        if origin == self.origin.as_bytes() {
            return;
        }
        let tag = std::str::from_utf8(tag).ok().and_then(|t| {
            let (c, s) = t.split_once(':')?;
            Some(UpdateTag::new(u64::from_str_radix(c, 16).ok()?, u32::from_str_radix(s, 16).ok()?))
        });
        let key = std::str::from_utf8(key).ok().and_then(codec::parse_stable);
        if let (Some(tag), Some(key), Ok(value)) = (tag, key, codec::decode(value)) {
            self.subs.notify(&key, &value, tag);
        }
    }
}

/// The pub/sub listener: forwards other instances' changes until `stop`. Reconnects after a
/// dropped connection. Sends `()` on `ready` once subscribed the first time.
fn listen(inner: Arc<Inner>, ready: crossbeam_channel::Sender<()>) {
    let mut ready = Some(ready);
    while !inner.stop.load(Ordering::Acquire) {
        let Ok(mut conn) = inner.redis.pubsub_connection() else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let mut ps = conn.as_pubsub();
        if ps.subscribe(&inner.channel).is_err()
            || ps.set_read_timeout(Some(Duration::from_millis(50))).is_err()
        {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        if let Some(r) = ready.take() {
            let _ = r.send(());
        }
        while !inner.stop.load(Ordering::Acquire) {
            match ps.get_message() {
                Ok(msg) => inner.remote_notification(msg.get_payload_bytes()),
                Err(e) if e.is_timeout() => {}
                Err(_) => break,
            }
        }
    }
}

impl StateStore for RedisStore {
    fn execute(&self, u: &Update) -> Result<Option<Value>, StoreError> {
        self.inner.execute(u)
    }

    fn execute_nonblocking(&self, u: Update) -> Result<(), StoreError> {
        let inner = &self.inner;
        inner.redis.dead()?;
        if u.op.is_read() {
            return Ok(());
        }
        check_owner(&u)?;
        if matches!(u.op, Op::Custom { .. }) || inner.opts.wait_for_ack {
            // Read-compute-commit cannot be pipelined: run it now (and so does every
            // update when asked to wait for the answer).
            return inner.execute(&u).map(|_| ());
        }
        let buffered = {
            let mut p = inner.pending.lock();
            *p.keys.entry(u.key).or_insert(0) += 1;
            p.ups.push(u);
            p.ups.len()
        };
        let batch = inner.opts.batch.max(1);
        if buffered >= batch * FLUSH_BACKLOG {
            // The flusher is behind: wait for it, then send what piled up (back-pressure).
            inner.flush()?;
        } else if buffered >= batch {
            self.start_flusher();
            *inner.flush_wanted.lock() = true;
            inner.flush_wake.notify_one();
        }
        Ok(())
    }

    fn get(&self, key: &StateKey) -> Result<Option<Value>, StoreError> {
        self.inner.get(key)
    }

    fn execute_reads(&self, reads: &[Update], out: &mut Vec<Result<Option<Value>, StoreError>>) {
        self.inner.execute_reads(reads, out);
    }

    fn register_custom_op(&self, name: &str, f: CustomOpFn) -> Result<CustomOpId, StoreError> {
        self.inner.customs.register(name, f)
    }

    fn custom_op_id(&self, name: &str) -> Option<CustomOpId> {
        self.inner.customs.id(name)
    }

    fn subscribe(&self, filter: KeyFilter, sink: crossbeam_channel::Sender<Notification>) -> u64 {
        let id = self.inner.subs.subscribe(filter, sink);
        if self.inner.opts.publish {
            let mut l = self.inner.listener.lock();
            if l.is_none() {
                let (tx, rx) = crossbeam_channel::bounded(1);
                let inner = Arc::clone(&self.inner);
                let spawned = std::thread::Builder::new()
                    .name("snf-redis-pubsub".into())
                    .spawn(move || listen(inner, tx));
                if let Ok(h) = spawned {
                    // Subscribed before returning, so no later change is missed.
                    let _ = rx.recv_timeout(self.inner.opts.io_timeout);
                    *l = Some(h);
                }
            }
        }
        id
    }

    fn unsubscribe(&self, id: u64) {
        self.inner.subs.unsubscribe(id)
    }

    /// Returns 0 (never a valid id) if the server cannot be reached; the error is then
    /// returned by every later call.
    fn schedule_timer(
        &self,
        at_ns: u64,
        dag: u32,
        vertex: u32,
        task: Option<TaskId>,
        payload: Vec<u8>,
    ) -> u64 {
        self.inner.schedule_timer(at_ns, dag, vertex, task, &payload).unwrap_or(0)
    }

    fn cancel_timer(&self, id: u64) -> bool {
        matches!(self.inner.timer_call("snf_tcancel", format!("{id:016x}").as_bytes()), Ok(RValue::Int(1)))
    }

    fn due_timers(&self, now_ns: u64) -> Vec<Timer> {
        self.inner.due_timers(now_ns).unwrap_or_default()
    }

    fn gc_below(&self, watermark: Clock) {
        // Pending non-blocking updates go first: one tagged below the watermark may repeat an
        // update already applied (a clone's copy, a replay), and must find its tag still in
        // the log to be emulated rather than applied again.
        if self.inner.flush().is_ok() {
            let _ = self.inner.gc_below(watermark);
        }
    }

    fn clock_log_len(&self) -> usize {
        self.inner.clock_log_len().unwrap_or(0)
    }

    fn snapshot(&self, dag: u32) -> BTreeMap<String, Value> {
        self.inner.snapshot(dag).unwrap_or_default()
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush()
    }

    fn backend_name(&self) -> &'static str {
        if self.inner.redis.is_cluster() {
            "redis-cluster"
        } else {
            "redis"
        }
    }
}
