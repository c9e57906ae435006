//! A symmetric flow hash: both directions of a conversation give the same value.

/// Hashes the flow a frame belongs to, the same way for both directions of the flow.
///
/// `data` starts at the Ethernet header. What is hashed:
///
/// - **IPv4 / IPv6 with TCP, UDP, UDP-Lite or SCTP:** protocol, addresses and ports.
/// - **Other IP protocols (ICMP, GRE, ESP, ...):** protocol and addresses.
/// - **IP fragments:** protocol and addresses only, for *every* fragment, the first one
///   included. Only the first fragment carries the ports, so hashing them there would send a
///   datagram's first fragment and the rest to different places; this way a datagram's fragments
///   stay together. The price: a flow that sends both fragmented and unfragmented datagrams may
///   hash to two values (its fragmented datagrams by addresses, the others by addresses and ports).
/// - **IPv6 extension headers** (hop-by-hop, routing, destination options, AH) are skipped to
///   reach the transport header; a fragment header makes the packet a fragment as above.
/// - **Anything else** (ARP, LLDP, a truncated IP header, ...): the EtherType and the two MAC
///   addresses.
///
/// Up to two inline VLAN tags (802.1Q, 802.1ad, 0x9100) are skipped and **not** hashed, so a
/// frame hashes the same whether the kernel stripped its tag (AF_PACKET reports it in
/// [`AsPacket::vlan`](crate::AsPacket::vlan)) or left it in the bytes (AF_XDP, pcap files).
/// Flows that differ only by VLAN therefore share a value.
///
/// Symmetry comes from ordering the two endpoints (address, port) before hashing, not from
/// XOR-ing them, so `A:1 -> B:2` and `A:2 -> B:1` still differ. The value is stable (no random
/// seed: the same frame hashes the same in every process), so do not use it where an attacker
/// choosing flows could hurt you by colliding them. Never panics: short or malformed frames hash
/// whatever can be read.
///
/// ```
/// use netring::combinators::flow_hash;
///
/// // Ethernet + IPv4 + UDP 10.0.0.1:1000 -> 10.0.0.2:53, and the reply.
/// fn udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
///     let mut f = vec![0u8; 42];
///     f[12..14].copy_from_slice(&[0x08, 0x00]);
///     f[14] = 0x45; // IPv4, 20-byte header
///     f[23] = 17; // UDP
///     f[26..30].copy_from_slice(&src);
///     f[30..34].copy_from_slice(&dst);
///     f[34..36].copy_from_slice(&sport.to_be_bytes());
///     f[36..38].copy_from_slice(&dport.to_be_bytes());
///     f
/// }
/// let query = udp([10, 0, 0, 1], [10, 0, 0, 2], 1000, 53);
/// let reply = udp([10, 0, 0, 2], [10, 0, 0, 1], 53, 1000);
/// assert_eq!(flow_hash(&query), flow_hash(&reply));
/// assert_ne!(flow_hash(&query), flow_hash(&udp([10, 0, 0, 1], [10, 0, 0, 2], 1001, 53)));
/// ```
pub fn flow_hash(data: &[u8]) -> u64 {
    let Some((ethertype, l3)) = skip_link(data) else {
        return mac_pair(data);
    };
    let flow = match ethertype {
        ETH_P_IPV4 => ipv4(&data[l3..]),
        ETH_P_IPV6 => ipv6(&data[l3..]),
        _ => None,
    };
    match flow {
        Some(f) => f.hash(),
        None => mac_pair(data),
    }
}

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const VLAN_TPIDS: [u16; 3] = [0x8100, 0x88a8, 0x9100];

/// The EtherType after up to two VLAN tags, and where the network header starts.
fn skip_link(data: &[u8]) -> Option<(u16, usize)> {
    let mut at = 12;
    for _ in 0..=2 {
        let ty = be16(data, at)?;
        if !VLAN_TPIDS.contains(&ty) {
            return Some((ty, at + 2));
        }
        at += 4;
    }
    // A third tag: treat the frame as non-IP.
    None
}

fn be16(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*data.get(at)?, *data.get(at + 1)?]))
}

/// Non-IP (or unreadable) frames: the EtherType and the two MAC addresses, in order.
fn mac_pair(data: &[u8]) -> u64 {
    let mut h = Hasher::new(0x004d_4143);
    let (Some(a), Some(b)) = (data.get(0..6), data.get(6..12)) else {
        h.bytes(data);
        return h.finish();
    };
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    h.bytes(lo);
    h.bytes(hi);
    h.word(u64::from(skip_link(data).map_or(0, |(ty, _)| ty)));
    h.finish()
}

