//! Tokenizer for filter expressions, following libpcap's scanner closely enough that the
//! same strings split into the same tokens (`1000-2000` is one word, `13:1` is three
//! tokens, `\tcp` is a plain name, `tcp-syn` is the number 2).

use crate::error::FilterError;
use crate::names;
use std::net::Ipv6Addr;

/// Keywords of the filter language.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kw {
    And,
    Or,
    Not,
    Src,
    Dst,
    Host,
    Net,
    Mask,
    Port,
    Portrange,
    Proto,
    Less,
    Greater,
    Broadcast,
    Multicast,
    Len,
    Vlan,
    /// A protocol name usable as a qualifier or alone (`ip`, `tcp`, `ether` ...).
    P(Pq),
    /// A libpcap keyword this crate does not implement (`gateway`, `mpls` ...).
    Unsupported,
}

/// Protocol qualifiers (`pname` in libpcap's grammar).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pq {
    Link,
    Ip,
    Ip6,
    Arp,
    Rarp,
    Tcp,
    Udp,
    Sctp,
    Icmp,
    Icmp6,
    Igmp,
    Igrp,
    Pim,
    Vrrp,
    Carp,
    Ah,
    Esp,
}

impl Pq {
    /// The keyword as written.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Pq::Link => "ether",
            Pq::Ip => "ip",
            Pq::Ip6 => "ip6",
            Pq::Arp => "arp",
            Pq::Rarp => "rarp",
            Pq::Tcp => "tcp",
            Pq::Udp => "udp",
            Pq::Sctp => "sctp",
            Pq::Icmp => "icmp",
            Pq::Icmp6 => "icmp6",
            Pq::Igmp => "igmp",
            Pq::Igrp => "igrp",
            Pq::Pim => "pim",
            Pq::Vrrp => "vrrp",
            Pq::Carp => "carp",
            Pq::Ah => "ah",
            Pq::Esp => "esp",
        }
    }
}

fn keyword(w: &str) -> Option<Kw> {
    Some(match w {
        "and" => Kw::And,
        "or" => Kw::Or,
        "not" => Kw::Not,
        "src" => Kw::Src,
        "dst" => Kw::Dst,
        "host" => Kw::Host,
        "net" => Kw::Net,
        "mask" => Kw::Mask,
        "port" => Kw::Port,
        "portrange" => Kw::Portrange,
        "proto" => Kw::Proto,
        "less" => Kw::Less,
        "greater" => Kw::Greater,
        "broadcast" => Kw::Broadcast,
        "multicast" => Kw::Multicast,
        "len" | "length" => Kw::Len,
        "vlan" => Kw::Vlan,
        "ether" | "link" | "ppp" | "slip" | "fddi" | "tr" | "wlan" => Kw::P(Pq::Link),
        "ip" => Kw::P(Pq::Ip),
        "ip6" => Kw::P(Pq::Ip6),
        "arp" => Kw::P(Pq::Arp),
        "rarp" => Kw::P(Pq::Rarp),
        "tcp" => Kw::P(Pq::Tcp),
        "udp" => Kw::P(Pq::Udp),
        "sctp" => Kw::P(Pq::Sctp),
        "icmp" => Kw::P(Pq::Icmp),
        "icmp6" => Kw::P(Pq::Icmp6),
        "igmp" => Kw::P(Pq::Igmp),
        "igrp" => Kw::P(Pq::Igrp),
        "pim" => Kw::P(Pq::Pim),
        "vrrp" => Kw::P(Pq::Vrrp),
        "carp" => Kw::P(Pq::Carp),
        "ah" => Kw::P(Pq::Ah),
        "esp" => Kw::P(Pq::Esp),
        "gateway" | "protochain" | "byte" | "inbound" | "outbound" | "ifindex" | "mpls" | "pppoed"
        | "pppoes" | "geneve" | "vxlan" | "atalk" | "aarp" | "decnet" | "lat" | "sca" | "moprc" | "mopdl"
        | "iso" | "esis" | "es-is" | "isis" | "is-is" | "clnp" | "stp" | "ipx" | "netbeui" | "radio"
        | "llc" | "batadv" | "type" | "subtype" | "dir" | "ra" | "ta" | "addr1" | "addr2" | "addr3"
        | "addr4" | "on" | "ifname" | "rnr" | "rulenum" | "srnr" | "subrulenum" | "reason" | "action"
        | "rset" | "ruleset" | "lane" | "metac" | "bcc" | "sc" | "ilmic" | "oamf4ec" | "oamf4sc" | "oam"
        | "oamf4" | "connectmsg" | "metaconnect" | "vpi" | "vci" | "fisu" | "lssu" | "msu" | "hfisu"
        | "hlssu" | "hmsu" | "sio" | "opc" | "dpc" | "sls" | "hsio" | "hopc" | "hdpc" | "hsls" | "l1"
        | "l2" | "iih" | "lsp" | "snp" | "csnp" | "psnp" => Kw::Unsupported,
        _ => return None,
    })
}

