//! Lexer and parser for the tcpdump filter language (the libpcap grammar, Ethernet link type),
//! building the condition tree of [`super::codegen`] the way libpcap's `gencode.c` builds blocks:
//! same tests, same order, same quirks (equal precedence of `and`/`or`, `vlan` shifting every
//! later offset, qualifiers carried over to bare addresses after `and`/`or`).

use std::net::Ipv6Addr;

use super::codegen::{AluOp, Arith, At, Cond, Jop};

/// A parse failure: 1-based character column and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub column: usize,
    pub message: String,
}

type PResult<T> = Result<T, SyntaxError>;

/// Deepest nesting of parentheses, `not`s and unary minus.
pub(crate) const MAX_DEPTH: usize = 64;
/// Most tests in one expression (each costs at least one instruction; the kernel takes 4096).
const MAX_NODES: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// Identifier, keyword, number or address.
    Word(String),
    /// `\name`: always a name, never a keyword.
    Escaped(String),
    Punct(&'static str),
}

#[derive(Debug, Clone)]
struct Tok {
    kind: Kind,
    col: usize,
}

const PUNCTS: [&str; 23] = [
    "&&", "||", "!=", "==", "<=", ">=", "<<", ">>", "(", ")", "[", "]", ":", "+", "-", "*", "/",
    "%", "&", "|", "^", "!", "=",
];
const PUNCTS_1: [&str; 2] = ["<", ">"];

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-' || c == ':'
}

fn lex(expr: &str) -> PResult<Vec<Tok>> {
    let chars: Vec<char> = expr.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let col = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '\\' {
            let mut j = i + 1;
            while j < chars.len() && !chars[j].is_whitespace() && !"!()".contains(chars[j]) {
                j += 1;
            }
            if j == i + 1 {
                return Err(SyntaxError {
                    column: col,
                    message: "expected a name after `\\`".into(),
                });
            }
            toks.push(Tok {
                kind: Kind::Escaped(chars[i + 1..j].iter().collect()),
                col,
            });
            i = j;
            continue;
        }
        if c.is_ascii_alphanumeric() || c == '_' || (c == ':' && chars.get(i + 1) == Some(&':')) {
            let mut j = i;
            while j < chars.len() && is_word_char(chars[j]) {
                j += 1;
            }
            let run: String = chars[i..j].iter().collect();
            let mut word = run.clone();
            if run.contains(':') && !(run.parse::<Ipv6Addr>().is_ok() || parse_mac(&run).is_some())
            {
                word = run[..run.find(':').unwrap_or(run.len())].to_string();
            }
            // A word never ends in `-` (libpcap's identifiers end in a letter, digit or dot).
            while word.ends_with('-') {
                word.pop();
            }
            if word.is_empty() {
                // A lone `:` (e.g. `::` that is no address).
                toks.push(Tok {
                    kind: Kind::Punct(":"),
                    col,
                });
                i += 1;
                continue;
            }
            i += word.chars().count();
            toks.push(Tok {
                kind: Kind::Word(word),
                col,
            });
            continue;
        }
        let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
        if let Some(p) = PUNCTS
            .iter()
            .chain(PUNCTS_1.iter())
            .find(|p| rest.starts_with(**p))
        {
            toks.push(Tok {
                kind: Kind::Punct(p),
                col,
            });
            i += p.len();
            continue;
        }
        return Err(SyntaxError {
            column: col,
            message: format!("unexpected character `{c}`"),
        });
    }
    Ok(toks)
}

/// A MAC address: six groups of 1-2 hex digits split by `:`, `-` or `.`, three dot-separated groups
/// of four, or twelve hex digits.
pub(crate) fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let hex = |g: &str| u8::from_str_radix(g, 16).ok();
    let mut mac = [0u8; 6];
    for sep in [':', '-', '.'] {
        let groups: Vec<&str> = s.split(sep).collect();
        if groups.len() == 6
            && groups
                .iter()
                .all(|g| (1..=2).contains(&g.len()) && g.chars().all(|c| c.is_ascii_hexdigit()))
        {
            for (m, g) in mac.iter_mut().zip(&groups) {
                *m = hex(g)?;
            }
            return Some(mac);
        }
    }
    let groups: Vec<&str> = s.split('.').collect();
    let digits: String = if groups.len() == 3 && groups.iter().all(|g| g.len() == 4) {
        groups.concat()
    } else {
        s.to_string()
    };
    if digits.len() == 12 && digits.chars().all(|c| c.is_ascii_hexdigit()) {
        for (n, m) in mac.iter_mut().enumerate() {
            *m = hex(&digits[2 * n..2 * n + 2])?;
        }
        return Some(mac);
    }
    None
}

/// A libpcap number: decimal, `0x` hex or `0` octal, at most 32 bits.
fn parse_number(s: &str) -> Option<Result<u32, String>> {
    let (digits, radix) = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        (h, 16)
    } else if s.len() > 1 && s.starts_with('0') {
        (&s[1..], 8)
    } else {
        (s, 10)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        if radix == 8 && s.chars().all(|c| c.is_ascii_digit()) {
            return Some(Err(format!("number {s} contains non-octal digits")));
        }
        return None;
    }
    Some(u32::from_str_radix(digits, radix).map_err(|_| format!("number {s} overflows 32 bits")))
}

/// Dotted IPv4 (2 to 4 parts): value right-aligned and its length in bits, like `__pcap_atoin`.
fn parse_dotted(s: &str) -> Option<Result<(u32, u32), String>> {
    let parts: Vec<&str> = s.split('.').collect();
    if !(2..=4).contains(&parts.len())
        || !parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
    {
        return None;
    }
    let mut v = 0u32;
    for p in &parts {
        match p.parse::<u32>() {
            Ok(n) if n <= 255 => v = (v << 8) | n,
            _ => return Some(Err(format!("invalid IPv4 address `{s}`"))),
        }
    }
    Some(Ok((v, 8 * parts.len() as u32)))
}

/// Named constants libpcap's lexer knows (`tcp[tcpflags] & tcp-syn`).
fn named_constant(s: &str) -> Option<u32> {
    Some(match s {
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
        _ => return None,
    })
}

/// Protocol qualifiers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proto {
    Default,
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
}