/// What identifies a flow: protocol, two addresses (4 or 16 bytes), ports if known.
struct Flow<'a> {
    proto: u8,
    src: &'a [u8],
    dst: &'a [u8],
    ports: Option<(u16, u16)>,
}

impl Flow<'_> {
    fn hash(&self) -> u64 {
        let (sp, dp) = self.ports.unwrap_or((0, 0));
        // Order the endpoints so both directions feed the hasher the same bytes.
        let (a, b) = if (self.src, sp) <= (self.dst, dp) {
            ((self.src, sp), (self.dst, dp))
        } else {
            ((self.dst, dp), (self.src, sp))
        };
        let mut h = Hasher::new(self.src.len() as u64);
        h.word(u64::from(self.proto) | u64::from(self.ports.is_some()) << 8);
        h.bytes(a.0);
        h.bytes(b.0);
        h.word(u64::from(a.1) << 16 | u64::from(b.1));
        h.finish()
    }
}

/// Protocols whose first four header bytes are the source and destination ports.
fn has_ports(proto: u8) -> bool {
    matches!(proto, 6 | 17 | 132 | 136) // TCP, UDP, SCTP, UDP-Lite
}

fn ports(l4: &[u8], proto: u8) -> Option<(u16, u16)> {
    if !has_ports(proto) {
        return None;
    }
    Some((be16(l4, 0)?, be16(l4, 2)?))
}

fn ipv4(ip: &[u8]) -> Option<Flow<'_>> {
    let first = *ip.first()?;
    let ihl = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || ihl < 20 || ip.len() < 20 {
        return None;
    }
    let proto = ip[9];
    let frag = u16::from_be_bytes([ip[6], ip[7]]);
    let fragment = frag & 0x3fff != 0; // more-fragments flag or a non-zero offset
    Some(Flow {
        proto,
        src: &ip[12..16],
        dst: &ip[16..20],
        ports: if fragment {
            None
        } else {
            ip.get(ihl..).and_then(|l4| ports(l4, proto))
        },
    })
}

fn ipv6(ip: &[u8]) -> Option<Flow<'_>> {
    if ip.len() < 40 || ip[0] >> 4 != 6 {
        return None;
    }
    let (src, dst) = (&ip[8..24], &ip[24..40]);
    let mut next = ip[6];
    let mut at = 40;
    let mut fragment = false;
    // A bounded walk over the extension headers.
    for _ in 0..8 {
        let len = match next {
            0 | 43 | 60 => (usize::from(*ip.get(at + 1)?) + 1) * 8, // hop-by-hop, routing, dst opts
            51 => (usize::from(*ip.get(at + 1)?) + 2) * 4,          // AH
            44 => {
                fragment = true;
                8
            }
            _ => break,
        };
        next = *ip.get(at)?;
        at += len;
    }
    Some(Flow {
        proto: next,
        src,
        dst,
        ports: if fragment {
            None
        } else {
            ip.get(at..).and_then(|l4| ports(l4, next))
        },
    })
}

/// A small 64-bit hasher: words folded in with a multiply-rotate, finished with a strong mixer
/// (the `splitmix64` finalizer) so every output bit depends on every input bit.
struct Hasher(u64);

impl Hasher {
    fn new(seed: u64) -> Self {
        Hasher(0x9e37_79b9_7f4a_7c15 ^ seed.wrapping_mul(0xff51_afd7_ed55_8ccd))
    }

    fn word(&mut self, w: u64) {
        self.0 = (self.0 ^ w)
            .wrapping_mul(0xbf58_476d_1ce4_e5b9)
            .rotate_left(31);
    }

