//! Traffic models: regular TCP/UDP flows, SYN scanners and trojan hosts.

use crate::actor::{Actor, Event, Fill, Msg, Role, StreamKind, UrlKey};
use crate::frame::{Conv, Dir, Ip, ACK, RST, SYN};
use crate::rng::Rng;
use crate::{GenConfig, TROJAN_DECOY_BASE, TROJAN_HOST_BASE};

/// Address of the trojans' SSH attacker.
pub(crate) const ATTACKER: [u8; 4] = [203, 0, 113, 200];
/// Web server the trojans download their first stage from.
pub(crate) const DROPPER_WEB: [u8; 4] = [203, 0, 113, 201];
/// FTP server the trojans fetch their payloads from.
pub(crate) const DROPPER_FTP: [u8; 4] = [203, 0, 113, 202];
/// IRC command-and-control server.
pub(crate) const IRC_C2: [u8; 4] = [203, 0, 113, 203];

const EPHEMERAL_LO: u32 = 32768;
const EPHEMERAL_COUNT: u32 = 60999 - 32768 + 1;

const USER_AGENTS: [&str; 4] = [
    "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
    "curl/8.5.0",
    "Wget/1.21.4",
];
const SECTIONS: [&str; 8] = ["news", "img", "static", "blog", "shop", "api", "video", "docs"];
const WORDS: [&str; 8] = ["index", "article", "photo", "style", "app", "item", "post", "page"];
const EXTS: [&str; 8] = ["html", "html", "html", "css", "js", "png", "jpg", "json"];

/// URI path of pool URL `k` (deterministic, unique per `k`).
pub(crate) fn pool_path(k: u32) -> String {
    let k = k as usize;
    format!("/{}/{}{}.{}", SECTIONS[k % 8], WORDS[(k / 8) % 8], k, EXTS[(k / 3 + k) % 8])
}

/// Progress of one SYN scanner.
#[derive(Debug)]
pub(crate) struct ScanState {
    ip: [u8; 4],
    sport: u16,
    mul: u64,
    add: u64,
    next: u64,
    total: u64,
    targets: u64,
}

/// Progress of one trojan-infected (or decoy) host.
#[derive(Debug)]
pub(crate) struct TrojanState {
    host: [u8; 4],
    /// Step numbers (0 = SSH, 1 = HTTP, 2 = FTP, 3 = IRC) in execution order.
    order: [u8; 4],
    step: usize,
    tag: String,
}

/// Shared generation context (everything except the actor list).
#[derive(Debug)]
pub(crate) struct Ctx {
    pub rng: Rng,
    pub cfg: GenConfig,
    url_cdf: Vec<f64>,
    port_counter: u32,
    target_per_flow: f64,
    n_clients: u64,
    /// Estimated packets of scanner and trojan traffic.
    pub special_est: u64,
    pub scratch: Vec<u8>,
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

fn v6_internal(a: [u8; 4]) -> Ip {
    Ip::V6([0xfd, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, a[0], a[1], a[2], a[3]])
}

fn v6_external(a: [u8; 4]) -> Ip {
    Ip::V6([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, a[0], a[1], a[2], a[3]])
}

impl Ctx {
    pub(crate) fn new(cfg: GenConfig) -> Ctx {
        let mut rng = Rng::new(cfg.seed);
        let pool = if cfg.http_fraction > 0.0 { cfg.url_pool as usize } else { 0 };
        let mut url_cdf = Vec::with_capacity(pool);
        let mut acc = 0.0f64;
        for i in 0..pool {
            acc += 1.0 / (i as f64 + 1.0);
            url_cdf.push(acc);
        }
        let mut special = 0u64;
        if let Some(s) = &cfg.scan {
            special = special.saturating_add(
                u64::from(s.scanners)
                    .saturating_mul(u64::from(s.targets))
                    .saturating_mul(u64::from(s.ports_per_scanner))
                    .saturating_mul(2),
            );
        }
        if let Some(t) = &cfg.trojan {
            special = special.saturating_add(u64::from(t.hosts + t.decoys) * 150);
        }
        let regular = cfg.packets.saturating_sub(special).max(cfg.packets / 2);
        let target_per_flow = (regular as f64 / f64::from(cfg.flows.max(1))).clamp(4.0, 1.0e7);
        let n_clients = (u64::from(cfg.flows) / 2).clamp(16, 254 * 254);
        let port_counter = rng.below(u64::from(EPHEMERAL_COUNT)) as u32;
        Ctx {
            rng,
            cfg,
            url_cdf,
            port_counter,
            target_per_flow,
            n_clients,
            special_est: special,
            scratch: Vec::with_capacity(2048),
        }
    }

