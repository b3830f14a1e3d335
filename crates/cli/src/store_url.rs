//! `--store` values: `embedded`, `redis://[USER[:PASS]@]HOST:PORT[/DB]`, `rediss://…`,
//! `redis+cluster://[USER[:PASS]@]H:P,H:P,…`: parsing, and opening the Redis backend of one
//! run ([`open_redis`]) under a namespace of its own ([`run_namespace`]).

/// A parsed `--store` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreUrl {
    /// The in-process store.
    Embedded,
    /// One Redis server.
    Redis {
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// TLS (`rediss://`).
        tls: bool,
    },
    /// A Redis Cluster given by seed nodes.
    Cluster(Vec<(String, u16)>),
}

fn host_port(s: &str, url: &str) -> Result<(String, u16), String> {
    let (host, port) = s.rsplit_once(':').ok_or_else(|| format!("--store {url}: `{s}` needs HOST:PORT"))?;
    if host.is_empty() {
        return Err(format!("--store {url}: empty host in `{s}`"));
    }
    let port: u16 = port
        .parse()
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| format!("--store {url}: bad port `{port}` in `{s}` (1..=65535)"))?;
    Ok((host.trim_matches(['[', ']']).to_string(), port))
}

impl StoreUrl {
    /// Parses a `--store` value.
    pub fn parse(url: &str) -> Result<StoreUrl, String> {
        if url == "embedded" {
            return Ok(StoreUrl::Embedded);
        }
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            format!("--store {url}: expected embedded, redis://HOST:PORT or redis+cluster://H:P,H:P")
        })?;
        let rest = rest.rsplit_once('@').map(|(_, r)| r).unwrap_or(rest);
        let rest = rest.split_once('/').map(|(r, _)| r).unwrap_or(rest);
        match scheme {
            "redis" | "rediss" => {
                let (host, port) = host_port(rest, url)?;
                Ok(StoreUrl::Redis { host, port, tls: scheme == "rediss" })
            }
            "redis+cluster" | "rediss+cluster" => {
                let nodes =
                    rest.split(',').map(|n| host_port(n.trim(), url)).collect::<Result<Vec<_>, _>>()?;
                Ok(StoreUrl::Cluster(nodes))
            }
            other => Err(format!(
                "--store {url}: unknown scheme `{other}` (use embedded, redis, rediss or redis+cluster)"
            )),
        }
    }
}

/// The Redis namespace of one run of chain `chain`: the chain name (characters outside
/// `A-Z a-z 0-9 _ . -` replaced by `_`, at most 32) plus the process id and start time, so
/// two runs (of the same or different chains) on one Redis never see each other's state.
pub fn run_namespace(chain: &str) -> String {
    let name: String = chain
        .chars()
        .take(32)
        .map(|c| if c.is_ascii_alphanumeric() || "_.-".contains(c) { c } else { '_' })
        .collect();
    let name = if name.is_empty() { "chain".to_string() } else { name };
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("{name}.{}.{t}", std::process::id())
}

/// Opens the Redis backend for one run of `chain` on `url` (the raw `--store` value). The
/// run's namespace is deleted when the store is dropped. Errors name the URL.
pub fn open_redis(url: &str, chain: &str) -> Result<streamnf_store::RedisStore, String> {
    let opts = streamnf_store::RedisOptions { drop_namespace_on_drop: true, ..Default::default() };
    streamnf_store::RedisStore::open(url, &run_namespace(chain), opts).map_err(|e| match e {
        streamnf_store::StoreError::Backend(m) => format!("--store {m}"),
        other => format!("--store {url}: {other}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_store_urls() {
        assert_eq!(StoreUrl::parse("embedded"), Ok(StoreUrl::Embedded));
        assert_eq!(
            StoreUrl::parse("redis://u:p@127.0.0.1:6380/0"),
            Ok(StoreUrl::Redis { host: "127.0.0.1".into(), port: 6380, tls: false })
        );
        assert_eq!(
            StoreUrl::parse("redis+cluster://a:1,b:2"),
            Ok(StoreUrl::Cluster(vec![("a".into(), 1), ("b".into(), 2)]))
        );
        for bad in
            ["redis://host", "redis://:1", "redis://h:0", "redis://h:99999", "mysql://h:1", "localhost:6379"]
        {
            let e = StoreUrl::parse(bad).expect_err(bad);
            assert!(e.contains(bad), "error names the URL: {e}");
        }
    }

    #[test]
    fn namespaces_are_valid_and_distinct() {
        for chain in ["figure1", "my chain/{x}*", "", &"long".repeat(40)] {
            let ns = run_namespace(chain);
            assert!(streamnf_store::redis::valid_namespace(&ns), "{chain:?} -> {ns}");
        }
        assert!(run_namespace("figure1").starts_with("figure1."));
        assert!(run_namespace("a b").starts_with("a_b."));
    }

    #[test]
    fn tls_gets_one_clear_error() {
        let e = open_redis("rediss://127.0.0.1:6380", "c").expect_err("no TLS");
        assert!(e.contains("rediss://127.0.0.1:6380") && e.contains("TLS is not in this build"), "{e}");
    }
}
