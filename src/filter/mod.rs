//! tcpdump-style filter expressions compiled to classic BPF, in Rust, with libpcap's semantics for
//! Ethernet (`DLT_EN10MB`): `Filter::new("tcp port 80 or vlan 100")`.
//!
//! # Grammar
//!
//! Primitives (`[..]` optional, `a|b` alternatives):
//!
//! - `ether [DIR] host MAC` or `ether DIR MAC`, MAC as `aa:bb:cc:dd:ee:ff`,
//!   `aa-bb-..`, `aa.bb...`, `aabb.ccdd.eeff` or 12 hex digits; `ether proto N|\ip|\ip6|\arp|\rarp`
//!   (N ≤ 1500 is an 802.2 SAP as in libpcap; SAP 0xe0 (IPX) and the AppleTalk types are refused);
//!   `[ether] broadcast`, `[ether] multicast`, `ip multicast`, `ip6 multicast`.
//! - `[ip|arp|rarp] [DIR] host A.B.C.D` (without `ip`/`arp`/`rarp`: IPv4, ARP and RARP),
//!   `[ip6] [DIR] host V6`, `[ip|arp|rarp|ip6] [DIR] net A.B.C.D/LEN | A.B.C.D mask M | A | A.B |
//!   A.B.C | V6/LEN`; `DIR ADDR` (no `host`) means `host`; a dotted address with fewer than 4
//!   parts is a network, as in libpcap.
//! - `[tcp|udp|sctp] [DIR] port N`, `[tcp|udp|sctp] [DIR] portrange N-M` (IPv4 and IPv6; without
//!   a protocol TCP, UDP and SCTP; IPv4 only on the first fragment, behind any IP options; IPv6
//!   only with the transport header right after the fixed header).
//! - `ip proto N`, `ip6 proto N` (also behind one fragment header), `proto N` (either), N a number
//!   or `\name` from `/etc/protocols` (`\tcp`, `\udp`, `\icmp`, `\ipv6-icmp`, ...).
//! - `ip`, `ip6`, `arp`, `rarp`, `tcp`, `udp`, `sctp`, `icmp`, `icmp6`, `igmp`.
//! - `vlan [ID]`: 802.1Q, 802.1ad or 0x9100 tag (with that id); as in libpcap, every `vlan`
//!   moves the link-type and network offsets of *everything after it* in the text by 4 bytes.
//! - `less N`, `greater N`; comparisons `X op Y` with `op` one of `> < >= <= = == !=` over
//!   arithmetic (`+ - * / % & | ^ << >>`, unary `-`, parentheses) on numbers (decimal, `0x` hex,
//!   `0` octal), `len`, `tcpflags`/`tcp-syn`/`icmptype`/`icmp-echo`... constants, and loads
//!   `PROTO[offset]` / `PROTO[offset:1|2|4]` with PROTO one of `ether` (constant offset only),
//!   `ip ip6 arp rarp tcp udp sctp icmp icmp6 igmp`.
//!
//! DIR is `src`, `dst`, `src or dst`, `src and dst`. Combinators: `not`/`!` (binds tightest),
//! `and`/`&&` and `or`/`||` (equal precedence, left to right, as in libpcap), parentheses. After
//! `and`/`or`, a bare value (or `not` value, or a parenthesized list of them) repeats the
//! previous qualifiers: `host 10.0.0.1 or 10.0.0.2`, `tcp dst port 80 or 443`,
//! `port (80 or 443)`. Names (hosts, services, networks) are not resolved: give numbers. Not
//! supported (refused with [`Error::FilterSyntax`]): `gateway`, `protochain`, `ip broadcast`,
//! `mpls`, `pppoe*`, `geneve`, `inbound`/`outbound`, 802.11 and other link types' qualifiers.
//!
//! # Semantics
//!
//! Tests run in libpcap's order, so a load past the end of a short frame rejects it exactly
//! where libpcap's unoptimized program does (libpcap's optimizer reorders some tests and can
//! decide such truncated frames differently; on complete frames they agree).
//!
//! Two programs come out of one expression. [`Filter::frame_program`] reads frames with every VLAN
//! tag inline (pcap files, AF_XDP, plain buffers). [`Filter::kernel_program`] is for AF_PACKET
//! sockets, where the kernel has moved the outermost tag into skb metadata: it reads that tag
//! with the ancillary loads, so both programs accept exactly the same frames (the frame with its
//! tag put back), which libpcap's own live filters do not guarantee.

