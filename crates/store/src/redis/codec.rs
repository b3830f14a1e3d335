//! Wire formats shared with the Lua library (`streamnf.lua`): encoded values, key names,
//! clock-log field names, and the replies of the library's functions.
//!
//! Owns: the byte layout only. Never talks to Redis and never decides semantics (the Lua
//! functions and [`crate::ops`] do).

use std::collections::VecDeque;

use ::redis::Value as RValue;

use crate::types::{KeyBytes, StateKey, StoreError, TaskId, UpdateTag, Value};

/// Encodes an optional value: `n` (missing), `i<decimal>`, `b<bytes>`, or `l` followed by
/// `(8 hex digits length, item)*`.
pub(crate) fn encode(v: &Option<Value>) -> Vec<u8> {
    match v {
        None => b"n".to_vec(),
        Some(Value::Int(i)) => format!("i{i}").into_bytes(),
        Some(Value::Bytes(b)) => {
            let mut out = Vec::with_capacity(b.len() + 1);
            out.push(b'b');
            out.extend_from_slice(b);
            out
        }
        Some(Value::List(items)) => {
            let mut out = Vec::with_capacity(1 + items.iter().map(|i| i.len() + 8).sum::<usize>());
            out.push(b'l');
            for it in items {
                out.extend_from_slice(format!("{:08x}", it.len()).as_bytes());
                out.extend_from_slice(it);
            }
            out
        }
    }
}

fn bad(what: &str, raw: &[u8]) -> StoreError {
    let shown: String = String::from_utf8_lossy(&raw[..raw.len().min(40)]).into_owned();
    StoreError::Backend(format!("redis: malformed {what} from the server: {shown:?}"))
}

/// Decodes [`encode`]'s format.
pub(crate) fn decode(raw: &[u8]) -> Result<Option<Value>, StoreError> {
    let (&tag, rest) = raw.split_first().ok_or_else(|| bad("value", raw))?;
    match tag {
        b'n' if rest.is_empty() => Ok(None),
        b'i' => std::str::from_utf8(rest)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .map(|i| Some(Value::Int(i)))
            .ok_or_else(|| bad("integer", raw)),
        b'b' => Ok(Some(Value::Bytes(rest.to_vec()))),
        b'l' => {
            let mut items = VecDeque::new();
            let mut pos = 0;
            while pos < rest.len() {
                let len = rest
                    .get(pos..pos + 8)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| usize::from_str_radix(h, 16).ok())
                    .ok_or_else(|| bad("list", raw))?;
                let item = rest.get(pos + 8..pos + 8 + len).ok_or_else(|| bad("list", raw))?;
                items.push_back(item.to_vec());
                pos += 8 + len;
            }
            Ok(Some(Value::List(items)))
        }
        _ => Err(bad("value", raw)),
    }
}

/// Splits a blob of `(8 hex digits length, item)*` (timer replies).
pub(crate) fn split_blob(raw: &[u8]) -> Result<Vec<&[u8]>, StoreError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < raw.len() {
        let len = raw
            .get(pos..pos + 8)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| usize::from_str_radix(h, 16).ok())
            .ok_or_else(|| bad("timer list", raw))?;
        out.push(raw.get(pos + 8..pos + 8 + len).ok_or_else(|| bad("timer list", raw))?);
        pos += 8 + len;
    }
    Ok(out)
}

/// Clock-log field of a tag: 16 hex digits of the clock (so string order is clock order,
/// which `snf_gc` relies on), `:`, the seq in hex.
pub(crate) fn tag_field(tag: UpdateTag) -> String {
    format!("{:016x}:{:x}", tag.clock, tag.seq)
}

/// Key names of one namespace. Every state key is `snf:NS:{STABLE}` where `STABLE` is
/// [`StateKey::to_stable_string`]; the braces make it the cluster hash tag, so the value and
/// its clock log (`snf:NS:{STABLE}:log`) share a slot. Timer keys use the tag `{NS.timers}`.
#[derive(Clone, Debug)]
pub(crate) struct Names {
    /// `snf:NS:`.
    pub(crate) prefix: String,
    /// The namespace.
    pub(crate) ns: String,
}

