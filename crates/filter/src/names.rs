//! Name tables: well-known ports, IP protocol and EtherType names, and the named
//! constants tcpdump accepts wherever a number is expected (`tcp-syn`, `icmp-echo` ...).
//!
//! The port table mirrors a typical `/etc/services` (Debian netbase): a name that is
//! only listed for TCP restricts `port NAME` to TCP, exactly as libpcap does when it
//! resolves the name through `getservbyname`.

/// Transport protocols a port name is defined for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PortProto {
    /// Only TCP.
    Tcp,
    /// Only UDP.
    Udp,
    /// TCP and UDP (libpcap then matches TCP, UDP and SCTP).
    Both,
}

/// `(name, port, protocols)` for the port names we know.
const PORTS: &[(&str, u16, PortProto)] = &[
    ("ftp-data", 20, PortProto::Tcp),
    ("ftp", 21, PortProto::Tcp),
    ("ssh", 22, PortProto::Tcp),
    ("telnet", 23, PortProto::Tcp),
    ("smtp", 25, PortProto::Tcp),
    ("mail", 25, PortProto::Tcp),
    ("whois", 43, PortProto::Tcp),
    ("nicname", 43, PortProto::Tcp),
    ("domain", 53, PortProto::Both),
    ("bootps", 67, PortProto::Udp),
    ("bootpc", 68, PortProto::Udp),
    ("tftp", 69, PortProto::Udp),
    ("finger", 79, PortProto::Tcp),
    ("http", 80, PortProto::Tcp),
    ("www", 80, PortProto::Tcp),
    ("kerberos", 88, PortProto::Both),
    ("pop3", 110, PortProto::Tcp),
    ("sunrpc", 111, PortProto::Both),
    ("portmapper", 111, PortProto::Both),
    ("nntp", 119, PortProto::Tcp),
    ("ntp", 123, PortProto::Udp),
    ("netbios-ns", 137, PortProto::Udp),
    ("imap2", 143, PortProto::Tcp),
    ("imap", 143, PortProto::Tcp),
    ("snmp", 161, PortProto::Both),
    ("bgp", 179, PortProto::Tcp),
    ("irc", 194, PortProto::Tcp),
    ("ldap", 389, PortProto::Both),
    ("https", 443, PortProto::Both),
    ("microsoft-ds", 445, PortProto::Tcp),
    ("isakmp", 500, PortProto::Udp),
    ("syslog", 514, PortProto::Udp),
    ("submission", 587, PortProto::Tcp),
    ("rsync", 873, PortProto::Tcp),
    ("imaps", 993, PortProto::Tcp),
    ("pop3s", 995, PortProto::Tcp),
    ("socks", 1080, PortProto::Tcp),
    ("openvpn", 1194, PortProto::Both),
    ("nfs", 2049, PortProto::Both),
    ("mysql", 3306, PortProto::Tcp),
    ("ms-wbt-server", 3389, PortProto::Tcp),
    ("sip", 5060, PortProto::Both),
    ("postgresql", 5432, PortProto::Tcp),
    ("ircd", 6667, PortProto::Tcp),
    ("ircs-u", 6697, PortProto::Tcp),
    ("http-alt", 8080, PortProto::Tcp),
    ("webcache", 8080, PortProto::Tcp),
];

/// Looks up a port name.
pub(crate) fn port(name: &str) -> Option<(u16, PortProto)> {
    PORTS.iter().find(|(n, _, _)| *n == name).map(|&(_, p, pp)| (p, pp))
}

/// IP protocol names as in `/etc/protocols` (usable after `proto`, escaped: `proto \tcp`).
const IP_PROTOS: &[(&str, u8)] = &[
    ("ip", 0),
    ("icmp", 1),
    ("igmp", 2),
    ("ggp", 3),
    ("ipencap", 4),
    ("tcp", 6),
    ("egp", 8),
    ("igp", 9),
    ("pup", 12),
    ("udp", 17),
    ("rdp", 27),
    ("dccp", 33),
    ("ipv6", 41),
    ("ipv6-route", 43),
    ("ipv6-frag", 44),
    ("rsvp", 46),
    ("gre", 47),
    ("esp", 50),
    ("ah", 51),
    ("ipv6-icmp", 58),
    ("ipv6-nonxt", 59),
    ("ipv6-opts", 60),
    ("eigrp", 88),
    ("ospf", 89),
    ("ipip", 94),
    ("etherip", 97),
    ("pim", 103),
    ("ipcomp", 108),
    ("vrrp", 112),
    ("l2tp", 115),
    ("sctp", 132),
    ("udplite", 136),
];

/// Looks up an IP protocol name.
pub(crate) fn ip_proto(name: &str) -> Option<u8> {
    IP_PROTOS.iter().find(|(n, _)| *n == name).map(|&(_, p)| p)
}

/// EtherType names usable after `ether proto` (escaped: `ether proto \ip`).
pub(crate) fn ether_proto(name: &str) -> Option<u16> {
    Some(match name {
        "ip" => 0x0800,
        "ip6" => 0x86dd,
        "arp" => 0x0806,
        "rarp" => 0x8035,
        "atalk" => 0x809b,
        "aarp" => 0x80f3,
        "decnet" => 0x6003,
        "lat" => 0x6004,
        "sca" => 0x6007,
        "moprc" => 0x6002,
        "mopdl" => 0x6001,
        _ => return None,
    })
}

/// Named constants that stand for numbers anywhere (`tcp[tcpflags] & tcp-syn`).
pub(crate) fn constant(name: &str) -> Option<u32> {
    Some(match name {
        "tcpflags" => 13,
        "tcp-fin" => 0x01,
        "tcp-syn" => 0x02,
        "tcp-rst" => 0x04,
        "tcp-push" => 0x08,
        "tcp-ack" => 0x10,
        "tcp-urg" => 0x20,
        "tcp-ece" => 0x40,
        "tcp-cwr" => 0x80,
        "icmptype" => 0,
        "icmpcode" => 1,
        "icmp-echoreply" => 0,
        "icmp-unreach" => 3,
        "icmp-sourcequench" => 4,
        "icmp-redirect" => 5,
        "icmp-echo" => 8,
        "icmp-routeradvert" => 9,
        "icmp-routersolicit" => 10,
        "icmp-timxceed" => 11,
        "icmp-paramprob" => 12,
        "icmp-tstamp" => 13,
        "icmp-tstampreply" => 14,
        "icmp-ireq" => 15,
        "icmp-ireqreply" => 16,
        "icmp-maskreq" => 17,
        "icmp-maskreply" => 18,
        "icmp6type" => 0,
        "icmp6code" => 1,
        "icmp6-destinationunreach" => 1,
        "icmp6-packettoobig" => 2,
        "icmp6-timeexceeded" => 3,
        "icmp6-parameterproblem" => 4,
        "icmp6-echo" => 128,
        "icmp6-echoreply" => 129,
        "icmp6-multicastlistenerquery" => 130,
        "icmp6-multicastlistenerreportv1" => 131,
        "icmp6-multicastlistenerdone" => 132,
        "icmp6-routersolicit" => 133,
        "icmp6-routeradvert" => 134,
        "icmp6-neighborsolicit" => 135,
        "icmp6-neighboradvert" => 136,
        "icmp6-redirect" => 137,
        "icmp6-routerrenum" => 138,
        "icmp6-multicastlistenerreportv2" => 143,
        _ => return None,
    })
}