mod codegen;
mod parse;
mod peephole;

use crate::bpf::{BpfProgram, FrameInfo};
use crate::error::{Error, Result};
use crate::packet::AsPacket;

/// A compiled tcpdump-style filter expression.
///
/// ```
/// use netring::filter::Filter;
///
/// let f = Filter::new("udp dst port 53 or vlan 100")?;
/// let mut dns = vec![0u8; 42];
/// dns[12..14].copy_from_slice(&[0x08, 0x00]); // IPv4
/// dns[14] = 0x45; // version 4, 20-byte header
/// dns[23] = 17; // UDP
/// dns[36..38].copy_from_slice(&53u16.to_be_bytes());
/// assert!(f.matches(&dns));
/// assert!(!Filter::new("tcp")?.matches(&dns));
/// # Ok::<(), netring::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Filter {
    expression: String,
    frame: BpfProgram,
    kernel: BpfProgram,
}

impl Filter {
    /// Compiles an expression. An empty one (or only whitespace) accepts everything, as in
    /// tcpdump. Errors are [`Error::FilterSyntax`] with the 1-based column of the offending token.
    ///
    /// ```
    /// use netring::filter::Filter;
    /// let err = Filter::new("tcp prot 80").unwrap_err();
    /// assert!(matches!(err, netring::Error::FilterSyntax { column: 5, .. }), "{err}");
    /// ```
    pub fn new(expression: &str) -> Result<Filter> {
        let syntax = |column: usize, message: String| Error::FilterSyntax {
            expression: expression.to_string(),
            column,
            message,
        };
        let cond = parse::parse(expression).map_err(|e| syntax(e.column, e.message))?;
        let (frame, kernel) = codegen::programs(&cond).map_err(|e| match e {
            codegen::GenError::TooLong(n) => syntax(
                1,
                format!(
                    "the expression compiles to {n} instructions, more than the 4096 a classic BPF program may have: split it or simplify it"
                ),
            ),
            codegen::GenError::TooDeep => syntax(
                1,
                "an arithmetic expression needs more than the 16 scratch cells of classic BPF: nest it less".into(),
            ),
        })?;
        Ok(Filter {
            expression: expression.to_string(),
            frame,
            kernel,
        })
    }

    /// The expression as given.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// Program for frames whose VLAN tags are all inline (pcap files, AF_XDP, plain buffers).
    pub fn frame_program(&self) -> &BpfProgram {
        &self.frame
    }

    /// Program for AF_PACKET sockets: the kernel has moved the outermost VLAN tag into skb
    /// metadata (read here with the ancillary loads `SKF_AD_VLAN_TAG_PRESENT`, `SKF_AD_VLAN_TPID`,
    /// `SKF_AD_VLAN_TAG`); inner tags stay inline. It accepts exactly the frames
    /// [`frame_program`](Self::frame_program) accepts with the tag put back, relying on what the
    /// kernel does: only 802.1Q (0x8100) and 802.1ad (0x88a8) tags are moved to metadata.
    ///
    /// ```no_run
    /// use netring::{Capture, filter::Filter};
    /// let f = Filter::new("vlan 100 and tcp port 443")?;
    /// let cap = Capture::builder("eth0").filter(f.kernel_program().clone()).open()?;
    /// # Ok::<(), netring::Error>(())
    /// ```
    pub fn kernel_program(&self) -> &BpfProgram {
        &self.kernel
    }