    fn bytes(&mut self, b: &[u8]) {
        let mut chunks = b.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.word(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        self.word(u64::from_le_bytes(w) ^ (rest.len() as u64) << 59);
    }

    fn finish(&self) -> u64 {
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
    const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];

    /// Ethernet header (with inline tags) + `l3` under `ethertype`.
    fn eth(src: [u8; 6], dst: [u8; 6], tags: &[u16], ethertype: u16, l3: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        for (i, vid) in tags.iter().enumerate() {
            let tpid: u16 = if i + 1 < tags.len() { 0x88a8 } else { 0x8100 };
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&vid.to_be_bytes());
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(l3);
        f
    }

    fn v4(src: [u8; 4], dst: [u8; 4], proto: u8, frag: u16, l4: &[u8]) -> Vec<u8> {
        let mut ip = vec![0u8; 20];
        ip[0] = 0x45;
        ip[6..8].copy_from_slice(&frag.to_be_bytes());
        ip[9] = proto;
        ip[12..16].copy_from_slice(&src);
        ip[16..20].copy_from_slice(&dst);
        ip.extend_from_slice(l4);
        ip
    }

    fn v6(src: [u8; 16], dst: [u8; 16], next: u8, ext: &[u8]) -> Vec<u8> {
        let mut ip = vec![0u8; 40];
        ip[0] = 0x60;
        ip[6] = next;
        ip[8..24].copy_from_slice(&src);
        ip[24..40].copy_from_slice(&dst);
        ip.extend_from_slice(ext);
        ip
    }

    fn l4(sport: u16, dport: u16) -> Vec<u8> {
        let mut v = sport.to_be_bytes().to_vec();
        v.extend_from_slice(&dport.to_be_bytes());
        v.extend_from_slice(&[0u8; 16]);
        v
    }

    fn addr6(last: u8) -> [u8; 16] {
        let mut a = [0u8; 16];
        a[0] = 0xfd;
        a[15] = last;
        a
    }

    /// Both directions of a flow, for every protocol and tagging: equal hashes; different flows:
    /// different hashes.
    #[test]
    fn both_directions_hash_the_same() {
        let (a, b) = ([10, 1, 2, 3], [192, 168, 7, 9]);
        let mut seen = std::collections::HashSet::new();
        for tags in [&[][..], &[7], &[100, 200]] {
            for proto in [6u8, 17, 132, 136] {
                for (sp, dp) in [(1000u16, 80u16), (80, 1000), (5353, 5353), (0, 65535)] {
                    let fwd = eth(MAC_A, MAC_B, tags, 0x0800, &v4(a, b, proto, 0, &l4(sp, dp)));
                    let rev = eth(MAC_B, MAC_A, tags, 0x0800, &v4(b, a, proto, 0, &l4(dp, sp)));
                    assert_eq!(flow_hash(&fwd), flow_hash(&rev), "v4 {proto} {sp} {dp}");
                    let fwd6 = eth(
                        MAC_A,
                        MAC_B,
                        tags,
                        0x86dd,
                        &v6(addr6(1), addr6(2), proto, &l4(sp, dp)),
                    );
                    let rev6 = eth(
                        MAC_B,
                        MAC_A,
                        tags,
                        0x86dd,
                        &v6(addr6(2), addr6(1), proto, &l4(dp, sp)),
                    );
                    assert_eq!(flow_hash(&fwd6), flow_hash(&rev6), "v6 {proto} {sp} {dp}");
                    if tags.is_empty() {
                        seen.insert(flow_hash(&fwd));
                        seen.insert(flow_hash(&fwd6));
                    }
                }
            }
        }
        // 4 protocols x 4 port pairs x 2 families: all distinct.
        assert_eq!(seen.len(), 32);
    }

    /// The hash ignores VLAN tags, so a tag stripped by the kernel changes nothing.
    #[test]
    fn tags_are_not_hashed() {
        let ip = v4([1, 1, 1, 1], [2, 2, 2, 2], 17, 0, &l4(1, 2));
        let plain = flow_hash(&eth(MAC_A, MAC_B, &[], 0x0800, &ip));
        assert_eq!(plain, flow_hash(&eth(MAC_A, MAC_B, &[5], 0x0800, &ip)));
        assert_eq!(plain, flow_hash(&eth(MAC_A, MAC_B, &[5, 6], 0x0800, &ip)));
    }

    /// Ports in swapped roles are another flow; XOR-style symmetry would merge them.
    #[test]
    fn swapped_ports_alone_are_another_flow() {
        let x = eth(
            MAC_A,
            MAC_B,
            &[],
            0x0800,
            &v4([1, 0, 0, 1], [1, 0, 0, 2], 6, 0, &l4(1, 2)),
        );
        let y = eth(
            MAC_A,
            MAC_B,
            &[],
            0x0800,
            &v4([1, 0, 0, 1], [1, 0, 0, 2], 6, 0, &l4(2, 1)),
        );
        assert_ne!(flow_hash(&x), flow_hash(&y));
    }

    /// Every fragment of a datagram (first with ports, later ones without) hashes by addresses:
    /// all the same, in both directions, and the same as a portless protocol would not be.
    #[test]
    fn fragments_stay_together() {
        let (a, b) = ([10, 0, 0, 1], [10, 0, 0, 2]);
        let first = eth(
            MAC_A,
            MAC_B,
            &[],
            0x0800,
            &v4(a, b, 17, 0x2000, &l4(4000, 53)),
        );
        let middle = eth(
            MAC_A,
            MAC_B,
            &[],
            0x0800,
            &v4(a, b, 17, 0x2000 | 185, &[9; 24]),
        );
        let last = eth(MAC_A, MAC_B, &[], 0x0800, &v4(a, b, 17, 370, &[7; 24]));
        let back = eth(
            MAC_B,
            MAC_A,
            &[],
            0x0800,
            &v4(b, a, 17, 0x2000, &l4(53, 4000)),
        );
        let h = flow_hash(&first);
        assert_eq!(h, flow_hash(&middle));
        assert_eq!(h, flow_hash(&last));
        assert_eq!(h, flow_hash(&back));
        // Don't-fragment alone is not a fragment.
        let df = eth(
            MAC_A,
            MAC_B,
            &[],
            0x0800,
            &v4(a, b, 17, 0x4000, &l4(4000, 53)),
        );
        assert_ne!(h, flow_hash(&df));

        // IPv6: a fragment header (next header UDP) before the UDP header or the payload.
        let frag = |next: u8, offset_m: u16, rest: &[u8]| {
            let mut ext = vec![next, 0];
            ext.extend_from_slice(&offset_m.to_be_bytes());
            ext.extend_from_slice(&[0, 0, 0, 42]);
            ext.extend_from_slice(rest);
            ext
        };
        let f1 = eth(
            MAC_A,
            MAC_B,
            &[],
            0x86dd,
            &v6(addr6(1), addr6(2), 44, &frag(17, 1, &l4(4000, 53))),
        );
        let f2 = eth(
            MAC_A,
            MAC_B,
            &[],
            0x86dd,
            &v6(addr6(1), addr6(2), 44, &frag(17, 1448 << 3, &[3; 30])),
        );
        let r1 = eth(
            MAC_B,
            MAC_A,
            &[7],
            0x86dd,
            &v6(addr6(2), addr6(1), 44, &frag(17, 1, &l4(53, 4000))),
        );
        assert_eq!(flow_hash(&f1), flow_hash(&f2));
        assert_eq!(flow_hash(&f1), flow_hash(&r1));
    }

    /// IPv6 extension headers are walked to the ports.
    #[test]
    fn ipv6_extension_headers() {
        // Hop-by-hop (8 bytes) then destination options (16 bytes) then TCP.
        let ext = |sp, dp| {
            let mut e = vec![60, 0, 0, 0, 0, 0, 0, 0];
            e.extend_from_slice(&[6, 1]);
            e.extend_from_slice(&[0; 14]);
            e.extend_from_slice(&l4(sp, dp));
            e
        };
        let fwd = eth(
            MAC_A,
            MAC_B,
            &[],
            0x86dd,
            &v6(addr6(1), addr6(2), 0, &ext(1234, 443)),
        );
        let rev = eth(
            MAC_B,
            MAC_A,
            &[],
            0x86dd,
            &v6(addr6(2), addr6(1), 0, &ext(443, 1234)),
        );
        let other = eth(
            MAC_A,
            MAC_B,
            &[],
            0x86dd,
            &v6(addr6(1), addr6(2), 0, &ext(1235, 443)),
        );
        assert_eq!(flow_hash(&fwd), flow_hash(&rev));
        assert_ne!(flow_hash(&fwd), flow_hash(&other));
    }

    /// Non-IP: MAC pair (either order) and EtherType.
    #[test]
    fn non_ip_hashes_the_mac_pair() {
        let arp = eth(MAC_A, MAC_B, &[], 0x0806, &[1; 28]);
        let arp_back = eth(MAC_B, MAC_A, &[3], 0x0806, &[2; 28]);
        let lldp = eth(MAC_A, MAC_B, &[], 0x88cc, &[1; 28]);
        assert_eq!(flow_hash(&arp), flow_hash(&arp_back));
        assert_ne!(flow_hash(&arp), flow_hash(&lldp));
    }

    /// Short, truncated and garbage frames: some value, never a panic; a truncated transport
    /// header still hashes symmetrically.
    #[test]
    fn short_and_malformed_frames() {
        let mut rng = 0x1234_5678_9abc_def1u64;
        for len in 0..200 {
            let mut f = vec![0u8; len];
            for b in &mut f {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                *b = rng as u8;
            }
            if len > 14 {
                f[12..14].copy_from_slice(if len % 2 == 0 {
                    &[0x08, 0x00]
                } else {
                    &[0x86, 0xdd]
                });
                f[14] = if len % 2 == 0 {
                    0x40 | (rng as u8 & 0x0f)
                } else {
                    0x60
                };
            }
            let _ = flow_hash(&f);
        }
        let full = eth(
            MAC_A,
            MAC_B,
            &[],
            0x0800,
            &v4([1, 2, 3, 4], [5, 6, 7, 8], 6, 0, &l4(9, 10)),
        );
        let back = eth(
            MAC_B,
            MAC_A,
            &[],
            0x0800,
            &v4([5, 6, 7, 8], [1, 2, 3, 4], 6, 0, &l4(10, 9)),
        );
        for cut in 12..=full.len() {
            assert_eq!(
                flow_hash(&full[..cut]),
                flow_hash(&back[..cut]),
                "cut at {cut}"
            );
        }
    }
}
