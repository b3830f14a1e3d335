//! Connections to one Redis server or a Redis Cluster: URL parsing, a small pool of
//! synchronous connections, pipelines, per-master scans, loading the function library, and
//! the retry loop that survives a dropped connection.
//!
//! Owns: transport and failure handling. Never interprets state (that is `mod.rs`), and
//! never retries a call that is not safe to repeat: callers only pass calls that are
//! idempotent (clock-tagged updates, reads, timer calls carrying a reply-cache token).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ::redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConnection, ClusterPipeline};
use ::redis::{Client, Cmd, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo, RedisError};
use ::redis::{RedisResult, Value as RValue};
use parking_lot::Mutex;

use crate::types::StoreError;

/// Source of the function library, loaded with `FUNCTION LOAD REPLACE`.
pub(crate) const LIBRARY: &str = include_str!("streamnf.lua");

/// Where to connect.
enum Target {
    Single(Client),
    Cluster { client: ClusterClient, seeds: Vec<ConnectionInfo> },
}

/// One pooled connection.
pub(crate) enum Conn {
    Single(::redis::Connection),
    Cluster(Box<ClusterConnection>),
}

/// A pipeline for the connection kind (built once, re-sent as a whole on retry).
pub(crate) enum Pipe {
    Single(::redis::Pipeline),
    Cluster(ClusterPipeline),
}

impl Pipe {
    /// Appends a command.
    pub(crate) fn add(&mut self, c: Cmd) {
        match self {
            Pipe::Single(p) => {
                p.add_command(c);
            }
            Pipe::Cluster(p) => {
                p.add_command(c);
            }
        }
    }
}

impl Conn {
    /// Runs one command (routed by its key in a cluster).
    pub(crate) fn query(&mut self, c: &Cmd) -> RedisResult<RValue> {
        match self {
            Conn::Single(k) => c.query(k),
            Conn::Cluster(k) => c.query(&mut **k),
        }
    }

    /// Sends a pipeline and returns one reply per command.
    pub(crate) fn pipeline(&mut self, p: &Pipe) -> RedisResult<Vec<RValue>> {
        match (self, p) {
            (Conn::Single(k), Pipe::Single(p)) => p.query(k),
            (Conn::Cluster(k), Pipe::Cluster(p)) => p.query(k),
            _ => Err(RedisError::from((ErrorKind::Client, "pipeline of the wrong connection kind"))),
        }
    }
}

/// Connection settings.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timeouts {
    pub(crate) io: Duration,
    pub(crate) reconnect: Duration,
}

/// A pool of connections to one target plus the fatal-error latch.
pub(crate) struct Redis {
    /// The URL, with any password removed (for messages).
    pub(crate) shown: String,
    target: Target,
    pool: Mutex<Vec<Conn>>,
    timeouts: Timeouts,
    dead: Mutex<Option<String>>,
    /// Calls that failed transiently and were retried.
    pub(crate) retried: AtomicU64,
}

/// Removes `:password@` from a URL for messages.
fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, rest)), Some(_)) => {
            let (auth, hosts) = rest.rsplit_once('@').unwrap_or(("", rest));
            let user = auth.split_once(':').map(|(u, _)| u).unwrap_or(auth);
            format!("{scheme}://{user}:***@{hosts}")
        }
        _ => url.to_owned(),
    }
}

fn transient(e: &RedisError) -> bool {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        return true;
    }
    if e.is_cluster_error() || e.is_unrecoverable_error() || e.kind() == ErrorKind::ClusterConnectionNotFound
    {
        return true;
    }
    let s = e.to_string();
    ["LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "connection", "Connection"]
        .iter()
        .any(|m| s.contains(m))
}

fn missing_function(e: &RedisError) -> bool {
    let s = e.to_string();
    s.contains("Function not found") || s.contains("function not found")
}

