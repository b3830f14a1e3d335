//! Small address helpers shared by the NFs: CIDR prefixes and key encodings.

use std::net::IpAddr;

/// An IPv4 or IPv6 prefix such as `10.0.0.0/8`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

impl Cidr {
    /// Parses `ADDR/LEN` or a bare address (a host prefix).
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a.trim().parse().map_err(|_| format!("`{s}` is not an address or CIDR prefix"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match l {
            Some(l) => l
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|&n| n <= max)
                .ok_or_else(|| format!("`{s}`: prefix length must be 0..={max}"))?,
            None => max,
        };
        Ok(Cidr { addr, len })
    }

    /// True when `ip` lies in the prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = if self.len == 0 { 0 } else { u32::MAX << (32 - u32::from(self.len)) };
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = if self.len == 0 { 0 } else { u128::MAX << (128 - u32::from(self.len)) };
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// A stack-allocated key under construction (at most 48 bytes), so NFs build store keys
/// without allocating per packet.
#[derive(Clone, Copy, Debug)]
pub struct KeyBuf {
    len: u8,
    buf: [u8; 48],
}

impl Default for KeyBuf {
    fn default() -> Self {
        KeyBuf { len: 0, buf: [0; 48] }
    }
}

impl KeyBuf {
    /// An empty key.
    pub fn new() -> KeyBuf {
        KeyBuf::default()
    }

    /// Appends bytes (silently capped at 48 bytes; the NFs' keys are at most 39).
    pub fn push(&mut self, b: &[u8]) -> &mut KeyBuf {
        let start = usize::from(self.len);
        let end = (start + b.len()).min(self.buf.len());
        self.buf[start..end].copy_from_slice(&b[..end - start]);
        self.len = end as u8;
        self
    }

    /// Appends an address as family tag + octets (the [`ip_key`] encoding).
    pub fn ip(&mut self, ip: IpAddr) -> &mut KeyBuf {
        match ip {
            IpAddr::V4(a) => self.push(&[4]).push(&a.octets()),
            IpAddr::V6(a) => self.push(&[6]).push(&a.octets()),
        }
    }

    /// Appends a big-endian u16.
    pub fn u16(&mut self, v: u16) -> &mut KeyBuf {
        self.push(&v.to_be_bytes())
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }
}

/// Key bytes of an address: family tag + octets.
pub fn ip_key(ip: IpAddr) -> Vec<u8> {
    let mut k = KeyBuf::new();
    k.ip(ip);
    k.as_bytes().to_vec()
}

/// Inverse of [`ip_key`].
pub fn ip_from_key(b: &[u8]) -> Option<IpAddr> {
    match b.first()? {
        4 => {
            let o: [u8; 4] = b.get(1..5)?.try_into().ok()?;
            Some(IpAddr::from(o))
        }
        6 => {
            let o: [u8; 16] = b.get(1..17)?.try_into().ok()?;
            Some(IpAddr::from(o))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_contains() {
        let c = Cidr::parse("10.0.0.0/8").expect("cidr");
        assert!(c.contains("10.200.1.1".parse().expect("ip")));
        assert!(!c.contains("11.0.0.1".parse().expect("ip")));
        assert!(!c.contains("::1".parse().expect("ip")));
        let h = Cidr::parse("198.18.0.1").expect("host");
        assert!(h.contains("198.18.0.1".parse().expect("ip")));
        assert!(!h.contains("198.18.0.2".parse().expect("ip")));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("ten").is_err());
        let v6 = Cidr::parse("fd00::/8").expect("v6");
        assert!(v6.contains("fd12::1".parse().expect("ip")));
    }

    #[test]
    fn keybuf_matches_ip_key() {
        let ip: IpAddr = "2001:db8::7".parse().expect("ip");
        let mut k = KeyBuf::new();
        k.ip(ip).u16(80);
        // Family tag, the 16 address octets, then the big-endian port.
        let mut want = vec![6, 0x20, 0x01, 0x0d, 0xb8];
        want.extend_from_slice(&[0; 11]);
        want.extend_from_slice(&[7, 0, 80]);
        assert_eq!(k.as_bytes(), &want[..]);
        assert_eq!(ip_key("10.1.2.3".parse().expect("ip")), vec![4, 10, 1, 2, 3]);
    }

    #[test]
    fn ip_key_roundtrip() {
        for s in ["1.2.3.4", "2001:db8::1"] {
            let ip: IpAddr = s.parse().expect("ip");
            assert_eq!(ip_from_key(&ip_key(ip)), Some(ip));
        }
        assert_eq!(ip_from_key(&[9, 1]), None);
    }
}