impl Names {
    pub(crate) fn new(ns: &str) -> Names {
        Names { prefix: format!("snf:{ns}:"), ns: ns.to_owned() }
    }

    /// Value key.
    pub(crate) fn value(&self, key: &StateKey) -> String {
        format!("{}{{{}}}", self.prefix, key.to_stable_string())
    }

    /// Clock-log key of a value key.
    pub(crate) fn log_of(value_key: &str) -> String {
        format!("{value_key}:log")
    }

    /// SCAN pattern of one DAG's value keys (log keys end in `:log`, not `}`).
    pub(crate) fn dag_pattern(&self, dag: u32) -> String {
        format!("{}{{{dag}/*}}", self.prefix)
    }

    /// SCAN pattern of every clock log.
    pub(crate) fn log_pattern(&self) -> String {
        format!("{}{{*}}:log", self.prefix)
    }

    /// SCAN pattern of every key of the namespace.
    pub(crate) fn all_pattern(&self) -> String {
        format!("{}*", self.prefix)
    }

    /// The stable key string inside a value key name, if it is one.
    pub(crate) fn stable_of<'a>(&self, value_key: &'a str) -> Option<&'a str> {
        value_key.strip_prefix(&self.prefix)?.strip_prefix('{')?.strip_suffix('}')
    }

    fn timer_key(&self, what: &str) -> String {
        format!("{}{{{}.timers}}:{what}", self.prefix, self.ns)
    }

    /// Timer queue (sorted set), timer data (hash), id counter, reply cache of a token.
    pub(crate) fn timers(&self) -> (String, String, String) {
        (self.timer_key("z"), self.timer_key("d"), self.timer_key("id"))
    }

    /// Reply cache key of one timer call (same slot as the timer keys).
    pub(crate) fn timer_reply(&self, token: &str) -> String {
        self.timer_key(&format!("r:{token}"))
    }

    /// Pub/sub channel of the namespace's update notifications.
    pub(crate) fn channel(&self) -> String {
        format!("{}notify", self.prefix)
    }
}

/// Parses [`StateKey::to_stable_string`] back (`dag/vertex/owner-or-*/object/hex`). Folded
/// sub-keys (`fnv:` prefix) cannot be rebuilt and give `None`.
pub(crate) fn parse_stable(s: &str) -> Option<StateKey> {
    let mut it = s.split('/');
    let dag = it.next()?.parse().ok()?;
    let vertex = it.next()?.parse().ok()?;
    let owner: Option<TaskId> = match it.next()? {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    let object = it.next()?.parse().ok()?;
    let hex = it.next()?;
    if it.next().is_some() || hex.len() % 2 != 0 {
        return None;
    }
    let bytes: Option<Vec<u8>> =
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect();
    let sub = KeyBytes::try_new(&bytes?)?;
    Some(StateKey { dag, vertex, object, owner, sub })
}

/// One reply of `snf_op`, `snf_cread` or `snf_ccommit`.
#[derive(Debug)]
pub(crate) enum Reply {
    /// Applied and logged: result, changed, new value (when asked for and changed).
    Applied { res: Option<Value>, changed: bool, new: Option<Option<Value>> },
    /// Emulated repeat: the logged result.
    Emulated(Option<Value>),
    /// Type mismatch.
    Mismatch { expected: &'static str, found: &'static str },
    /// The issuer is not the owner.
    NotOwner,
    /// Custom-op read: the current value.
    Current(Option<Value>),
    /// Custom-op commit lost a race: read again.
    Retry,
}

fn static_type(b: &[u8]) -> &'static str {
    match b {
        b"int" => "int",
        b"bytes" => "bytes",
        b"list" => "list",
        _ => "unknown",
    }
}