    /// Internal client address number `idx` (third octet 1..=254).
    pub(crate) fn client_v4(&self, idx: u64) -> [u8; 4] {
        let n = self.cfg.internal_net;
        [n[0], n[1], 1 + (idx / 254) as u8, 1 + (idx % 254) as u8]
    }

    /// Next ephemeral port (sequential, so concurrent 5-tuples never collide).
    fn next_port(&mut self) -> u16 {
        self.port_counter = (self.port_counter + 1) % EPHEMERAL_COUNT;
        (EPHEMERAL_LO + self.port_counter) as u16
    }

    /// Index in `0..n` skewed towards small values (popular servers).
    fn skewed(&mut self, n: u64) -> u64 {
        let r = self.rng.f64();
        ((r * r * r * n as f64) as u64).min(n - 1)
    }

    /// Packet budget of a new regular flow: mean `target_per_flow`, with a
    /// mix of many small flows and a few elephants.
    fn draw_budget(&mut self) -> u64 {
        let x = if self.rng.chance(0.8) { 0.1 + 0.5 * self.rng.f64() } else { 0.5 + 6.2 * self.rng.f64() };
        (self.target_per_flow * x) as u64
    }

    fn pick_url(&mut self) -> (String, UrlKey, &'static str) {
        let total = *self.url_cdf.last().expect("non-empty url pool");
        let u = self.rng.f64() * total;
        let k = self.url_cdf.partition_point(|&c| c <= u).min(self.url_cdf.len() - 1) as u32;
        let path = pool_path(k);
        let ext = EXTS[(k as usize / 3 + k as usize) % 8];
        if self.rng.chance(self.cfg.xss_fraction) {
            (format!("{path}?q=<script>alert({k})</script>"), UrlKey::Xss(k), ext)
        } else {
            (path, UrlKey::Pool(k), ext)
        }
    }

    /// Creates a new regular TCP or UDP flow.
    pub(crate) fn new_regular(&mut self) -> Actor {
        let mut a = Actor::new(Role::Regular);
        let budget = self.draw_budget();
        let v6 = self.rng.chance(self.cfg.ipv6_fraction);
        let ci = self.rng.below(self.n_clients);
        let c4 = self.client_v4(ci);
        let client = if v6 { v6_internal(c4) } else { Ip::V4(c4) };
        let ext = |a: [u8; 4]| if v6 { v6_external(a) } else { Ip::V4(a) };
        if self.rng.chance(self.cfg.udp_fraction) {
            self.udp_flow(&mut a, budget, client, v6, ext);
        } else if self.rng.chance(self.cfg.http_fraction) && !self.url_cdf.is_empty() {
            let k = self.skewed(u64::from(self.cfg.http_servers));
            let server = ext([192, 0, 2, 1 + k as u8]);
            self.http_flow(&mut a, budget, client, server, &format!("www.site{k}.example"), v6);
        } else {
            let k = self.skewed(200);
            self.tcp_flow(&mut a, budget, client, ext([198, 51, 100, 1 + k as u8]), v6);
        }
        a
    }