impl Redis {
    /// Parses `redis://[USER[:PASS]@]HOST:PORT[/DB]` or
    /// `redis+cluster://[USER[:PASS]@]H:P,H:P,...`; `rediss://` is refused (no TLS in this
    /// build). Connects once and loads the function library.
    pub(crate) fn open(url: &str, timeouts: Timeouts) -> Result<Redis, StoreError> {
        let shown = redact(url);
        let err = |m: String| StoreError::Backend(format!("{shown}: {m}"));
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| err("expected redis://HOST:PORT or redis+cluster://H:P,H:P".into()))?;
        let target = match scheme {
            "rediss" | "rediss+cluster" => {
                return Err(err("TLS is not in this build (use redis:// on a trusted network)".into()))
            }
            "redis" => Target::Single(Client::open(url).map_err(|e| err(e.to_string()))?),
            "redis+cluster" => {
                let (auth, hosts) = match rest.rsplit_once('@') {
                    Some((a, h)) => (format!("{a}@"), h),
                    None => (String::new(), rest),
                };
                let hosts = hosts.split_once('/').map(|(h, _)| h).unwrap_or(hosts);
                let seeds = hosts
                    .split(',')
                    .map(|h| format!("redis://{auth}{}", h.trim()).into_connection_info())
                    .collect::<RedisResult<Vec<_>>>()
                    .map_err(|e| err(e.to_string()))?;
                if seeds.is_empty() {
                    return Err(err("no cluster nodes".into()));
                }
                let client = ClusterClientBuilder::new(seeds.clone())
                    .connection_timeout(timeouts.io)
                    .response_timeout(timeouts.io)
                    .retries(3)
                    .min_retry_wait(10)
                    .max_retry_wait(200)
                    .build()
                    .map_err(|e| err(e.to_string()))?;
                Target::Cluster { client, seeds }
            }
            other => return Err(err(format!("unknown scheme `{other}`"))),
        };
        let r = Redis {
            shown: shown.clone(),
            target,
            pool: Mutex::new(Vec::new()),
            timeouts,
            dead: Mutex::new(None),
            retried: AtomicU64::new(0),
        };
        let mut c = r.connect().map_err(|e| err(format!("cannot connect: {e}")))?;
        Self::load_library(&mut c).map_err(|e| err(format!("cannot load the function library: {e}")))?;
        r.pool.lock().push(c);
        Ok(r)
    }

    fn connect(&self) -> RedisResult<Conn> {
        match &self.target {
            Target::Single(client) => {
                let c = client.get_connection_with_timeout(self.timeouts.io)?;
                c.set_read_timeout(Some(self.timeouts.io))?;
                c.set_write_timeout(Some(self.timeouts.io))?;
                Ok(Conn::Single(c))
            }
            Target::Cluster { client, .. } => {
                let c = client.get_connection()?;
                c.set_read_timeout(Some(self.timeouts.io))?;
                c.set_write_timeout(Some(self.timeouts.io))?;
                Ok(Conn::Cluster(Box::new(c)))
            }
        }
    }

    fn load_library(c: &mut Conn) -> RedisResult<()> {
        // In a cluster this is routed to every master.
        c.query(::redis::cmd("FUNCTION").arg("LOAD").arg("REPLACE").arg(LIBRARY)).map(|_| ())
    }

    /// True for a cluster target.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.target, Target::Cluster { .. })
    }

    /// An empty pipeline of the right kind.
    pub(crate) fn pipe(&self) -> Pipe {
        match self.target {
            Target::Single(_) => Pipe::Single(::redis::pipe()),
            Target::Cluster { .. } => Pipe::Cluster(::redis::cluster::cluster_pipe()),
        }
    }

    /// The fatal error, once the server stayed away longer than the reconnect timeout.
    pub(crate) fn dead(&self) -> Result<(), StoreError> {
        match &*self.dead.lock() {
            Some(e) => Err(StoreError::Backend(e.clone())),
            None => Ok(()),
        }
    }

    /// Runs `f` on a pooled connection. A dropped connection, a refused reconnect or a
    /// cluster reconfiguration is retried with backoff (`f` is called again, so it must be
    /// idempotent) until the reconnect timeout; then the store is marked dead and this and
    /// every later call fail with one error naming the URL. A missing function library
    /// (a restarted server without persistence) is loaded again.
    pub(crate) fn run<T>(&self, mut f: impl FnMut(&mut Conn) -> RedisResult<T>) -> Result<T, StoreError> {
        let mut deadline: Option<Instant> = None;
        let mut backoff = Duration::from_millis(5);
        let mut reloads = 0;
        loop {
            self.dead()?;
            let (conn, e) = match self.take() {
                Ok(mut c) => match f(&mut c) {
                    Ok(v) => {
                        self.pool.lock().push(c);
                        return Ok(v);
                    }
                    Err(e) => (Some(c), e),
                },
                Err(e) => (None, e),
            };
            if missing_function(&e) && reloads < 3 {
                if let Some(mut c) = conn {
                    reloads += 1;
                    if Self::load_library(&mut c).is_ok() {
                        self.pool.lock().push(c);
                    }
                    continue;
                }
            }
            if !transient(&e) {
                // Keep no connection in an unknown protocol state.
                drop(conn);
                return Err(StoreError::Backend(format!("{}: {e}", self.shown)));
            }
            drop(conn);
            self.pool.lock().clear();
            self.retried.fetch_add(1, Ordering::Relaxed);
            let now = Instant::now();
            let end = *deadline.get_or_insert(now + self.timeouts.reconnect);
            if now >= end {
                let msg = format!(
                    "{}: the server did not come back within {:.1} s ({e}); stopping",
                    self.shown,
                    self.timeouts.reconnect.as_secs_f64()
                );
                *self.dead.lock() = Some(msg.clone());
                return Err(StoreError::Backend(msg));
            }
            std::thread::sleep(backoff.min(end - now));
            backoff = (backoff * 2).min(Duration::from_millis(200));
        }
    }

    fn take(&self) -> RedisResult<Conn> {
        if let Some(c) = self.pool.lock().pop() {
            return Ok(c);
        }
        self.connect()
    }

    /// Addresses of the masters (the one server for a single target).
    fn masters(&self, c: &mut Conn) -> RedisResult<Vec<ConnectionInfo>> {
        match (&self.target, c) {
            (Target::Single(client), _) => Ok(vec![client.get_connection_info().clone()]),
            (Target::Cluster { seeds, .. }, c) => {
                let nodes: String = match c.query(::redis::cmd("CLUSTER").arg("NODES"))? {
                    RValue::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
                    RValue::VerbatimString { text, .. } => text,
                    other => {
                        return Err(RedisError::from((
                            ErrorKind::Parse,
                            "CLUSTER NODES",
                            format!("{other:?}"),
                        )))
                    }
                };
                let mut out = Vec::new();
                for line in nodes.lines() {
                    let f: Vec<&str> = line.split_whitespace().collect();
                    let (Some(addr), Some(flags)) = (f.get(1), f.get(2)) else { continue };
                    if !flags.split(',').any(|x| x == "master") || flags.contains("fail") {
                        continue;
                    }
                    let hp = addr.split('@').next().unwrap_or(addr);
                    let Some((host, port)) = hp.rsplit_once(':') else { continue };
                    let Ok(port) = port.parse::<u16>() else { continue };
                    out.push(seeds[0].clone().set_addr(ConnectionAddr::Tcp(host.to_owned(), port)));
                }
                Ok(out)
            }
        }
    }

    /// Every key matching `pattern` on every master (SCAN; keys of a namespace only).
    pub(crate) fn scan(&self, pattern: &str) -> Result<Vec<String>, StoreError> {
        let masters = self.run(|c| self.masters(c))?;
        let mut keys = Vec::new();
        for info in masters {
            let found = self.run(|_| {
                let client = Client::open(info.clone())?;
                let mut c = client.get_connection_with_timeout(self.timeouts.io)?;
                c.set_read_timeout(Some(self.timeouts.io))?;
                let mut cursor: u64 = 0;
                let mut found = Vec::new();
                loop {
                    let (next, batch): (u64, Vec<Vec<u8>>) = ::redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .query(&mut c)?;
                    found.extend(batch.into_iter().map(|k| String::from_utf8_lossy(&k).into_owned()));
                    if next == 0 {
                        return Ok(found);
                    }
                    cursor = next;
                }
            })?;
            keys.extend(found);
        }
        keys.sort_unstable();
        keys.dedup();
        Ok(keys)
    }

    /// A plain connection to the first (seed) node, for pub/sub.
    pub(crate) fn pubsub_connection(&self) -> RedisResult<::redis::Connection> {
        let c = match &self.target {
            Target::Single(client) => client.get_connection_with_timeout(self.timeouts.io)?,
            Target::Cluster { seeds, .. } => {
                Client::open(seeds[0].clone())?.get_connection_with_timeout(self.timeouts.io)?
            }
        };
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("redis://u:secret@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact("redis+cluster://:pw@a:1,b:2"), "redis+cluster://:***@a:1,b:2");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
    }

    #[test]
    fn refuses_tls_and_bad_urls() {
        let t = Timeouts { io: Duration::from_millis(200), reconnect: Duration::from_millis(200) };
        for (url, want) in [
            ("rediss://h:1", "TLS is not in this build"),
            ("mysql://h:1", "unknown scheme"),
            ("h:1", "expected redis://"),
        ] {
            match Redis::open(url, t) {
                Err(StoreError::Backend(m)) => assert!(m.contains(want) && m.contains(url), "{m}"),
                Err(e) => panic!("{url}: {e}"),
                Ok(_) => panic!("{url}: opened"),
            }
        }
    }
}