/// One token kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Tok {
    Kw(Kw),
    /// A number (decimal, `0x` hex, leading-zero octal, or a named constant).
    Num(u32),
    /// A dotted IPv4 address or prefix (`10.1` has 16 significant bits).
    Hid {
        addr: u32,
        bits: u8,
    },
    /// An IPv6 address.
    Hid6(Ipv6Addr),
    /// A MAC address.
    Eid([u8; 6]),
    /// Any other word (a name), including backslash-escaped keywords.
    Id(String),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Colon,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    Amp,
    Pipe,
    Caret,
    Shl,
    Shr,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Eof,
}

/// A token with its 1-based character column and source text.
#[derive(Clone, Debug)]
pub(crate) struct Token {
    pub tok: Tok,
    pub col: usize,
    pub text: String,
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-' || c == ':'
}

/// Parses a number the way libpcap does: `0x` hex, leading `0` octal, else decimal.
pub(crate) fn number(w: &str) -> Result<Option<u32>, String> {
    let (digits, radix) = if let Some(h) = w.strip_prefix("0x").or_else(|| w.strip_prefix("0X")) {
        if h.is_empty() || !h.chars().all(|c| c.is_ascii_hexdigit()) {
            return Ok(None);
        }
        (h, 16)
    } else if w.chars().all(|c| c.is_ascii_digit()) && !w.is_empty() {
        if w.len() > 1 && w.starts_with('0') {
            if !w.chars().all(|c| ('0'..='7').contains(&c)) {
                return Err(format!("number {w} contains non-octal digit"));
            }
            (&w[1..], 8)
        } else {
            (w, 10)
        }
    } else {
        return Ok(None);
    };
    u32::from_str_radix(digits, radix).map(Some).map_err(|_| format!("number {w} overflows 32 bits"))
}

fn hex_byte(s: &str) -> Option<u8> {
    if s.is_empty() || s.len() > 2 {
        return None;
    }
    u8::from_str_radix(s, 16).ok()
}

/// MAC address forms: `a:b:c:d:e:f`, `a-b-c-d-e-f`, `aabb.ccdd.eeff`, `aabbccddeeff`.
fn mac(w: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    for sep in [':', '-'] {
        let parts: Vec<&str> = w.split(sep).collect();
        if parts.len() == 6 {
            for (o, p) in out.iter_mut().zip(&parts) {
                *o = hex_byte(p)?;
            }
            return Some(out);
        }
    }
    let flat: String = if w.len() == 14 && w.as_bytes()[4] == b'.' && w.as_bytes()[9] == b'.' {
        w.split('.').collect()
    } else {
        w.to_string()
    };
    if flat.len() == 12 && flat.chars().all(|c| c.is_ascii_hexdigit()) {
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&flat[2 * i..2 * i + 2], 16).ok()?;
        }
        return Some(out);
    }
    None
}

/// Dotted IPv4 with 2 to 4 decimal parts.
fn dotted(w: &str) -> Option<Result<(u32, u8), String>> {
    let parts: Vec<&str> = w.split('.').collect();
    if parts.len() < 2 || parts.len() > 4 {
        return None;
    }
    if !parts.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit())) {
        return None;
    }
    let mut v: u32 = 0;
    for p in &parts {
        match p.parse::<u32>() {
            Ok(n) if n <= 255 => v = (v << 8) | n,
            _ => return Some(Err(format!("invalid IPv4 address '{w}'"))),
        }
    }
    Some(Ok((v, (parts.len() * 8) as u8)))
}