    fn http_response(&mut self, ext: &str, budget: u64) -> Msg {
        let segs = (budget.saturating_sub(2) * 2 / 3).max(1);
        let (status, body_len) = if self.rng.chance(0.03) {
            ("404 Not Found", self.rng.range(150, 400))
        } else {
            let fit = (segs * 1460).saturating_sub(self.rng.range(200, 900));
            ("200 OK", fit.max(self.rng.range(80, 900)))
        };
        let (ct, fill) = match ext {
            "css" => ("text/css", Fill::Text),
            "js" => ("application/javascript", Fill::Text),
            "png" => ("image/png", Fill::Binary(self.rng.next_u64())),
            "jpg" => ("image/jpeg", Fill::Binary(self.rng.next_u64())),
            "json" => ("application/json", Fill::Text),
            _ => ("text/html; charset=utf-8", Fill::Text),
        };
        let head = format!(
            "HTTP/1.1 {status}\r\nServer: nginx/1.24.0\r\nContent-Type: {ct}\r\nContent-Length: {body_len}\r\nConnection: keep-alive\r\n\r\n"
        );
        Msg::with_body(head, body_len as usize, fill)
    }

    fn http_flow(&mut self, a: &mut Actor, budget: u64, client: Ip, server: Ip, host: &str, v6: bool) {
        let cport = self.next_port();
        let c = a.add_conv(Conv::new(&mut self.rng, client, cport, true, server, 80, false));
        a.handshake(c, Some(Event::TcpStart { v6 }));
        let rounds = 1 + self.rng.below(1 + (budget / 40).min(4));
        let per = budget.saturating_sub(6) / rounds;
        let ua = self.rng.pick(&USER_AGENTS);
        for _ in 0..rounds {
            let (uri, key, ext) = self.pick_url();
            let req = format!(
                "GET {uri} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {ua}\r\nAccept: */*\r\nAccept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\n\r\n"
            );
            a.send(c, Dir::C2S, Msg::bytes(req), Some(Event::Http(key)));
            let resp = self.http_response(ext, per);
            a.send(c, Dir::S2C, resp, None);
        }
        a.close(c, &mut self.rng);
    }