impl Proto {
    fn from_word(w: &str) -> Option<Proto> {
        Some(match w {
            "ether" | "link" => Proto::Link,
            "ip" => Proto::Ip,
            "ip6" => Proto::Ip6,
            "arp" => Proto::Arp,
            "rarp" => Proto::Rarp,
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            "sctp" => Proto::Sctp,
            "icmp" => Proto::Icmp,
            "icmp6" => Proto::Icmp6,
            "igmp" => Proto::Igmp,
            _ => return None,
        })
    }
    fn name(self) -> &'static str {
        match self {
            Proto::Default => "",
            Proto::Link => "ether",
            Proto::Ip => "ip",
            Proto::Ip6 => "ip6",
            Proto::Arp => "arp",
            Proto::Rarp => "rarp",
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
            Proto::Icmp => "icmp",
            Proto::Icmp6 => "icmp6",
            Proto::Igmp => "igmp",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    Default,
    Src,
    Dst,
    Or,
    And,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Addr {
    Default,
    Host,
    Net,
    Port,
    PortRange,
    Proto,
}

/// The qualifiers in force for an id (`tcp dst port`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Qual {
    proto: Proto,
    dir: Dir,
    addr: Addr,
}

/// libpcap keywords this compiler does not implement: rejected with a clear message rather than
/// mistaken for host names.
const UNSUPPORTED: &[&str] = &[
    "gateway",
    "protochain",
    "inbound",
    "outbound",
    "ifindex",
    "mpls",
    "pppoed",
    "pppoes",
    "geneve",
    "llc",
    "byte",
    "atalk",
    "aarp",
    "decnet",
    "lat",
    "sca",
    "moprc",
    "mopdl",
    "iso",
    "esis",
    "es-is",
    "isis",
    "is-is",
    "clnp",
    "stp",
    "ipx",
    "netbeui",
    "ah",
    "esp",
    "pim",
    "vrrp",
    "carp",
    "igrp",
    "radio",
    "fddi",
    "tr",
    "wlan",
    "ppp",
    "slip",
    "type",
    "subtype",
    "dir",
    "ra",
    "ta",
    "addr1",
    "addr2",
    "addr3",
    "addr4",
    "address1",
    "address2",
    "address3",
    "address4",
    "lane",
    "metac",
    "bcc",
    "oam",
    "oamf4",
    "oamf4ec",
    "oamf4sc",
    "sc",
    "ilmic",
    "vpi",
    "vci",
    "connectmsg",
    "metaconnect",
    "on",
    "ifname",
    "rnr",
    "rulenum",
    "reason",
    "rset",
    "ruleset",
    "srnr",
    "subrulenum",
    "action",
    "fisu",
    "lssu",
    "lsu",
    "msu",
    "hfisu",
    "hlssu",
    "hmsu",
    "sio",
    "opc",
    "dpc",
    "sls",
    "hsio",
    "hopc",
    "hdpc",
    "hsls",
    "l1",
    "l2",
    "iih",
    "lsp",
    "snp",
    "csnp",
    "psnp",
];

/// Words that end an id or start something other than an id.
fn is_keyword(w: &str) -> bool {
    Proto::from_word(w).is_some()
        || matches!(
            w,
            "src"
                | "dst"
                | "host"
                | "net"
                | "mask"
                | "port"
                | "portrange"
                | "proto"
                | "and"
                | "or"
                | "not"
                | "len"
                | "less"
                | "greater"
                | "vlan"
                | "broadcast"
                | "multicast"
        )
        || UNSUPPORTED.contains(&w)
}

/// IP protocol names (`proto \tcp`), as `/etc/protocols` spells them.
fn ip_proto_name(s: &str) -> Option<u32> {
    Some(match s {
        "ip" => 0,
        "icmp" => 1,
        "igmp" => 2,
        "ipencap" => 4,
        "tcp" => 6,
        "udp" => 17,
        "ipv6" => 41,
        "ipv6-route" => 43,
        "ipv6-frag" => 44,
        "gre" => 47,
        "esp" => 50,
        "ah" => 51,
        "ipv6-icmp" => 58,
        "ipv6-nonxt" => 59,
        "ipv6-opts" => 60,
        "ospf" => 89,
        "pim" => 103,
        "vrrp" => 112,
        "sctp" => 132,
        _ => return None,
    })
}

/// Ethertype names (`ether proto \arp`).
fn ether_proto_name(s: &str) -> Option<u32> {
    Some(match s {
        "ip" => 0x0800,
        "ip6" => 0x86dd,
        "arp" => 0x0806,
        "rarp" => 0x8035,
        _ => return None,
    })
}

const ETHERTYPE_IP: u32 = 0x0800;
const ETHERTYPE_IPV6: u32 = 0x86dd;
const ETHERTYPE_ARP: u32 = 0x0806;
const ETHERTYPE_RARP: u32 = 0x8035;
const ETHERMTU: u32 = 1500;

pub(crate) struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    end_col: usize,
    /// Offset of the ethertype and of the network header; each `vlan` moves both by 4.
    off_linktype: u32,
    off_nl: u32,
    depth: usize,
    nodes: usize,
}

/// Parses a whole expression ("" accepts everything).
pub(crate) fn parse(expr: &str) -> PResult<Cond> {
    let toks = lex(expr)?;
    let mut p = Parser {
        toks,
        pos: 0,
        end_col: expr.chars().count() + 1,
        off_linktype: 12,
        off_nl: 14,
        depth: 0,
        nodes: 0,
    };
    if p.toks.is_empty() {
        return Ok(Cond::Const(true));
    }
    let (c, _) = p.expr(None)?;
    if p.pos < p.toks.len() {
        return Err(p.err_here(format!(
            "expected `and`, `or` or the end, found {}",
            p.describe()
        )));
    }
    Ok(c)
}

/// Relational operators.
fn relop(p: &str) -> Option<(Jop, bool)> {
    // (test, negate)
    Some(match p {
        ">" => (Jop::Gt, false),
        ">=" => (Jop::Ge, false),
        "=" | "==" => (Jop::Eq, false),
        "<" => (Jop::Ge, true),
        "<=" => (Jop::Gt, true),
        "!=" => (Jop::Eq, true),
        _ => return None,
    })
}

/// Binary arithmetic operators by precedence level (lowest first), as libpcap's grammar has them.
const ARITH_LEVELS: [&[(&str, AluOp)]; 6] = [
    &[("|", AluOp::Or)],
    &[("^", AluOp::Xor)],
    &[("&", AluOp::And)],
    &[("<<", AluOp::Lsh), (">>", AluOp::Rsh)],
    &[("+", AluOp::Add), ("-", AluOp::Sub)],
    &[("*", AluOp::Mul), ("/", AluOp::Div), ("%", AluOp::Mod)],
];

fn is_arith_op(p: &str) -> bool {
    ARITH_LEVELS.iter().any(|l| l.iter().any(|(s, _)| *s == p))
}