/// Splits `expr` into tokens (ending with [`Tok::Eof`]).
pub(crate) fn tokenize(expr: &str) -> Result<Vec<Token>, FilterError> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |col: usize, msg: String| FilterError::new(expr, col, msg);
    while i < chars.len() {
        let c = chars[i];
        let col = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let two: String = chars[i..chars.len().min(i + 2)].iter().collect();
        let punct2 = match two.as_str() {
            "&&" => Some(Tok::Kw(Kw::And)),
            "||" => Some(Tok::Kw(Kw::Or)),
            "<<" => Some(Tok::Shl),
            ">>" => Some(Tok::Shr),
            "<=" => Some(Tok::Le),
            ">=" => Some(Tok::Ge),
            "!=" => Some(Tok::Ne),
            "==" => Some(Tok::Eq),
            _ => None,
        };
        if let Some(t) = punct2 {
            out.push(Token { tok: t, col, text: two });
            i += 2;
            continue;
        }
        let punct1 = match c {
            '(' => Some(Tok::LParen),
            ')' => Some(Tok::RParen),
            '[' => Some(Tok::LBracket),
            ']' => Some(Tok::RBracket),
            '+' => Some(Tok::Plus),
            '-' => Some(Tok::Minus),
            '*' => Some(Tok::Star),
            '/' => Some(Tok::Slash),
            '%' => Some(Tok::Percent),
            '&' => Some(Tok::Amp),
            '|' => Some(Tok::Pipe),
            '^' => Some(Tok::Caret),
            '=' => Some(Tok::Eq),
            '<' => Some(Tok::Lt),
            '>' => Some(Tok::Gt),
            '!' => Some(Tok::Kw(Kw::Not)),
            _ => None,
        };
        // A colon starts a word only as the beginning of an IPv6 address ("::1").
        let colon_word = c == ':' && chars.get(i + 1) == Some(&':');
        if let Some(t) = punct1 {
            out.push(Token { tok: t, col, text: c.to_string() });
            i += 1;
            continue;
        }
        if c == '\\' {
            let start = i + 1;
            let mut j = start;
            while j < chars.len() && !chars[j].is_whitespace() && !matches!(chars[j], '!' | '(' | ')') {
                j += 1;
            }
            if j == start {
                return Err(err(col, "expected a name after '\\'".into()));
            }
            let w: String = chars[start..j].iter().collect();
            out.push(Token { tok: Tok::Id(w.clone()), col, text: format!("\\{w}") });
            i = j;
            continue;
        }
        if c == ':' && !colon_word {
            out.push(Token { tok: Tok::Colon, col, text: ":".into() });
            i += 1;
            continue;
        }
        if !(c.is_ascii_alphanumeric() || c == '_' || colon_word) {
            return Err(err(col, format!("unexpected character '{c}'")));
        }
        let mut j = i;
        while j < chars.len() && is_word_char(chars[j]) {
            j += 1;
        }
        let full: String = chars[i..j].iter().collect();
        let mut word = full.clone();
        if full.contains(':') {
            if let Ok(a) = full.parse::<Ipv6Addr>() {
                out.push(Token { tok: Tok::Hid6(a), col, text: full });
                i = j;
                continue;
            }
            if let Some(m) = mac(&full) {
                out.push(Token { tok: Tok::Eid(m), col, text: full });
                i = j;
                continue;
            }
            let cut = full.find(':').unwrap_or(full.len());
            if cut == 0 {
                return Err(err(col, format!("invalid address '{full}'")));
            }
            word = full[..cut].to_string();
        }
        // Words never end in '-' (libpcap's ID pattern); give trailing dashes back.
        while word.len() > 1 && word.ends_with('-') {
            word.pop();
        }
        i += word.chars().count();
        let tok = if let Some(k) = keyword(&word) {
            Tok::Kw(k)
        } else if let Some(v) = names::constant(&word) {
            Tok::Num(v)
        } else if let Some(m) = mac(&word) {
            Tok::Eid(m)
        } else {
            match number(&word) {
                Err(m) => return Err(err(col, m)),
                Ok(Some(v)) => Tok::Num(v),
                Ok(None) => match dotted(&word) {
                    Some(Ok((addr, bits))) => Tok::Hid { addr, bits },
                    Some(Err(m)) => return Err(err(col, m)),
                    None => Tok::Id(word.clone()),
                },
            }
        };
        out.push(Token { tok, col, text: word });
    }
    out.push(Token { tok: Tok::Eof, col: chars.len() + 1, text: String::new() });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Tok> {
        tokenize(s).unwrap().into_iter().map(|t| t.tok).filter(|t| *t != Tok::Eof).collect()
    }

    #[test]
    fn words_split_like_libpcap() {
        assert_eq!(toks("1000-2000"), vec![Tok::Id("1000-2000".into())]);
        assert_eq!(
            toks("tcp[13:1]"),
            vec![
                Tok::Kw(Kw::P(Pq::Tcp)),
                Tok::LBracket,
                Tok::Num(13),
                Tok::Colon,
                Tok::Num(1),
                Tok::RBracket
            ]
        );
        assert_eq!(toks("tcp-syn|tcp-ack"), vec![Tok::Num(2), Tok::Pipe, Tok::Num(16)]);
        assert_eq!(toks("\\tcp"), vec![Tok::Id("tcp".into())]);
        assert_eq!(toks("0x1F 017 9"), vec![Tok::Num(31), Tok::Num(15), Tok::Num(9)]);
        assert_eq!(toks("10.1"), vec![Tok::Hid { addr: 0x0a01, bits: 16 }]);
        assert_eq!(toks("::1"), vec![Tok::Hid6(Ipv6Addr::LOCALHOST)]);
        let mac = [0, 0x11, 0x22, 0x33, 0x44, 0x55];
        for m in
            ["00:11:22:33:44:55", "0:11:22:33:44:55", "00-11-22-33-44-55", "0011.2233.4455", "001122334455"]
        {
            assert_eq!(toks(m), vec![Tok::Eid(mac)], "{m}");
        }
        assert_eq!(
            toks("a&&b||!c"),
            vec![
                Tok::Id("a".into()),
                Tok::Kw(Kw::And),
                Tok::Id("b".into()),
                Tok::Kw(Kw::Or),
                Tok::Kw(Kw::Not),
                Tok::Id("c".into())
            ]
        );
        assert_eq!(
            toks("<= >= != == < > = << >>"),
            vec![Tok::Le, Tok::Ge, Tok::Ne, Tok::Eq, Tok::Lt, Tok::Gt, Tok::Eq, Tok::Shl, Tok::Shr]
        );
    }

    #[test]
    fn bad_numbers_are_errors() {
        assert!(tokenize("08").is_err());
        assert!(tokenize("4294967296").is_err());
        assert!(tokenize("1.2.3.300").is_err());
        assert!(tokenize("$").is_err());
    }
}