    /// Non-HTTP TCP: TLS-like (443/993), SSH (22) or SMTP (25).
    fn tcp_flow(&mut self, a: &mut Actor, budget: u64, client: Ip, server: Ip, v6: bool) {
        let port = match self.rng.below(10) {
            0..=5 => 443,
            6 => 22,
            7 => 25,
            _ => 993,
        };
        let cport = self.next_port();
        let c = a.add_conv(Conv::new(&mut self.rng, client, cport, true, server, port, false));
        a.handshake(c, Some(Event::TcpStart { v6 }));
        let rounds = 1 + self.rng.below(1 + (budget / 30).min(6));
        let per = budget.saturating_sub(6) / rounds;
        let big = ((per.saturating_sub(2) * 2 / 3).max(1) * 1460).saturating_sub(self.rng.range(0, 700));
        let big = big.max(self.rng.range(60, 1400)) as usize;
        match port {
            22 => {
                a.send(c, Dir::S2C, Msg::bytes(&b"SSH-2.0-OpenSSH_9.6p1 Debian-4\r\n"[..]), None);
                a.send(c, Dir::C2S, Msg::bytes(&b"SSH-2.0-OpenSSH_9.2p1\r\n"[..]), None);
                for _ in 0..rounds {
                    let req = self.rng.range(36, 400) as usize;
                    a.send(
                        c,
                        Dir::C2S,
                        Msg::with_body(Vec::new(), req, Fill::Binary(self.rng.next_u64())),
                        None,
                    );
                    a.send(
                        c,
                        Dir::S2C,
                        Msg::with_body(Vec::new(), big, Fill::Binary(self.rng.next_u64())),
                        None,
                    );
                }
            }
            25 => {
                let s = |t: &str| Msg::bytes(t.as_bytes().to_vec());
                a.send(c, Dir::S2C, s("220 mail.example.net ESMTP Postfix\r\n"), None);
                a.send(c, Dir::C2S, s("EHLO client.example.org\r\n"), None);
                a.send(c, Dir::S2C, s("250-mail.example.net\r\n250-SIZE 10240000\r\n250 8BITMIME\r\n"), None);
                a.send(c, Dir::C2S, s("MAIL FROM:<alice@example.org>\r\n"), None);
                a.send(c, Dir::S2C, s("250 2.1.0 Ok\r\n"), None);
                a.send(c, Dir::C2S, s("RCPT TO:<bob@example.net>\r\n"), None);
                a.send(c, Dir::S2C, s("250 2.1.5 Ok\r\n"), None);
                a.send(c, Dir::C2S, s("DATA\r\n"), None);
                a.send(c, Dir::S2C, s("354 End data with <CR><LF>.<CR><LF>\r\n"), None);
                let head = b"Subject: synthetic\r\nFrom: alice@example.org\r\n\r\n".to_vec();
                a.send(c, Dir::C2S, Msg::with_body(head, big, Fill::Text), None);
                a.send(c, Dir::C2S, s("\r\n.\r\n"), None);
                a.send(c, Dir::S2C, s("250 2.0.0 Ok: queued\r\n"), None);
                a.send(c, Dir::C2S, s("QUIT\r\n"), None);
                a.send(c, Dir::S2C, s("221 2.0.0 Bye\r\n"), None);
            }
            _ => {
                for r in 0..rounds {
                    let (ct, st) = if r == 0 { (0x16u8, 0x16u8) } else { (0x17, 0x17) };
                    let req = self.rng.range(40, 600) as usize;
                    let mut h = vec![ct, 3, 1];
                    h.extend_from_slice(&(req as u16).to_be_bytes());
                    a.send(c, Dir::C2S, Msg::with_body(h, req, Fill::Binary(self.rng.next_u64())), None);
                    let mut h = vec![st, 3, 3];
                    h.extend_from_slice(&(big.min(16384) as u16).to_be_bytes());
                    a.send(c, Dir::S2C, Msg::with_body(h, big, Fill::Binary(self.rng.next_u64())), None);
                }
            }
        }
        a.close(c, &mut self.rng);
    }

