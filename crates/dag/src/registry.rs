//! The NF registry: built-in NF names → constructors, and typed access to an NF's
//! parameters with errors that name the parameter.

use crate::nf::NetworkFunction;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Parameters of one vertex, as written under `[vertex.params]` in a chain file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Params(pub toml::Table);

impl Params {
    /// Empty parameters.
    pub fn empty() -> Params {
        Params(toml::Table::new())
    }

    /// Fails when a key is not in `allowed`, naming the key and the allowed ones.
    pub fn allow_only(&self, allowed: &[&str]) -> Result<(), String> {
        for k in self.0.keys() {
            if allowed.is_empty() {
                return Err(format!("unknown parameter `{k}`: this NF takes no parameters"));
            }
            if !allowed.contains(&k.as_str()) {
                return Err(format!("unknown parameter `{k}` (known: {})", allowed.join(", ")));
            }
        }
        Ok(())
    }

    /// A non-negative integer parameter, or `default` when absent.
    pub fn u64(&self, key: &str, default: u64) -> Result<u64, String> {
        match self.0.get(key) {
            None => Ok(default),
            Some(toml::Value::Integer(i)) if *i >= 0 => Ok(*i as u64),
            Some(v) => Err(format!("parameter `{key}` must be a non-negative integer, found {v}")),
        }
    }

    /// A number parameter (integer or float), or `default` when absent.
    pub fn f64(&self, key: &str, default: f64) -> Result<f64, String> {
        match self.0.get(key) {
            None => Ok(default),
            Some(toml::Value::Integer(i)) => Ok(*i as f64),
            Some(toml::Value::Float(f)) if f.is_finite() => Ok(*f),
            Some(v) => Err(format!("parameter `{key}` must be a number, found {v}")),
        }
    }

    /// A string parameter, or `default` when absent.
    pub fn string(&self, key: &str, default: &str) -> Result<String, String> {
        match self.0.get(key) {
            None => Ok(default.to_string()),
            Some(toml::Value::String(s)) => Ok(s.clone()),
            Some(v) => Err(format!("parameter `{key}` must be a string, found {v}")),
        }
    }

    /// The `mode` parameter every NF with an asynchronous mode takes: `"sync"` (the default)
    /// or `"async"` (see [`crate::ProcessingMode`]).
    pub fn processing_mode(&self) -> Result<crate::ProcessingMode, String> {
        match self.string("mode", "sync")?.as_str() {
            "sync" => Ok(crate::ProcessingMode::Synchronous),
            "async" => Ok(crate::ProcessingMode::Asynchronous),
            other => Err(format!("parameter `mode` must be \"sync\" or \"async\", found \"{other}\"")),
        }
    }

    /// A list-of-strings parameter, or `default` when absent.
    pub fn strings(&self, key: &str, default: &[&str]) -> Result<Vec<String>, String> {
        match self.0.get(key) {
            None => Ok(default.iter().map(|s| s.to_string()).collect()),
            Some(toml::Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    toml::Value::String(s) => Ok(s.clone()),
                    other => Err(format!("parameter `{key}` must be a list of strings, found {other}")),
                })
                .collect(),
            Some(v) => Err(format!("parameter `{key}` must be a list of strings, found {v}")),
        }
    }

    /// A list of TCP/UDP port numbers (each 1..=65535), or `default` when absent.
    pub fn ports(&self, key: &str, default: &[u16]) -> Result<Vec<u16>, String> {
        let Some(v) = self.0.get(key) else { return Ok(default.to_vec()) };
        let bad = || format!("parameter `{key}` must be a list of port numbers in 1..=65535, found {v}");
        let items = v.as_array().ok_or_else(bad)?;
        items
            .iter()
            .map(|x| x.as_integer().and_then(|i| u16::try_from(i).ok()).filter(|&n| n > 0).ok_or_else(bad))
            .collect()
    }

    /// A boolean parameter, or `default` when absent.
    pub fn bool(&self, key: &str, default: bool) -> Result<bool, String> {
        match self.0.get(key) {
            None => Ok(default),
            Some(toml::Value::Boolean(b)) => Ok(*b),
            Some(v) => Err(format!("parameter `{key}` must be true or false, found {v}")),
        }
    }
}

/// Builds an NF from its parameters, or says which parameter is wrong.
pub type NfFactory = fn(&Params) -> Result<Arc<dyn NetworkFunction>, String>;

/// Registered NF types by name.
#[derive(Clone, Default)]
pub struct NfRegistry {
    entries: BTreeMap<String, (NfFactory, &'static str)>,
}

impl NfRegistry {
    /// An empty registry.
    pub fn new() -> NfRegistry {
        NfRegistry::default()
    }

    /// Registers `name` with a one-line description.
    pub fn register(&mut self, name: &str, description: &'static str, factory: NfFactory) {
        self.entries.insert(name.to_string(), (factory, description));
    }

    /// Builds the NF called `name`.
    pub fn build(&self, name: &str, params: &Params) -> Option<Result<Arc<dyn NetworkFunction>, String>> {
        self.entries.get(name).map(|(f, _)| f(params))
    }

    /// Registered names with their descriptions, sorted.
    pub fn list(&self) -> Vec<(&str, &'static str)> {
        self.entries.iter().map(|(k, (_, d))| (k.as_str(), *d)).collect()
    }
}
