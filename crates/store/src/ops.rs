//! Backend-independent pieces: the semantics of each [`Op`] on a value, the custom-op
//! registry, subscriptions and the timer queue. Shared by the embedded and local backends.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crossbeam_channel::{Sender, TrySendError};
use parking_lot::{Mutex, RwLock};
use rustc_hash::FxHashMap;

use crate::types::{
    CustomOpFn, CustomOpId, KeyFilter, Notification, Op, StateKey, StoreError, Timer, UpdateTag, Value,
};

fn mismatch(key: &StateKey, expected: &'static str, found: &Value) -> StoreError {
    StoreError::TypeMismatch { key: key.to_string(), expected, found: found.type_name() }
}

/// Applies `op` to `value` (`None` = missing key). Returns the op's result and whether the
/// value changed. On error `value` is left untouched.
///
/// `custom` must be the resolved function when `op` is `Op::Custom`.
#[inline]
pub(crate) fn apply(
    value: &mut Option<Value>,
    op: &Op,
    key: &StateKey,
    custom: Option<&CustomOpFn>,
) -> Result<(Option<Value>, bool), StoreError> {
    match op {
        Op::Get | Op::LoggedGet => Ok((value.clone(), false)),
        Op::Set(v) => {
            let changed = value.as_ref() != Some(v);
            *value = Some(v.clone());
            Ok((None, changed))
        }
        Op::Delete => {
            let old = value.take();
            let changed = old.is_some();
            Ok((old, changed))
        }
        Op::Incr(d) => match value {
            Some(Value::Int(x)) => {
                *x = x.wrapping_add(*d);
                Ok((Some(Value::Int(*x)), *d != 0))
            }
            None => {
                *value = Some(Value::Int(*d));
                Ok((Some(Value::Int(*d)), true))
            }
            Some(other) => Err(mismatch(key, "int", other)),
        },
        Op::IncrIf { delta, min, max } => {
            let old = match value {
                Some(Value::Int(x)) => *x,
                None => 0,
                Some(other) => return Err(mismatch(key, "int", other)),
            };
            match old.checked_add(*delta) {
                Some(new) if *min <= new && new <= *max => {
                    let changed = value.is_none() || new != old;
                    *value = Some(Value::Int(new));
                    Ok((Some(Value::Int(new)), changed))
                }
                _ => Ok((Some(Value::Int(old)), false)),
            }
        }
        Op::Push { back, item } => match value {
            Some(Value::List(l)) => {
                if *back {
                    l.push_back(item.clone());
                } else {
                    l.push_front(item.clone());
                }
                Ok((Some(Value::Int(l.len() as i64)), true))
            }
            None => {
                let mut l = VecDeque::with_capacity(4);
                l.push_back(item.clone());
                *value = Some(Value::List(l));
                Ok((Some(Value::Int(1)), true))
            }
            Some(other) => Err(mismatch(key, "list", other)),
        },
        Op::Pop { back } => match value {
            Some(Value::List(l)) => {
                let item = if *back { l.pop_back() } else { l.pop_front() };
                if l.is_empty() {
                    *value = None;
                }
                let changed = item.is_some();
                Ok((item.map(Value::Bytes), changed))
            }
            None => Ok((None, false)),
            Some(other) => Err(mismatch(key, "list", other)),
        },
        Op::CompareAndSet { expected, new } => {
            if value == expected {
                let changed = value != new;
                *value = new.clone();
                Ok((Some(Value::Int(1)), changed))
            } else {
                Ok((Some(Value::Int(0)), false))
            }
        }
        Op::Custom { op: id, arg } => {
            let f = custom.ok_or(StoreError::UnknownCustomOp(id.0))?;
            let mut tmp = value.clone();
            let res = f(&mut tmp, arg)?;
            let changed = tmp != *value;
            *value = tmp;
            Ok((res, changed))
        }
    }
}

/// Registry of custom operations, indexed by [`CustomOpId`].
#[derive(Default)]
pub(crate) struct CustomOps {
    inner: RwLock<CustomInner>,
}

#[derive(Default)]
struct CustomInner {
    fns: Vec<CustomOpFn>,
    names: FxHashMap<String, u16>,
}