    fn udp_flow(&mut self, a: &mut Actor, budget: u64, client: Ip, v6: bool, ext: impl Fn([u8; 4]) -> Ip) {
        let cport = self.next_port();
        let r = self.rng.below(10);
        if r < 7 {
            // DNS query / response.
            let resolver = if self.rng.chance(0.5) { [192, 0, 2, 53] } else { [198, 51, 100, 53] };
            let c = a.add_conv(Conv::new(&mut self.rng, client, cport, true, ext(resolver), 53, false));
            let id = self.rng.below(65536) as u16;
            let site = self.skewed(1000);
            let mut q = Vec::with_capacity(64);
            q.extend_from_slice(&id.to_be_bytes());
            q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
            for label in ["www", &format!("site{site}"), "example"] {
                q.push(label.len() as u8);
                q.extend_from_slice(label.as_bytes());
            }
            let qtype: u16 = if v6 { 28 } else { 1 };
            q.push(0);
            q.extend_from_slice(&qtype.to_be_bytes());
            q.extend_from_slice(&[0, 1]);
            let mut resp = q.clone();
            resp[2] = 0x81;
            resp[3] = 0x80;
            resp[7] = 1; // ANCOUNT
            resp.extend_from_slice(&[0xc0, 0x0c]);
            resp.extend_from_slice(&qtype.to_be_bytes());
            resp.extend_from_slice(&[0, 1, 0, 0, 0x0e, 0x10]);
            let addr = [192, 0, 2, 1 + (site % 200) as u8];
            if v6 {
                resp.extend_from_slice(&[0, 16, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0]);
            } else {
                resp.extend_from_slice(&[0, 4]);
            }
            resp.extend_from_slice(&addr);
            a.datagram(c, Dir::C2S, Msg::bytes(q), Some(Event::UdpStart { v6, dns: true }));
            if self.rng.chance(0.97) {
                a.datagram(c, Dir::S2C, Msg::bytes(resp), None);
            }
        } else if r < 8 || budget < 6 {
            // NTP.
            let k = self.skewed(200);
            let c = a.add_conv(Conv::new(
                &mut self.rng,
                client,
                cport,
                true,
                ext([198, 51, 100, 1 + k as u8]),
                123,
                false,
            ));
            let mut req = vec![0u8; 48];
            req[0] = 0x23;
            let mut resp = vec![0u8; 48];
            resp[0] = 0x24;
            resp[1] = 2;
            a.datagram(c, Dir::C2S, Msg::bytes(req), Some(Event::UdpStart { v6, dns: false }));
            a.datagram(c, Dir::S2C, Msg::bytes(resp), None);
        } else {
            let (port, kind) =
                if self.rng.chance(0.5) { (443, StreamKind::Quic) } else { (5004, StreamKind::Rtp) };
            let k = self.skewed(200);
            let c = a.add_conv(Conv::new(
                &mut self.rng,
                client,
                cport,
                true,
                ext([198, 51, 100, 1 + k as u8]),
                port,
                false,
            ));
            let mut hello = vec![0xc0, 0, 0, 0, 1];
            if port == 5004 {
                hello = vec![0x80, 96, 0, 0];
            }
            let salt = self.rng.next_u64();
            a.datagram(
                c,
                Dir::C2S,
                Msg::with_body(hello, 200, Fill::Binary(salt)),
                Some(Event::UdpStart { v6, dns: false }),
            );
            a.ops.push_back(crate::actor::Op::UdpStream {
                conv: c,
                kind,
                remaining: budget.saturating_sub(1).max(1),
                seq: 1,
            });
        }
    }

    /// Scanner actor number `i`.
    pub(crate) fn new_scanner(&mut self, i: u32) -> Actor {
        let s = self.cfg.scan.clone().expect("scan configured");
        let mut mul;
        loop {
            mul = self.rng.range(1, 65534);
            if gcd(mul, 65535) == 1 {
                break;
            }
        }
        let st = ScanState {
            ip: scanner_ip(i),
            sport: self.rng.range(40000, 65000) as u16,
            mul,
            add: self.rng.below(65535),
            next: 0,
            total: u64::from(s.ports_per_scanner) * u64::from(s.targets),
            targets: u64::from(s.targets),
        };
        Actor::new(Role::Scanner(st))
    }

    /// Trojan (or decoy) host actor.
    pub(crate) fn new_trojan(&mut self, i: u32, decoy: bool) -> Actor {
        let n = self.cfg.internal_net;
        let (host, order, tag) = if decoy {
            let mut order = [0u8, 1, 2, 3];
            while order == [0, 1, 2, 3] {
                for j in (1..4).rev() {
                    order.swap(j, self.rng.index(j + 1));
                }
            }
            ([n[0], n[1], 0, TROJAN_DECOY_BASE + i as u8], order, format!("d{i}"))
        } else {
            ([n[0], n[1], 0, TROJAN_HOST_BASE + i as u8], [0, 1, 2, 3], format!("t{i}"))
        };
        Actor::new(Role::Trojan(TrojanState { host, order, step: 0, tag }))
    }

