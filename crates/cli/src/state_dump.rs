//! `streamnf run --state-json FILE`: the chain's final state, one JSON object per line, with
//! vertex and object names instead of store ids (for operators and for scripts that check an
//! NF's tables and counters against other tools).
//!
//! Owns only the rendering of a `StateStore::snapshot`; it never changes state.

use serde_json::{json, Value as Json};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use streamnf_dag::LogicalDag;
use streamnf_store::Value;

/// Renders one stored value: integers as numbers, bytes as text when printable ASCII (else
/// hex), lists as arrays of such.
fn value_json(v: &Value) -> Json {
    fn bytes(b: &[u8]) -> Json {
        if !b.is_empty() && b.iter().all(|&c| (0x20..0x7f).contains(&c)) {
            json!({ "text": String::from_utf8_lossy(b) })
        } else {
            json!({ "hex": hex(b) })
        }
    }
    match v {
        Value::Int(i) => json!(i),
        Value::Bytes(b) => bytes(b),
        Value::List(items) => Json::Array(items.iter().map(|b| bytes(b)).collect()),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// One line per key of `snapshot` (`dag/vertex/task-or-*/object/hex`): `vertex`, `object`,
/// `task` (owner of a per-flow key, else null), `key` (hex), `key_text` (when printable)
/// and `value`.
pub fn write_state(path: &Path, dag: &LogicalDag, snapshot: &BTreeMap<String, Value>) -> Result<(), String> {
    let err = |e: std::io::Error| format!("--state-json {}: {e}", path.display());
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).map_err(err)?);
    for (k, v) in snapshot {
        let parts: Vec<&str> = k.splitn(5, '/').collect();
        let [_, vertex, task, object, key] = parts[..] else { continue };
        let v_idx: Option<usize> = vertex.parse().ok();
        let vertex_info = v_idx.and_then(|i| dag.vertices.get(i));
        let vertex_name = vertex_info.map(|x| x.name.clone()).unwrap_or_else(|| format!("#{vertex}"));
        let object_name = object
            .parse::<usize>()
            .ok()
            .and_then(|o| vertex_info.and_then(|x| x.spec.state.get(o)))
            .map(|o| o.name.clone())
            .unwrap_or_else(|| format!("#{object}"));
        let key_bytes: Vec<u8> = (0..key.len() / 2)
            .filter_map(|i| u8::from_str_radix(key.get(2 * i..2 * i + 2)?, 16).ok())
            .collect();
        let mut line = json!({
            "vertex": vertex_name,
            "object": object_name,
            "task": task.parse::<u64>().ok(),
            "key": key,
            "value": value_json(v),
        });
        if !key_bytes.is_empty() && key_bytes.iter().all(|&c| (0x20..0x7f).contains(&c)) {
            line["key_text"] = json!(String::from_utf8_lossy(&key_bytes));
        }
        serde_json::to_writer(&mut out, &line).map_err(|e| format!("--state-json: {e}"))?;
        out.write_all(b"\n").map_err(err)?;
    }
    out.flush().map_err(err)
}