fn bulk(v: &RValue) -> Option<&[u8]> {
    match v {
        RValue::BulkString(b) => Some(b),
        RValue::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// Bytes of a bulk/simple string reply.
pub(crate) fn reply_bytes(v: &RValue) -> Result<&[u8], StoreError> {
    bulk(v).ok_or_else(|| StoreError::Backend(format!("redis: unexpected reply {v:?}")))
}

impl Reply {
    /// Parses a function reply.
    pub(crate) fn parse(v: &RValue) -> Result<Reply, StoreError> {
        let unexpected = || StoreError::Backend(format!("redis: unexpected function reply {v:?}"));
        let RValue::Array(items) = v else { return Err(unexpected()) };
        let field = |i: usize| items.get(i).and_then(bulk).ok_or_else(unexpected);
        match field(0)? {
            b"ok" => {
                let res = decode(field(1)?)?;
                let changed = field(2)? == b"1";
                let newv = field(3)?;
                let new = if newv.is_empty() { None } else { Some(decode(newv)?) };
                Ok(Reply::Applied { res, changed, new })
            }
            b"em" => Ok(Reply::Emulated(decode(field(1)?)?)),
            b"mm" => Ok(Reply::Mismatch { expected: static_type(field(1)?), found: static_type(field(2)?) }),
            b"no" => Ok(Reply::NotOwner),
            b"val" => Ok(Reply::Current(decode(field(1)?)?)),
            b"retry" => Ok(Reply::Retry),
            _ => Err(unexpected()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        let cases = vec![
            None,
            Some(Value::Int(0)),
            Some(Value::Int(i64::MIN)),
            Some(Value::Int(i64::MAX)),
            Some(Value::Bytes(vec![])),
            Some(Value::Bytes(b"n\x00\xffi".to_vec())),
            Some(Value::List(VecDeque::new())),
            Some(Value::List(vec![vec![], b"ab".to_vec(), vec![0u8; 300]].into())),
        ];
        for v in cases {
            assert_eq!(decode(&encode(&v)), Ok(v.clone()), "{v:?}");
        }
        for bad in [&b""[..], b"x", b"i", b"i1a", b"l0000000", b"l00000005ab", b"nx"] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn stable_keys_parse_back() {
        let keys = [
            StateKey::shared(7, 1, 3, KeyBytes::new(b"x")),
            StateKey::per_flow(1, 2, 9, 0, KeyBytes::new(&[0, 0xab, 0xff])),
            StateKey::shared(u32::MAX, u32::MAX, u16::MAX, KeyBytes::EMPTY),
        ];
        for k in keys {
            assert_eq!(parse_stable(&k.to_stable_string()), Some(k));
        }
        let folded = StateKey::shared(1, 1, 1, KeyBytes::new(&[1u8; 60]));
        assert_eq!(parse_stable(&folded.to_stable_string()), None);
        for bad in ["", "1/2/3/4", "1/2/x/4/00", "1/2/*/4/0", "1/2/*/4/00/5"] {
            assert_eq!(parse_stable(bad), None, "{bad}");
        }
    }

    #[test]
    fn tag_fields_sort_by_clock() {
        let a = tag_field(UpdateTag::new(9, 100));
        let b = tag_field(UpdateTag::new(10, 0));
        let c = tag_field(UpdateTag::new(u64::MAX, 0));
        assert!(a < b && b < c);
        assert_eq!(&a[..16], "0000000000000009");
    }

    #[test]
    fn names_share_the_hash_tag() {
        let n = Names::new("ns1");
        let k = StateKey::shared(7, 1, 3, KeyBytes::new(b"x"));
        let v = n.value(&k);
        assert_eq!(v, "snf:ns1:{7/1/*/3/78}");
        assert_eq!(Names::log_of(&v), "snf:ns1:{7/1/*/3/78}:log");
        assert_eq!(n.stable_of(&v), Some("7/1/*/3/78"));
        assert_eq!(n.stable_of(&Names::log_of(&v)), None);
    }
}