    /// Scripts more work for a scanner or trojan actor (whose conversation
    /// list has just been cleared). Returns `false` when the actor is done.
    pub(crate) fn refill(&mut self, a: &mut Actor) -> bool {
        match &mut a.role {
            Role::Regular => false,
            Role::Scanner(st) => {
                if st.next >= st.total {
                    return false;
                }
                let j = st.next / st.targets;
                let t = st.next % st.targets;
                st.next += 1;
                let port = ((j * st.mul + st.add) % 65535 + 1) as u16;
                let (ip, sport) = (st.ip, st.sport);
                let target = self.client_v4(t);
                let mut conv = Conv::new(&mut self.rng, Ip::V4(ip), sport, false, Ip::V4(target), port, true);
                conv.ep[0].win = 1024;
                let c = a.add_conv(conv);
                a.ctl(c, Dir::C2S, SYN, Some(Event::ScanProbe));
                let open = self.cfg.scan.as_ref().map_or(0.0, |s| s.open_fraction);
                if self.rng.chance(open) {
                    a.ctl(c, Dir::S2C, SYN | ACK, Some(Event::ScanOpen));
                    a.ctl(c, Dir::C2S, RST, None);
                } else {
                    a.ctl(c, Dir::S2C, RST | ACK, None);
                }
                true
            }
            Role::Trojan(st) => {
                if st.step >= 4 {
                    return false;
                }
                let step = st.order[st.step];
                st.step += 1;
                let (host, tag) = (st.host, st.tag.clone());
                match step {
                    0 => self.trojan_ssh(a, host),
                    1 => self.trojan_http(a, host, &tag),
                    2 => self.trojan_ftp(a, host, &tag),
                    _ => self.trojan_irc(a, host, &tag),
                }
                true
            }
        }
    }

    fn trojan_conv(
        &mut self,
        a: &mut Actor,
        client: [u8; 4],
        server: [u8; 4],
        sport: u16,
        client_internal: bool,
    ) -> usize {
        let cport = self.next_port();
        let conv = Conv::new(
            &mut self.rng,
            Ip::V4(client),
            cport,
            client_internal,
            Ip::V4(server),
            sport,
            !client_internal,
        );
        let c = a.add_conv(conv);
        a.handshake(c, Some(Event::TrojanConn));
        c
    }

    fn trojan_ssh(&mut self, a: &mut Actor, host: [u8; 4]) {
        let c = self.trojan_conv(a, ATTACKER, host, 22, false);
        a.send(c, Dir::S2C, Msg::bytes(&b"SSH-2.0-OpenSSH_7.4\r\n"[..]), None);
        a.send(c, Dir::C2S, Msg::bytes(&b"SSH-2.0-libssh2_1.10.0\r\n"[..]), None);
        for _ in 0..3 {
            let n = self.rng.range(200, 1500) as usize;
            a.send(c, Dir::C2S, Msg::with_body(Vec::new(), n, Fill::Binary(self.rng.next_u64())), None);
            let n = self.rng.range(200, 1500) as usize;
            a.send(c, Dir::S2C, Msg::with_body(Vec::new(), n, Fill::Binary(self.rng.next_u64())), None);
        }
        a.fin(c, Dir::C2S);
    }

    fn trojan_http(&mut self, a: &mut Actor, host: [u8; 4], tag: &str) {
        let c = self.trojan_conv(a, host, DROPPER_WEB, 80, true);
        let req = format!(
            "GET /dl/update-{tag}.html HTTP/1.1\r\nHost: updates.example.com\r\nUser-Agent: Wget/1.12\r\nAccept: */*\r\n\r\n"
        );
        a.send(c, Dir::C2S, Msg::bytes(req), Some(Event::Http(UrlKey::Unique)));
        let body = self.rng.range(1500, 4000);
        let head = format!(
            "HTTP/1.1 200 OK\r\nServer: Apache\r\nContent-Type: text/html\r\nContent-Length: {body}\r\n\r\n"
        );
        a.send(c, Dir::S2C, Msg::with_body(head, body as usize, Fill::Text), None);
        a.fin(c, Dir::C2S);
    }