    /// The verdict in user space (the classic BPF interpreter): a packet whose VLAN tag the
    /// kernel stripped (`p.vlan()` is `Some`) goes through [`kernel_program`](Self::kernel_program)
    /// with that tag as metadata, any other through [`frame_program`](Self::frame_program).
    pub fn matches<P: AsPacket + ?Sized>(&self, p: &P) -> bool {
        let info = FrameInfo::of(p);
        match info.vlan {
            None => self.frame.matches(p.data(), &info),
            Some(tag) if codegen::STRIPPED_TPIDS.contains(&u32::from(tag.tpid)) => {
                self.kernel.matches(p.data(), &info)
            }
            Some(tag) => {
                // A TPID the kernel never strips (the kernel program relies on that): judge the
                // frame with its tag put back.
                let data = p.data();
                if data.len() < 12 {
                    return self.frame.matches(data, &info);
                }
                let mut frame = Vec::with_capacity(data.len() + 4);
                frame.extend_from_slice(&data[..12]);
                frame.extend_from_slice(&tag.tpid.to_be_bytes());
                frame.extend_from_slice(&tag.tci.to_be_bytes());
                frame.extend_from_slice(&data[12..]);
                let whole = FrameInfo {
                    wire_len: info.wire_len.saturating_add(4),
                    vlan: None,
                    ..info
                };
                self.frame.matches(&frame, &whole)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(expr: &str) -> usize {
        match Filter::new(expr) {
            Err(Error::FilterSyntax { column, .. }) => column,
            other => panic!("{expr:?}: expected a syntax error, got {other:?}"),
        }
    }

    #[test]
    fn empty_accepts_everything() {
        for e in ["", "   ", "\t\n"] {
            let f = Filter::new(e).unwrap();
            assert!(f.matches(&[0u8; 3][..]));
            assert_eq!(f.frame_program().len(), 1);
        }
    }

    #[test]
    fn error_columns() {
        assert_eq!(column("tcp prot 80"), 5);
        assert_eq!(column("host"), 5);
        assert_eq!(column("port 80 and"), 12);
        assert_eq!(column("port 70000"), 6);
        assert_eq!(column("net 10.0.0.1/8"), 5);
        assert_eq!(column("net 10.0.0.0/33"), 14);
        assert_eq!(column("(tcp"), 5);
        assert_eq!(column("tcp)"), 4);
        assert_eq!(column("gateway 1.2.3.4"), 1);
        assert_eq!(column("host 1.2.3.4 or tcp or 80"), 24);
        assert_eq!(column("ip[0:3] = 1"), 6);
        assert_eq!(column("len / 0 > 1"), 5);
        assert_eq!(column("vlan 4096"), 6);
        assert_eq!(column("ether host 1.2.3.4"), 12);
        assert_eq!(column("host www.example.com"), 6);
        assert_eq!(column("tcp port 80 §"), 13);
        assert_eq!(column("port 80 or"), 11);
    }

    #[test]
    fn display_points_at_the_column() {
        let e = Filter::new("tcp prot 80").unwrap_err().to_string();
        assert!(e.starts_with("filter \"tcp prot 80\": column 5: "), "{e}");
    }

    #[test]
    fn nesting_and_length_are_bounded() {
        let deep = format!("{}tcp{}", "(".repeat(500), ")".repeat(500));
        assert!(matches!(
            Filter::new(&deep),
            Err(Error::FilterSyntax { .. })
        ));
        let nots = format!("{}tcp", "not ".repeat(500));
        assert!(matches!(
            Filter::new(&nots),
            Err(Error::FilterSyntax { .. })
        ));
        let long = vec!["port 80"; 400].join(" or ");
        let err = Filter::new(&long).unwrap_err().to_string();
        assert!(err.contains("4096"), "{err}");
        // Long flat chains stay within the test thread's stack (2 MiB) and the node budget.
        let chain = vec!["len > 1"; 2100].join(" or ");
        let err = Filter::new(&chain).unwrap_err().to_string();
        assert!(err.contains("4096"), "{err}");
        let chain = vec!["1 = 1"; 3000].join(" and ");
        assert!(Filter::new(&chain).is_err());
        // The deepest tree the node budget allows, built, folded, generated and dropped.
        let chain: Vec<String> = (0..2040).map(|n| format!("len = {n}")).collect();
        assert!(Filter::new(&chain.join(" and not ")).is_err());
        let chain: Vec<String> = (0..1000).map(|n| format!("len = {n}")).collect();
        let f = Filter::new(&chain.join(" or ")).unwrap();
        assert!(
            f.frame_program().len() < 2100,
            "{}",
            f.frame_program().len()
        );
        assert!(f.matches(&[0u8; 999][..]) && !f.matches(&[0u8; 1000][..]));
        let minus = format!("{}1 = 1", "-".repeat(500));
        assert!(Filter::new(&minus).is_err());
        let arith = format!("{}len{} > 0", "(len + ".repeat(40), ")".repeat(40));
        assert!(Filter::new(&arith).is_err());
    }

    /// Frames with an outer 802.1Q/802.1ad tag: the kernel program on the frame without its tag
    /// (tag in metadata) says what the frame program says on the whole frame.
    #[test]
    fn kernel_program_agrees_on_stripped_tags() {
        use crate::afpacket::VlanTag;
        let exprs = [
            "1 + tcp[0] > 5",
            "0 + udp[ip[0] & 3] = 0",
            "2 * ip[len & 7] > 10",
            "ether[11:4] = 0x00810000 or ether[13:2] > 3",
            "0 + icmp[1:4] != 7",
            "vlan and 1 + tcp[2:1] < 100",
            "tcp or vlan and ip",
            "len > 60",
            "ether[12:4] & 0xffff0fff = 0x81000005",
        ];
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut checked = 0;
        for e in exprs {
            let f = Filter::new(e).unwrap();
            let mut accepted = 0;
            for _ in 0..3000 {
                let len = 16 + (next() % 60) as usize;
                let mut frame: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                frame[12..14].copy_from_slice(if next() % 2 == 0 {
                    &[0x81, 0]
                } else {
                    &[0x88, 0xa8]
                });
                if next() % 2 == 0 {
                    frame[14] &= 0x00; // low IHL-ish nibbles and small TCI bytes too
                }
                if len >= 18 && next() % 2 == 0 {
                    frame[16..18].copy_from_slice(&[0x08, 0x00]);
                }
                let tag = VlanTag {
                    tpid: u16::from_be_bytes([frame[12], frame[13]]),
                    tci: u16::from_be_bytes([frame[14], frame[15]]),
                };
                let mut stripped = frame[..12].to_vec();
                stripped.extend_from_slice(&frame[16..]);
                let whole = FrameInfo {
                    wire_len: len as u32,
                    ..FrameInfo::default()
                };
                let meta = FrameInfo {
                    wire_len: len as u32 - 4,
                    vlan: Some(tag),
                    ..FrameInfo::default()
                };
                let verdict = f.frame_program().run(&frame, &whole);
                assert_eq!(
                    verdict,
                    f.kernel_program().run(&stripped, &meta),
                    "{e:?} on {frame:02x?}"
                );
                accepted += (verdict != 0) as usize;
                checked += 1;
            }
            assert!(
                (1..3000).contains(&accepted),
                "{e:?} accepts {accepted} of 3000"
            );
        }
        assert_eq!(checked, 27000);
    }

    #[test]
    fn vlan_moves_offsets() {
        let mut tagged = vec![0u8; 60];
        tagged[12..14].copy_from_slice(&[0x81, 0x00]);
        tagged[14..16].copy_from_slice(&100u16.to_be_bytes());
        tagged[16..18].copy_from_slice(&[0x08, 0x00]);
        assert!(Filter::new("vlan 100 and ip").unwrap().matches(&tagged));
        assert!(!Filter::new("vlan 101 and ip").unwrap().matches(&tagged));
        assert!(!Filter::new("ip").unwrap().matches(&tagged));
        assert!(Filter::new("vlan and not ip6").unwrap().matches(&tagged));
    }
}