impl CustomOps {
    /// Registers `f` under `name`; an already registered name keeps its first function and id.
    pub(crate) fn register(&self, name: &str, f: CustomOpFn) -> Result<CustomOpId, StoreError> {
        let mut g = self.inner.write();
        if let Some(&id) = g.names.get(name) {
            return Ok(CustomOpId(id));
        }
        let id = u16::try_from(g.fns.len())
            .map_err(|_| StoreError::Backend("too many custom operations (max 65536)".into()))?;
        g.fns.push(f);
        g.names.insert(name.to_owned(), id);
        Ok(CustomOpId(id))
    }

    pub(crate) fn id(&self, name: &str) -> Option<CustomOpId> {
        self.inner.read().names.get(name).map(|&i| CustomOpId(i))
    }

    /// Resolves the function of `op` when it is a custom op.
    #[inline]
    pub(crate) fn resolve(&self, op: &Op) -> Result<Option<CustomOpFn>, StoreError> {
        match op {
            Op::Custom { op: id, .. } => self
                .inner
                .read()
                .fns
                .get(id.0 as usize)
                .cloned()
                .map(Some)
                .ok_or(StoreError::UnknownCustomOp(id.0)),
            _ => Ok(None),
        }
    }
}

struct Sub {
    id: u64,
    filter: KeyFilter,
    sink: Sender<Notification>,
}

/// Update subscriptions. `notify` costs one relaxed atomic load when nobody subscribed.
#[derive(Default)]
pub(crate) struct Subscriptions {
    any: AtomicBool,
    next_id: AtomicU64,
    dropped: AtomicU64,
    subs: RwLock<Vec<Sub>>,
}

impl Subscriptions {
    pub(crate) fn subscribe(&self, filter: KeyFilter, sink: Sender<Notification>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let mut g = self.subs.write();
        g.push(Sub { id, filter, sink });
        self.any.store(true, Ordering::Release);
        id
    }

    pub(crate) fn unsubscribe(&self, id: u64) {
        let mut g = self.subs.write();
        g.retain(|s| s.id != id);
        self.any.store(!g.is_empty(), Ordering::Release);
    }

    /// Cheap check: is anybody subscribed at all?
    #[inline]
    pub(crate) fn active(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    /// Number of notifications dropped because a bounded sink was full.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Sends a notification to every matching subscriber (never blocks: `try_send`; a full
    /// bounded sink drops the notification and counts it; a disconnected sink is removed).
    pub(crate) fn notify(&self, key: &StateKey, value: &Option<Value>, tag: UpdateTag) {
        let mut dead: Vec<u64> = Vec::new();
        {
            let g = self.subs.read();
            for s in g.iter().filter(|s| s.filter.matches(key)) {
                let n = Notification { key: *key, value: value.clone(), tag };
                match s.sink.try_send(n) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => {
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(TrySendError::Disconnected(_)) => dead.push(s.id),
                }
            }
        }
        for id in dead {
            self.unsubscribe(id);
        }
    }
}

/// Timer queue: a heap of `(at_ns, id)` plus the live timers by id (cancelled ones are
/// skipped lazily when they reach the top of the heap).
#[derive(Default)]
pub(crate) struct TimerQueue {
    next_id: AtomicU64,
    inner: Mutex<TimerInner>,
}

#[derive(Default)]
struct TimerInner {
    heap: BinaryHeap<Reverse<(u64, u64)>>,
    live: FxHashMap<u64, Timer>,
}

impl TimerQueue {
    pub(crate) fn schedule(
        &self,
        at_ns: u64,
        dag: u32,
        vertex: u32,
        task: Option<u32>,
        payload: Vec<u8>,
    ) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let mut g = self.inner.lock();
        g.heap.push(Reverse((at_ns, id)));
        g.live.insert(id, Timer { id, at_ns, dag, vertex, task, payload });
        id
    }

    pub(crate) fn cancel(&self, id: u64) -> bool {
        let mut g = self.inner.lock();
        let found = g.live.remove(&id).is_some();
        if g.live.is_empty() {
            g.heap.clear();
        }
        found
    }

    pub(crate) fn due(&self, now_ns: u64) -> Vec<Timer> {
        let mut g = self.inner.lock();
        let mut out = Vec::new();
        while let Some(&Reverse((at, id))) = g.heap.peek() {
            if at > now_ns {
                break;
            }
            g.heap.pop();
            if let Some(t) = g.live.remove(&id) {
                out.push(t);
            }
        }
        out
    }
}