    fn trojan_ftp(&mut self, a: &mut Actor, host: [u8; 4], tag: &str) {
        let c = self.trojan_conv(a, host, DROPPER_FTP, 21, true);
        let s = |t: String| Msg::bytes(t.into_bytes());
        a.send(c, Dir::S2C, s("220 (vsFTPd 3.0.3)\r\n".into()), None);
        a.send(c, Dir::C2S, s("USER anonymous\r\n".into()), None);
        a.send(c, Dir::S2C, s("331 Please specify the password.\r\n".into()), None);
        a.send(c, Dir::C2S, s("PASS guest@example.com\r\n".into()), None);
        a.send(c, Dir::S2C, s("230 Login successful.\r\n".into()), None);
        a.send(c, Dir::C2S, s("TYPE I\r\n".into()), None);
        a.send(c, Dir::S2C, s("200 Switching to Binary mode.\r\n".into()), None);
        for (name, magic) in [
            (format!("setup-{tag}.exe"), &b"MZ\x90\x00\x03\x00\x00\x00"[..]),
            (format!("payload-{tag}.zip"), &b"PK\x03\x04\x14\x00\x00\x00"[..]),
        ] {
            let p = self.rng.range(40000, 60000) as u16;
            let ip = DROPPER_FTP;
            a.send(c, Dir::C2S, s("PASV\r\n".into()), None);
            a.send(
                c,
                Dir::S2C,
                s(format!(
                    "227 Entering Passive Mode ({},{},{},{},{},{}).\r\n",
                    ip[0],
                    ip[1],
                    ip[2],
                    ip[3],
                    p >> 8,
                    p & 0xff
                )),
                None,
            );
            let size = self.rng.range(6000, 20000) as usize;
            a.send(c, Dir::C2S, s(format!("RETR {name}\r\n")), None);
            a.send(
                c,
                Dir::S2C,
                s(format!("150 Opening BINARY mode data connection for {name} ({size} bytes).\r\n")),
                None,
            );
            let d = self.trojan_conv(a, host, DROPPER_FTP, p, true);
            let msg = Msg::with_body(magic.to_vec(), size - magic.len(), Fill::Binary(self.rng.next_u64()));
            a.send(d, Dir::S2C, msg, None);
            a.fin(d, Dir::S2C);
            a.send(c, Dir::S2C, s("226 Transfer complete.\r\n".into()), None);
        }
        a.send(c, Dir::C2S, s("QUIT\r\n".into()), None);
        a.send(c, Dir::S2C, s("221 Goodbye.\r\n".into()), None);
        a.fin(c, Dir::C2S);
    }

    fn trojan_irc(&mut self, a: &mut Actor, host: [u8; 4], tag: &str) {
        let c = self.trojan_conv(a, host, IRC_C2, 6667, true);
        let s = |t: String| Msg::bytes(t.into_bytes());
        a.send(c, Dir::C2S, s(format!("NICK bot-{tag}\r\nUSER bot-{tag} 0 * :bot\r\n")), None);
        a.send(
            c,
            Dir::S2C,
            s(format!(":irc.example.net 001 bot-{tag} :Welcome to the Internet Relay Network\r\n")),
            None,
        );
        a.send(c, Dir::C2S, s("JOIN #c2\r\n".into()), None);
        a.send(
            c,
            Dir::S2C,
            s(format!(":bot-{tag}!bot@host JOIN :#c2\r\n:irc.example.net 332 bot-{tag} #c2 :!update\r\n")),
            None,
        );
        a.send(c, Dir::C2S, s("PRIVMSG #c2 :ready\r\n".into()), None);
        a.fin(c, Dir::C2S);
    }
}

/// Address of scanner number `i` (203.0.113.1 upwards).
pub(crate) fn scanner_ip(i: u32) -> [u8; 4] {
    [203, 0, 113, 1 + i as u8]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_paths_unique() {
        let mut v: Vec<String> = (0..500).map(pool_path).collect();
        v.sort();
        v.dedup();
        assert_eq!(v.len(), 500);
    }
}
