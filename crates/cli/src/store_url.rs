//! `--store` values: `embedded`, `redis://[USER[:PASS]@]HOST:PORT[/DB]`, `rediss://…`,
//! `redis+cluster://H:P,H:P,…`. Parsing only; opening a backend is the caller's job.

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
}