/// An arithmetic value and the protocol test its loads depend on.
struct Value {
    a: Arith,
    gate: Option<Cond>,
}

impl Parser {
    fn peek(&self) -> Option<&Kind> {
        self.toks.get(self.pos).map(|t| &t.kind)
    }
    fn peek_at(&self, n: usize) -> Option<&Kind> {
        self.toks.get(self.pos + n).map(|t| &t.kind)
    }
    fn col(&self) -> usize {
        self.toks.get(self.pos).map_or(self.end_col, |t| t.col)
    }
    fn err_at(&self, column: usize, message: impl Into<String>) -> SyntaxError {
        SyntaxError {
            column,
            message: message.into(),
        }
    }
    fn err_here(&self, message: impl Into<String>) -> SyntaxError {
        self.err_at(self.col(), message)
    }
    fn describe(&self) -> String {
        match self.peek() {
            None => "the end of the expression".into(),
            Some(Kind::Word(w)) => format!("`{w}`"),
            Some(Kind::Escaped(w)) => format!("`\\{w}`"),
            Some(Kind::Punct(p)) => format!("`{p}`"),
        }
    }
    fn word(&self) -> Option<&str> {
        match self.peek() {
            Some(Kind::Word(w)) => Some(w),
            _ => None,
        }
    }
    fn is_word(&self, w: &str) -> bool {
        self.word() == Some(w)
    }
    fn is_punct(&self, p: &str) -> bool {
        matches!(self.peek(), Some(Kind::Punct(q)) if *q == p)
    }
    fn punct_at(&self, n: usize) -> Option<&'static str> {
        match self.peek_at(n) {
            Some(Kind::Punct(p)) => Some(p),
            _ => None,
        }
    }
    fn expect_punct(&mut self, p: &str) -> PResult<()> {
        if self.is_punct(p) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err_here(format!("expected `{p}`, found {}", self.describe())))
        }
    }
    fn is_and(&self) -> bool {
        self.is_word("and") || self.is_punct("&&")
    }
    fn is_or(&self) -> bool {
        self.is_word("or") || self.is_punct("||")
    }
    fn is_not(&self) -> bool {
        self.is_word("not") || self.is_punct("!")
    }
    fn enter(&mut self) -> PResult<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err_here(format!(
                "nested too deeply (more than {MAX_DEPTH} levels of parentheses, `not` or `-`)"
            )));
        }
        Ok(())
    }
    fn leave(&mut self) {
        self.depth -= 1;
    }
    fn node(&mut self, col: usize) -> PResult<()> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(self.err_at(
                col,
                format!(
                    "expression too long: more than {MAX_NODES} primitives (a classic BPF program holds 4096 instructions)"
                ),
            ));
        }
        Ok(())
    }

    // ---- Boolean structure -------------------------------------------------------------------

    /// `expr: term | expr (and|or) (term|id)`, left-associative, `and` and `or` of equal
    /// precedence. Returns the qualifiers a following bare id would inherit.
    fn expr(&mut self, before: Option<Qual>) -> PResult<(Cond, Option<Qual>)> {
        let (mut c, mut q) = self.term(before)?;
        loop {
            let is_and = if self.is_and() {
                true
            } else if self.is_or() {
                false
            } else {
                break;
            };
            let col = self.col();
            self.pos += 1;
            self.node(col)?;
            let (rhs, rq) = if self.id_follows() {
                (self.id(q)?, q)
            } else {
                self.term(q)?
            };
            c = if is_and {
                Cond::and(c, rhs)
            } else {
                Cond::or(c, rhs)
            };
            q = rq;
        }
        Ok((c, q))
    }

    /// Whether the tokens at the cursor form a bare id (an address with inherited qualifiers)
    /// rather than a term.
    fn id_follows(&self) -> bool {
        let mut n = 0;
        loop {
            match self.peek_at(n) {
                Some(Kind::Word(w)) if w == "not" => n += 1,
                Some(Kind::Punct("!")) | Some(Kind::Punct("(")) => n += 1,
                Some(Kind::Word(w)) => {
                    if is_keyword(w) || named_constant(w).is_some() {
                        return false;
                    }
                    // A number followed by an operator starts arithmetic.
                    return !self
                        .punct_at(n + 1)
                        .is_some_and(|p| relop(p).is_some() || is_arith_op(p));
                }
                _ => return false,
            }
        }
    }

    fn term(&mut self, before: Option<Qual>) -> PResult<(Cond, Option<Qual>)> {
        self.enter()?;
        let r = self.term_inner(before);
        self.leave();
        r
    }

    fn term_inner(&mut self, before: Option<Qual>) -> PResult<(Cond, Option<Qual>)> {
        let col = self.col();
        self.node(col)?;
        if self.is_not() {
            self.pos += 1;
            let (c, q) = self.term(before)?;
            return Ok((Cond::not(c), q));
        }
        if self.is_punct("(") {
            // Either arithmetic in parentheses (`(len) > 5`) or a parenthesized expression.
            let start = self.pos;
            let saved = (self.off_linktype, self.off_nl, self.nodes, self.depth);
            let arith_err = match self.relation() {
                Ok(c) => return Ok((c, None)),
                Err(e) => e,
            };
            self.pos = start;
            (self.off_linktype, self.off_nl, self.nodes, self.depth) = saved;
            self.pos += 1;
            let r = self.expr(before).and_then(|(c, _)| {
                self.expect_punct(")")?;
                Ok(c)
            });
            return match r {
                Ok(c) => Ok((c, before)),
                Err(e) if arith_err.column > e.column => Err(arith_err),
                Err(e) => Err(e),
            };
        }
        let w = match self.peek() {
            Some(Kind::Word(w)) => w.clone(),
            Some(Kind::Punct("-")) => return Ok((self.relation()?, None)),
            Some(Kind::Escaped(w)) => {
                return Err(self.err_here(format!(
                    "`\\{w}` needs a qualifier in front, e.g. `ether proto \\{w}` or `ip proto \\{w}`"
                )));
            }
            _ => {
                return Err(self.err_here(format!(
                    "expected a primitive (e.g. `host`, `port`, `tcp`), found {}",
                    self.describe()
                )));
            }
        };
        if UNSUPPORTED.contains(&w.as_str()) {
            return Err(self.err_here(format!(
                "`{w}` is not supported by this compiler; supported: ether/ip/ip6/arp/rarp/tcp/udp/sctp/icmp/icmp6/igmp, host, net, port, portrange, proto, vlan, len, less, greater, broadcast, multicast, byte offsets"
            )));
        }
        match w.as_str() {
            "vlan" => {
                self.pos += 1;
                let id = if self.number_follows() {
                    let ncol = self.col();
                    let v = self.paren_number()?;
                    if v > 4095 {
                        return Err(
                            self.err_at(ncol, format!("VLAN id {v} greater than the maximum 4095"))
                        );
                    }
                    Some(v)
                } else {
                    None
                };
                return Ok((self.gen_vlan(id), None));
            }
            "less" | "greater" => {
                self.pos += 1;
                let ncol = self.col();
                let n = self.number().map_err(|_| {
                    self.err_at(
                        ncol,
                        format!("`{w}` needs a number, found {}", self.describe()),
                    )
                })?;
                let c = if w == "less" {
                    Cond::not(Cond::Test {
                        lhs: Arith::Len,
                        op: Jop::Gt,
                        rhs: Arith::Const(n),
                    })
                } else {
                    Cond::Test {
                        lhs: Arith::Len,
                        op: Jop::Ge,
                        rhs: Arith::Const(n),
                    }
                };
                return Ok((c, None));
            }
            "broadcast" | "multicast" => {
                self.pos += 1;
                return Ok((self.gen_cast(&w, Proto::Default, col)?, None));
            }
            _ => {}
        }
        if let Some(proto) = Proto::from_word(&w) {
            match self.peek_at(1) {
                Some(Kind::Punct("[")) => return Ok((self.relation()?, None)),
                Some(Kind::Word(n)) if n == "broadcast" || n == "multicast" => {
                    let n = n.clone();
                    self.pos += 2;
                    return Ok((self.gen_cast(&n, proto, col)?, None));
                }
                Some(Kind::Word(n))
                    if matches!(
                        n.as_str(),
                        "src" | "dst" | "host" | "net" | "port" | "portrange" | "proto"
                    ) =>
                {
                    let q = self.head()?;
                    return Ok((self.id(Some(q))?, Some(q)));
                }
                Some(Kind::Word(n)) if n == "gateway" || n == "protochain" => {
                    let n = n.clone();
                    self.pos += 1;
                    return Err(self.err_here(format!("`{n}` is not supported by this compiler")));
                }
                Some(Kind::Word(n)) if !is_keyword(n) && named_constant(n).is_none() => {
                    let n = n.clone();
                    self.pos += 1;
                    return Err(self.err_here(format!(
                        "expected `host`, `net`, `port`, `portrange`, `proto`, `src` or `dst` before `{n}`"
                    )));
                }
                _ => {
                    self.pos += 1;
                    return Ok((self.proto_abbrev(proto, col)?, None));
                }
            }
        }
        if matches!(
            w.as_str(),
            "src" | "dst" | "host" | "net" | "port" | "portrange" | "proto"
        ) {
            let q = self.head()?;
            return Ok((self.id(Some(q))?, Some(q)));
        }
        if w == "len" || parse_number(&w).is_some() || named_constant(&w).is_some() {
            return Ok((self.relation()?, None));
        }
        if matches!(w.as_str(), "and" | "or" | "mask") {
            return Err(self.err_here(format!("expected a primitive, found `{w}`")));
        }
        if parse_dotted(&w).is_some() || w.parse::<Ipv6Addr>().is_ok() || parse_mac(&w).is_some() {
            // A bare address is `host ADDR` only at the very start in libpcap when... it is not:
            // the grammar wants a qualifier before the first id.
            return Err(self.err_here(format!(
                "address `{w}` needs a qualifier in front, e.g. `host {w}`"
            )));
        }
        Err(self.err_here(format!(
            "unknown word `{w}`: names are not supported, give numeric addresses and ports"
        )))
    }

    /// `head: [proto] [dir] [host|net|port|portrange|proto]`.
    fn head(&mut self) -> PResult<Qual> {
        let mut q = Qual {
            proto: Proto::Default,
            dir: Dir::Default,
            addr: Addr::Default,
        };
        if let Some(p) = self.word().and_then(Proto::from_word) {
            q.proto = p;
            self.pos += 1;
        }
        let dir_of = |w: Option<&str>| match w {
            Some("src") => Some(Dir::Src),
            Some("dst") => Some(Dir::Dst),
            _ => None,
        };
        if let Some(d) = dir_of(self.word()) {
            q.dir = d;
            self.pos += 1;
            let conj = if self.is_or() {
                Some(Dir::Or)
            } else if self.is_and() {
                Some(Dir::And)
            } else {
                None
            };
            if let Some(conj) = conj {
                let other = if d == Dir::Src { "dst" } else { "src" };
                if self.peek_at(1) == Some(&Kind::Word(other.into())) {
                    q.dir = conj;
                    self.pos += 2;
                } else {
                    return Err(self.err_at(
                        self.toks.get(self.pos + 1).map_or(self.end_col, |t| t.col),
                        format!(
                            "expected `{other}` or an address after `{}`",
                            self.describe()
                        ),
                    ));
                }
            }
        }
        let addr = match self.word() {
            Some("host") => Some(Addr::Host),
            Some("net") => Some(Addr::Net),
            Some("port") => Some(Addr::Port),
            Some("portrange") => Some(Addr::PortRange),
            Some("proto") => Some(Addr::Proto),
            Some("gateway") | Some("protochain") => {
                return Err(self.err_here(format!(
                    "{} is not supported by this compiler",
                    self.describe()
                )));
            }
            _ => None,
        };
        if let Some(a) = addr {
            q.addr = a;
            self.pos += 1;
        }
        if q.addr == Addr::Proto && q.dir != Dir::Default {
            return Err(self.err_here("`proto` takes no `src`/`dst`"));
        }
        Ok(q)
    }

    /// `id: not id | ( pid ) | address`.
    fn id(&mut self, q: Option<Qual>) -> PResult<Cond> {
        self.enter()?;
        let r = self.id_inner(q);
        self.leave();
        r
    }

    fn id_inner(&mut self, q: Option<Qual>) -> PResult<Cond> {
        let col = self.col();
        self.node(col)?;
        if self.is_not() {
            self.pos += 1;
            return Ok(Cond::not(self.id(q)?));
        }
        if self.is_punct("(") {
            self.pos += 1;
            let mut c = self.id(q)?;
            loop {
                let is_and = if self.is_and() {
                    true
                } else if self.is_or() {
                    false
                } else {
                    break;
                };
                self.pos += 1;
                let r = self.id(q)?;
                c = if is_and {
                    Cond::and(c, r)
                } else {
                    Cond::or(c, r)
                };
            }
            self.expect_punct(")")?;
            return Ok(c);
        }
        let Some(q) = q else {
            return Err(self.err_here(
                "a bare address here needs its qualifiers spelled out (e.g. `host`, `port`)",
            ));
        };
        let tok = match self.peek() {
            Some(Kind::Word(w)) if !is_keyword(w) => w.clone(),
            Some(Kind::Escaped(w)) => {
                let w = w.clone();
                self.pos += 1;
                return self.gen_name(q, &w, col);
            }
            _ => {
                return Err(self.err_here(format!(
                    "expected an address, port or number, found {}",
                    self.describe()
                )));
            }
        };
        self.pos += 1;
        // IPv4 forms: NUM, dotted, `/len`, `mask M`.
        if let Some(n) = parse_number(&tok) {
            let v = n.map_err(|m| self.err_at(col, m))?;
            return self.gen_number(q, v, col);
        }
        if let Some(d) = parse_dotted(&tok) {
            let (v, vlen) = d.map_err(|m| self.err_at(col, m))?;
            if self.is_punct("/") {
                self.pos += 1;
                let mcol = self.col();
                let len = self
                    .number()
                    .map_err(|_| self.err_at(mcol, "expected a prefix length after `/`"))?;
                if len > 32 {
                    return Err(self.err_at(mcol, "mask length must be <= 32"));
                }
                let n = shl(v, 32 - vlen);
                let m = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                if n & !m != 0 {
                    return Err(self.err_at(col, format!("non-network bits set in `{tok}/{len}`")));
                }
                return self.gen_masked(q, n, m, col);
            }
            if self.is_word("mask") {
                self.pos += 1;
                let mcol = self.col();
                let mtok = self.word().map(str::to_string);
                let (m, mlen) = match mtok.as_deref().and_then(parse_dotted) {
                    Some(Ok(x)) => x,
                    _ => return Err(self.err_at(mcol, "expected a dotted netmask after `mask`")),
                };
                self.pos += 1;
                let n = shl(v, 32 - vlen);
                let m = shl(m, 32 - mlen);
                if n & !m != 0 {
                    return Err(self.err_at(col, format!("non-network bits set in `{tok}`")));
                }
                return self.gen_masked(q, n, m, col);
            }
            if matches!(q.addr, Addr::Default | Addr::Host | Addr::Net) {
                if q.proto == Proto::Link {
                    return Err(self.err_at(col, "illegal link layer address"));
                }
                let shift = 32 - vlen;
                return self.gen_host4(q, shl(v, shift), shl(u32::MAX, shift), col);
            }
            return Err(self.err_at(
                col,
                format!("an IPv4 address cannot follow `{}`", addr_name(q.addr)),
            ));
        }
        if let Ok(a) = tok.parse::<Ipv6Addr>() {
            let mut len = 128;
            if self.is_punct("/") {
                self.pos += 1;
                let mcol = self.col();
                len = self
                    .number()
                    .map_err(|_| self.err_at(mcol, "expected a prefix length after `/`"))?;
                if len > 128 {
                    return Err(self.err_at(mcol, "mask length must be <= 128"));
                }
            }
            let a = u128::from_be_bytes(a.octets());
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            if a & !m != 0 {
                return Err(self.err_at(col, format!("non-network bits set in `{tok}/{len}`")));
            }
            match q.addr {
                Addr::Default | Addr::Host if len != 128 => {
                    return Err(self.err_at(col, "mask syntax is for `net` only"));
                }
                Addr::Default | Addr::Host | Addr::Net => {}
                _ => return Err(self.err_at(col, "invalid qualifier for an IPv6 address")),
            }
            if !matches!(q.proto, Proto::Default | Proto::Ip6) {
                return Err(self.err_at(
                    col,
                    format!("`{}` modifier applied to an IPv6 host", q.proto.name()),
                ));
            }
            return Ok(self.gen_host6(q.dir, a, m));
        }
        if q.proto == Proto::Link
            && matches!(q.addr, Addr::Default | Addr::Host)
            && let Some(mac) = parse_mac(&tok)
        {
            return Ok(gen_ehost(q.dir, mac));
        }
        if parse_mac(&tok).is_some() {
            return Err(self.err_at(col, "ethernet address used in non-ether expression"));
        }
        if q.addr == Addr::PortRange
            && let Some((a, b)) = tok.split_once('-')
            && let (Some(Ok(a)), Some(Ok(b))) = (parse_number(a), parse_number(b))
        {
            return self.gen_port(q, a, b, true, col);
        }
        self.gen_name(q, &tok, col)
    }

    /// A name: only protocol names after `proto` are known.
    fn gen_name(&mut self, q: Qual, name: &str, col: usize) -> PResult<Cond> {
        if q.addr == Addr::Proto {
            let v = if q.proto == Proto::Link {
                ether_proto_name(name)
            } else {
                ip_proto_name(name)
            };
            if let Some(v) = v {
                return self.gen_proto(q.proto, v, col);
            }
            return Err(self.err_at(col, format!("unknown protocol name `{name}`")));
        }
        Err(self.err_at(
            col,
            format!("`{name}`: names are not supported, give a numeric address or port"),
        ))
    }

    fn number_follows(&self) -> bool {
        let mut n = 0;
        while self.punct_at(n) == Some("(") {
            n += 1;
        }
        matches!(self.peek_at(n), Some(Kind::Word(w)) if parse_number(w).is_some())
    }

    /// A number, possibly in parentheses (`vlan (100)`).
    fn paren_number(&mut self) -> PResult<u32> {
        if self.is_punct("(") {
            self.enter()?;
            self.pos += 1;
            let v = self.paren_number()?;
            self.expect_punct(")")?;
            self.leave();
            return Ok(v);
        }
        self.number()
    }

    fn number(&mut self) -> PResult<u32> {
        let col = self.col();
        match self.word().and_then(parse_number) {
            Some(Ok(v)) => {
                self.pos += 1;
                Ok(v)
            }
            Some(Err(m)) => Err(self.err_at(col, m)),
            None => Err(self.err_here(format!("expected a number, found {}", self.describe()))),
        }
    }

    // ---- Arithmetic --------------------------------------------------------------------------

    /// `arith relop arith`.
    fn relation(&mut self) -> PResult<Cond> {
        let a = self.arith(0)?;
        let col = self.col();
        let Some((op, negate)) = self.punct_at(0).and_then(relop) else {
            return Err(self.err_at(
                col,
                format!(
                    "expected a comparison (`>`, `<`, `>=`, `<=`, `=`, `!=`), found {}",
                    self.describe()
                ),
            ));
        };
        self.pos += 1;
        let b = self.arith(0)?;
        let test = match (&a.a, &b.a) {
            (Arith::Const(x), Arith::Const(y)) => Cond::Const(match op {
                Jop::Eq => x == y,
                Jop::Gt => x > y,
                Jop::Ge => x >= y,
                Jop::Set => x & y != 0,
            }),
            _ => Cond::Test {
                lhs: a.a,
                op,
                rhs: b.a,
            },
        };
        let test = if negate { Cond::not(test) } else { test };
        let gate = match (a.gate, b.gate) {
            (Some(x), Some(y)) => Some(Cond::and(x, y)),
            (x, y) => x.or(y),
        };
        Ok(match gate {
            Some(g) => Cond::and(g, test),
            None => test,
        })
    }

    fn arith(&mut self, level: usize) -> PResult<Value> {
        if level == ARITH_LEVELS.len() {
            return self.unary();
        }
        let mut lhs = self.arith(level + 1)?;
        while let Some(&(_, op)) = ARITH_LEVELS[level].iter().find(|(s, _)| self.is_punct(s)) {
            let col = self.col();
            self.pos += 1;
            let rhs = self.arith(level + 1)?;
            if let Arith::Const(k) = rhs.a {
                if k == 0 && op == AluOp::Div {
                    return Err(self.err_at(col, "division by zero"));
                }
                if k == 0 && op == AluOp::Mod {
                    return Err(self.err_at(col, "modulus by zero"));
                }
                if k > 31 && matches!(op, AluOp::Lsh | AluOp::Rsh) {
                    return Err(self.err_at(col, "shift by more than 31 bits"));
                }
            }
            // libpcap keeps only the left operand's protocol test here (gen_arth).
            lhs = match (&lhs.a, &rhs.a) {
                (Arith::Const(x), Arith::Const(y)) => Value {
                    a: Arith::Const(op.fold(*x, *y).unwrap_or(0)),
                    gate: lhs.gate,
                },
                _ => Value {
                    a: Arith::Bin(op, Box::new(lhs.a), Box::new(rhs.a)),
                    gate: lhs.gate,
                },
            };
        }
        Ok(lhs)
    }

    fn unary(&mut self) -> PResult<Value> {
        if self.is_punct("-") {
            self.enter()?;
            self.pos += 1;
            let v = self.unary()?;
            self.leave();
            return Ok(Value {
                a: match v.a {
                    Arith::Const(k) => Arith::Const(k.wrapping_neg()),
                    a => Arith::Neg(Box::new(a)),
                },
                gate: v.gate,
            });
        }
        self.primary()
    }

    fn primary(&mut self) -> PResult<Value> {
        let col = self.col();
        if self.is_punct("(") {
            self.enter()?;
            self.pos += 1;
            let v = self.arith(0)?;
            self.expect_punct(")")?;
            self.leave();
            return Ok(v);
        }
        let Some(w) = self.word().map(str::to_string) else {
            return Err(self.err_here(format!("expected a value, found {}", self.describe())));
        };
        if w == "len" {
            self.pos += 1;
            return Ok(Value {
                a: Arith::Len,
                gate: None,
            });
        }
        if let Some(k) = named_constant(&w) {
            self.pos += 1;
            return Ok(Value {
                a: Arith::Const(k),
                gate: None,
            });
        }
        if let Some(n) = parse_number(&w) {
            let v = n.map_err(|m| self.err_at(col, m))?;
            self.pos += 1;
            return Ok(Value {
                a: Arith::Const(v),
                gate: None,
            });
        }
        if let Some(proto) = Proto::from_word(&w) {
            if self.punct_at(1) != Some("[") {
                return Err(self.err_at(
                    col,
                    format!("expected `{w}[offset]` in an arithmetic expression"),
                ));
            }
            self.pos += 2;
            self.enter()?;
            let index = self.arith(0)?;
            let mut size = 1;
            if self.is_punct(":") {
                self.pos += 1;
                let scol = self.col();
                size = self.number()?;
                if !matches!(size, 1 | 2 | 4) {
                    return Err(self.err_at(scol, "data size must be 1, 2, or 4"));
                }
            }
            self.expect_punct("]")?;
            self.leave();
            return self.gen_load(proto, index, size as u8, col);
        }
        Err(self.err_here(format!("expected a value, found {}", self.describe())))
    }

    // ---- Code builders (libpcap's gencode) ---------------------------------------------------

    /// `ether proto v` (`gen_linktype` on Ethernet).
    fn linktype(&self, v: u32) -> Cond {
        self.linktype_at(self.off_linktype, v)
    }

    fn linktype_at(&self, off: u32, v: u32) -> Cond {
        Cond::cmp(off, 2, None, Jop::Eq, v)
    }

    fn gen_ether_proto(&self, v: u32, col: usize) -> PResult<Cond> {
        let lt = self.off_linktype;
        let is_8023 = || Cond::not(Cond::cmp(lt, 2, None, Jop::Gt, ETHERMTU));
        Ok(match v {
            0x06 | 0xf0 | 0xfe => {
                Cond::and(is_8023(), Cond::cmp(lt + 2, 2, None, Jop::Eq, (v << 8) | v))
            }
            0xe0 | 0x809b | 0x80f3 => {
                return Err(self.err_at(
                    col,
                    "IPX and AppleTalk (LLC/SNAP-encapsulated) protocols are not supported",
                ));
            }
            v if v <= ETHERMTU => Cond::and(is_8023(), Cond::cmp(lt + 2, 1, None, Jop::Eq, v)),
            v => self.linktype(v),
        })
    }

    fn nl_byte(&self, off: u32, v: u32) -> Cond {
        Cond::cmp(self.off_nl + off, 1, None, Jop::Eq, v)
    }

    /// `gen_proto`: `ip proto v`, `ip6 proto v`, both, or `ether proto v`.
    fn gen_proto(&self, proto: Proto, v: u32, col: usize) -> PResult<Cond> {
        Ok(match proto {
            Proto::Ip => Cond::and(self.linktype(ETHERTYPE_IP), self.nl_byte(9, v)),
            Proto::Ip6 => Cond::and(
                self.linktype(ETHERTYPE_IPV6),
                Cond::or(
                    self.nl_byte(6, v),
                    Cond::and(self.nl_byte(6, 44), self.nl_byte(40, v)),
                ),
            ),
            Proto::Default => Cond::or(
                self.gen_proto(Proto::Ip, v, col)?,
                self.gen_proto(Proto::Ip6, v, col)?,
            ),
            Proto::Link => self.gen_ether_proto(v, col)?,
            p => {
                return Err(self.err_at(
                    col,
                    format!(
                        "`{} proto` is not valid: use `ip proto`, `ip6 proto` or `ether proto`",
                        p.name()
                    ),
                ));
            }
        })
    }

    /// A protocol name on its own (`tcp`, `ip6`, ...).
    fn proto_abbrev(&self, proto: Proto, col: usize) -> PResult<Cond> {
        Ok(match proto {
            Proto::Ip => self.linktype(ETHERTYPE_IP),
            Proto::Ip6 => self.linktype(ETHERTYPE_IPV6),
            Proto::Arp => self.linktype(ETHERTYPE_ARP),
            Proto::Rarp => self.linktype(ETHERTYPE_RARP),
            Proto::Tcp => self.gen_proto(Proto::Default, 6, col)?,
            Proto::Udp => self.gen_proto(Proto::Default, 17, col)?,
            Proto::Sctp => self.gen_proto(Proto::Default, 132, col)?,
            Proto::Icmp => self.gen_proto(Proto::Ip, 1, col)?,
            Proto::Igmp => self.gen_proto(Proto::Ip, 2, col)?,
            Proto::Icmp6 => self.gen_proto(Proto::Ip6, 58, col)?,
            Proto::Link | Proto::Default => {
                return Err(self.err_at(
                    col,
                    "`ether` alone is not a test: use `ether host`, `ether proto`, `ether[...]`",
                ));
            }
        })
    }

    /// `vlan [id]`; moves every later link-type and network offset by 4.
    fn gen_vlan(&mut self, id: Option<u32>) -> Cond {
        let tpid = Cond::or(
            Cond::or(self.linktype(0x8100), self.linktype(0x88a8)),
            self.linktype(0x9100),
        );
        let c = match id {
            Some(id) => Cond::and(tpid, Cond::cmp(self.off_nl, 2, Some(0x0fff), Jop::Eq, id)),
            None => tpid,
        };
        self.off_linktype += 4;
        self.off_nl += 4;
        c
    }

    fn gen_cast(&self, what: &str, proto: Proto, col: usize) -> PResult<Cond> {
        Ok(match (what, proto) {
            ("broadcast", Proto::Default | Proto::Link) => gen_ehost(Dir::Dst, [0xff; 6]),
            ("multicast", Proto::Default | Proto::Link) => Cond::cmp(0, 1, None, Jop::Set, 1),
            ("multicast", Proto::Ip) => Cond::and(
                self.linktype(ETHERTYPE_IP),
                Cond::cmp(self.off_nl + 16, 1, None, Jop::Ge, 224),
            ),
            ("multicast", Proto::Ip6) => Cond::and(
                self.linktype(ETHERTYPE_IPV6),
                Cond::cmp(self.off_nl + 24, 1, None, Jop::Eq, 255),
            ),
            _ => {
                return Err(self.err_at(col, format!("`{} {what}` is not supported", proto.name())));
            }
        })
    }

    /// A plain number after qualifiers.
    fn gen_number(&mut self, q: Qual, v: u32, col: usize) -> PResult<Cond> {
        match q.addr {
            Addr::Default | Addr::Host | Addr::Net => {
                if q.proto == Proto::Link {
                    return Err(self.err_at(col, "illegal link layer address"));
                }
                let (mut v, mut mask) = (v, u32::MAX);
                if q.addr == Addr::Net {
                    // A short network number is promoted: `net 10` is 10.0.0.0/8.
                    while v != 0 && v & 0xff00_0000 == 0 {
                        v <<= 8;
                        mask <<= 8;
                    }
                }
                self.gen_host4(q, v, mask, col)
            }
            Addr::Port | Addr::PortRange => self.gen_port(q, v, v, q.addr == Addr::PortRange, col),
            Addr::Proto => self.gen_proto(q.proto, v, col),
        }
    }

    /// `A/len` or `A mask M`: networks only.
    fn gen_masked(&mut self, q: Qual, n: u32, m: u32, col: usize) -> PResult<Cond> {
        if q.addr != Addr::Net {
            return Err(self.err_at(col, "mask syntax is for `net` only"));
        }
        self.gen_host4(q, n, m, col)
    }

    /// `gen_host` for IPv4: IP, ARP and RARP unless a protocol is given.
    fn gen_host4(&self, q: Qual, v: u32, mask: u32, col: usize) -> PResult<Cond> {
        let op = |et: u32, src: u32, dst: u32| self.hostop(q.dir, et, src, dst, v, mask);
        Ok(match q.proto {
            Proto::Default => Cond::or(
                Cond::or(op(ETHERTYPE_IP, 12, 16), op(ETHERTYPE_ARP, 14, 24)),
                op(ETHERTYPE_RARP, 14, 24),
            ),
            Proto::Ip => op(ETHERTYPE_IP, 12, 16),
            Proto::Arp => op(ETHERTYPE_ARP, 14, 24),
            Proto::Rarp => op(ETHERTYPE_RARP, 14, 24),
            Proto::Link => return Err(self.err_at(col, "illegal link layer address")),
            p => {
                return Err(self.err_at(
                    col,
                    format!(
                        "`{}` modifier applied to {}",
                        p.name(),
                        if q.addr == Addr::Net { "net" } else { "host" }
                    ),
                ));
            }
        })
    }

    fn hostop(&self, dir: Dir, et: u32, src: u32, dst: u32, v: u32, mask: u32) -> Cond {
        let one = |off: u32| {
            Cond::and(
                self.linktype(et),
                Cond::cmp(
                    self.off_nl + off,
                    4,
                    (mask != u32::MAX).then_some(mask),
                    Jop::Eq,
                    v,
                ),
            )
        };
        match dir {
            Dir::Src => one(src),
            Dir::Dst => one(dst),
            Dir::And => Cond::and(one(src), one(dst)),
            Dir::Default | Dir::Or => Cond::or(one(src), one(dst)),
        }
    }

    fn gen_host6(&self, dir: Dir, a: u128, m: u128) -> Cond {
        let one = |off: u32| {
            let mut c = self.linktype(ETHERTYPE_IPV6);
            for w in 0..4u32 {
                let shift = 96 - 32 * w;
                let (aw, mw) = ((a >> shift) as u32, (m >> shift) as u32);
                let t = Cond::cmp(
                    self.off_nl + off + 4 * w,
                    4,
                    (mw != u32::MAX).then_some(mw),
                    Jop::Eq,
                    aw,
                );
                c = Cond::and(c, t);
            }
            c
        };
        match dir {
            Dir::Src => one(8),
            Dir::Dst => one(24),
            Dir::And => Cond::and(one(8), one(24)),
            Dir::Default | Dir::Or => Cond::or(one(8), one(24)),
        }
    }

    /// `port`/`portrange` over IPv6 then IPv4, TCP/UDP/SCTP unless one is named.
    fn gen_port(&self, q: Qual, lo: u32, hi: u32, range: bool, col: usize) -> PResult<Cond> {
        let what = if range { "portrange" } else { "port" };
        let ip_proto = match q.proto {
            Proto::Tcp => Some(6),
            Proto::Udp => Some(17),
            Proto::Sctp => Some(132),
            Proto::Default => None,
            p => {
                return Err(self.err_at(
                    col,
                    format!("illegal qualifier of `{what}`: `{}`", p.name()),
                ));
            }
        };
        for v in [lo, hi] {
            if v > 65535 {
                return Err(self.err_at(col, format!("illegal port number {v} > 65535")));
            }
        }
        let (lo, hi) = (lo.min(hi), lo.max(hi));
        let nl = self.off_nl;
        // One port field compared; `load` builds its load.
        let atom = |load: &dyn Fn(u32) -> Arith, off: u32| -> Cond {
            if range {
                Cond::and(
                    Cond::Test {
                        lhs: load(off),
                        op: Jop::Ge,
                        rhs: Arith::Const(lo),
                    },
                    Cond::not(Cond::Test {
                        lhs: load(off),
                        op: Jop::Gt,
                        rhs: Arith::Const(hi),
                    }),
                )
            } else {
                Cond::Test {
                    lhs: load(off),
                    op: Jop::Eq,
                    rhs: Arith::Const(lo),
                }
            }
        };
        let atoms = |load: &dyn Fn(u32) -> Arith| match q.dir {
            Dir::Src => atom(load, 0),
            Dir::Dst => atom(load, 2),
            Dir::And => Cond::and(atom(load, 0), atom(load, 2)),
            Dir::Default | Dir::Or => Cond::or(atom(load, 0), atom(load, 2)),
        };
        let v4_load = |off: u32| Arith::Load {
            at: At::Ihl {
                hdr: nl,
                k: nl + off,
            },
            size: 2,
        };
        let v6_load = |off: u32| Arith::Load {
            at: At::Abs((nl + 40 + off) as u64),
            size: 2,
        };
        let portop4 = |p: u32| {
            Cond::and(
                Cond::and(self.nl_byte(9, p), self.ipfrag_ok()),
                atoms(&v4_load),
            )
        };
        let portop6 = |p: u32| Cond::and(self.nl_byte(6, p), atoms(&v6_load));
        let any = |op: &dyn Fn(u32) -> Cond| match ip_proto {
            Some(p) => op(p),
            None => Cond::or(op(132), Cond::or(op(6), op(17))),
        };
        let v6 = Cond::and(self.linktype(ETHERTYPE_IPV6), any(&portop6));
        let v4 = Cond::and(self.linktype(ETHERTYPE_IP), any(&portop4));
        Ok(Cond::or(v6, v4))
    }

    /// Not an IPv4 fragment other than the first.
    fn ipfrag_ok(&self) -> Cond {
        Cond::not(Cond::cmp(self.off_nl + 6, 2, None, Jop::Set, 0x1fff))
    }

    /// `proto[index:size]` (`gen_load`).
    fn gen_load(&self, proto: Proto, index: Value, size: u8, col: usize) -> PResult<Value> {
        let nl = self.off_nl;
        let load = |base: u32| -> Arith {
            let at = match index.a {
                Arith::Const(k) => At::Abs(base as u64 + k as u64),
                ref a => At::Dyn {
                    index: Box::new(a.clone()),
                    ihl: None,
                    k: base,
                },
            };
            Arith::Load { at, size }
        };
        let with_gate = |g: Cond| match &index.gate {
            Some(ig) => Cond::and(ig.clone(), g),
            None => g,
        };
        Ok(match proto {
            Proto::Link => {
                if !matches!(index.a, Arith::Const(_)) {
                    return Err(
                        self.err_at(col, "`ether[...]` needs a constant offset in this compiler")
                    );
                }
                Value {
                    a: load(0),
                    gate: index.gate,
                }
            }
            Proto::Ip | Proto::Ip6 | Proto::Arp | Proto::Rarp => Value {
                a: load(nl),
                gate: Some(with_gate(self.proto_abbrev(proto, col)?)),
            },
            Proto::Icmp6 => Value {
                a: load(nl + 40),
                gate: Some(with_gate(Cond::and(
                    self.linktype(ETHERTYPE_IPV6),
                    self.nl_byte(6, 58),
                ))),
            },
            Proto::Tcp | Proto::Udp | Proto::Sctp | Proto::Icmp | Proto::Igmp => {
                let at = match index.a {
                    Arith::Const(k) => match nl.checked_add(k) {
                        Some(k) => At::Ihl { hdr: nl, k },
                        None => At::Abs(u64::MAX >> 1),
                    },
                    ref a => At::Dyn {
                        index: Box::new(a.clone()),
                        ihl: Some(nl),
                        k: nl,
                    },
                };
                let g = Cond::and(self.proto_abbrev(proto, col)?, self.ipfrag_ok());
                let g = match index.gate {
                    Some(ig) => Cond::and(ig, g),
                    None => g,
                };
                Value {
                    a: Arith::Load { at, size },
                    gate: Some(Cond::and(self.linktype(ETHERTYPE_IP), g)),
                }
            }
            Proto::Default => return Err(self.err_at(col, "expected a protocol before `[`")),
        })
    }
}

fn shl(v: u32, by: u32) -> u32 {
    v.checked_shl(by).unwrap_or(0)
}

fn addr_name(a: Addr) -> &'static str {
    match a {
        Addr::Default | Addr::Host => "host",
        Addr::Net => "net",
        Addr::Port => "port",
        Addr::PortRange => "portrange",
        Addr::Proto => "proto",
    }
}

/// `ether [src|dst] host MAC`: libpcap compares bytes 2..6 first, then 0..2.
fn gen_ehost(dir: Dir, mac: [u8; 6]) -> Cond {
    let one = |off: u32| {
        Cond::and(
            Cond::cmp(
                off + 2,
                4,
                None,
                Jop::Eq,
                u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]]),
            ),
            Cond::cmp(
                off,
                2,
                None,
                Jop::Eq,
                u16::from_be_bytes([mac[0], mac[1]]) as u32,
            ),
        )
    };
    match dir {
        Dir::Src => one(6),
        Dir::Dst => one(0),
        Dir::And => Cond::and(one(6), one(0)),
        Dir::Default | Dir::Or => Cond::or(one(6), one(0)),
    }
}
