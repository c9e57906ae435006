//! tokio-util codecs on real traffic, under tokio current-thread, tokio multi-thread and smol:
//! scapy-made frames replayed by tcpreplay into `net.a`, captured on `net.b` and decoded per
//! packet (`DecodeExt::decode_with`); items encoded into frames in front of an `AsyncInjector`
//! on a throttled link (`EncodeExt::encode_with`), checked byte for byte by tcpdump.
//!
//! Needs the `tokio`, `smol` and `codec` features (`cargo test --all-features`).
#![cfg(all(feature = "tokio", feature = "smol", feature = "codec"))]

mod common;
use common::alloc::{Counting, allocations};
use common::asyncrt::*;
use common::frames::*;
use common::*;

use std::io;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::{SinkExt, StreamExt, stream};
use netring::codec::{DecodeExt, EncodeExt};
use netring::{AsyncCapture, AsyncInjector, Capture, Injector};
use tokio_util::codec::{Decoder, Encoder};

crate::on_each_runtime!(
    decodes_marked_frames_and_survives_garbage,
    leftovers_never_leak_into_the_next_packet,
    encodes_onto_a_throttled_link,
);

// --- Traffic ------------------------------------------------------------------------------------

/// UDP destination port of the marked frames.
const PORT: u16 = 7777;

/// N frames from SRC_MAC: marked ones (IPv4/UDP to PORT, payload "NRT" + index u32 + random
/// bytes; every 5th 802.1Q-tagged, every 13th double-tagged) and, every 8th, garbage (TCP, UDP
/// with the wrong marker or too short, an odd ethertype, a cut IPv4 header). Prints
/// `m|hex` or `g|hex` per frame.
const SCAPY_CODEC: &str = r#"
import random, sys
from scapy.all import Ether, Dot1Q, Dot1AD, IP, UDP, TCP, Raw, wrpcap
out, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(5)
E = lambda t=None: Ether(src="02:4e:52:00:00:01", dst="02:4e:52:00:00:02", **({} if t is None else {"type": t}))
V4 = lambda: IP(src="10.9.0.1", dst="10.9.0.2")
frames = []
for i in range(n):
    if i % 8 == 5:
        k = (i // 8) % 5
        if k == 0: f = E() / V4() / TCP(sport=1, dport=7777) / Raw(b"NRT" + bytes(8))
        elif k == 1: f = E() / V4() / UDP(sport=1, dport=7777) / Raw(b"NRX" + i.to_bytes(4, "big"))
        elif k == 2: f = E() / V4() / UDP(sport=1, dport=7777) / Raw(b"NR")
        elif k == 3: f = E(0x88b5) / Raw(rng.randbytes(rng.randint(1, 60)))
        else: f = E(0x0800) / Raw(b"\x45\x00\x00")
        frames.append(("g", bytes(f)))
        continue
    l2 = E()
    if i % 13 == 4: l2 = l2 / Dot1AD(vlan=rng.randint(1, 4094)) / Dot1Q(vlan=rng.randint(1, 4094))
    elif i % 5 == 2: l2 = l2 / Dot1Q(vlan=rng.randint(1, 4094), prio=rng.randint(0, 7))
    body = rng.randbytes(rng.randint(0, 300))
    f = l2 / V4() / UDP(sport=40000, dport=7777) / Raw(b"NRT" + i.to_bytes(4, "big") + body)
    frames.append(("m", bytes(f)))
wrpcap(out, [Raw(f) for _, f in frames], linktype=1)
sys.stdout.write("\n".join("%s|%s" % (k, f.hex()) for k, f in frames) + "\n")
"#;

struct CodecFrames {
    file: String,
    /// (marked?, frame as sent).
    frames: Vec<(bool, Vec<u8>)>,
}

static TRAFFIC: OnceLock<CodecFrames> = OnceLock::new();

extern "C" fn remove_traffic() {
    if let Some(t) = TRAFFIC.get() {
        let _ = std::fs::remove_file(&t.file);
    }
}

const N: usize = 1200;

fn traffic() -> &'static CodecFrames {
    TRAFFIC.get_or_init(|| {
        // SAFETY: registers a plain `extern "C" fn` with no preconditions.
        unsafe { libc::atexit(remove_traffic) };
        let file = scratch("codec.pcap");
        let out = run(scapy_script(SCAPY_CODEC).arg(&file).arg(N.to_string()));
        let frames: Vec<(bool, Vec<u8>)> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| {
                let (k, hex) = l.split_once('|').unwrap();
                (k == "m", unhex(hex))
            })
            .collect();
        assert_eq!(frames.len(), N);
        assert_eq!(read_pcap(&file).len(), N);
        CodecFrames { file, frames }
    })
}

/// A frame as a packet socket delivers it: the outer VLAN tag taken out.
fn as_received(frame: &[u8]) -> Vec<u8> {
    match wire_tag(frame) {
        Some(_) => [&frame[..12], &frame[16..]].concat(),
        None => frame.to_vec(),
    }
}

/// Opens a capture on `net.b` and replays the traffic into `net.a`; returns the capture's
/// packets (ours only) and the replay.
fn capture_and_replay<R: Exec>(
    net: &Arc<TestNet>,
) -> (
    impl futures::Stream<Item = netring::Result<netring::OwnedPacket>> + Unpin,
    impl std::future::Future<Output = u64>,
) {
    let rx: AsyncCapture<R> = net
        .within(|| Capture::builder(&net.b).open_async())
        .expect("open_async");
    let ours = rx
        .packets()
        .filter(|r| std::future::ready(r.as_ref().map_or(true, |p| is_ours(p.data()))));
    let sent = replay(net, &net.a, &traffic().file, 20_000);
    (ours, sent)
}

// --- Decoding -----------------------------------------------------------------------------------

/// What a marked frame carries.
#[derive(Debug, PartialEq, Eq)]
struct Marked {
    index: u32,
    body: Bytes,
}

/// Ethernet (inline tags skipped) / IPv4 / UDP to PORT / "NRT" index body -> `Marked`; anything
/// else is an `InvalidData` error. One item per frame.
struct MarkedDecoder;

fn garbage(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_owned())
}

impl Decoder for MarkedDecoder {
    type Item = Marked;
    type Error = io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> io::Result<Option<Marked>> {
        if buf.is_empty() {
            return Ok(None);
        }
        let f = buf.split().freeze(); // the whole frame, whatever happens
        let ethertype = |at: usize| -> io::Result<u16> {
            let t = f
                .get(at..at + 2)
                .ok_or_else(|| garbage("short ethernet header"))?;
            Ok(u16::from_be_bytes([t[0], t[1]]))
        };
        let mut at = 12;
        let mut t = ethertype(at)?;
        while t == 0x8100 || t == 0x88a8 {
            at += 4;
            t = ethertype(at)?;
        }
        at += 2;
        if t != 0x0800 {
            return Err(garbage("not IPv4"));
        }
        let ip = f
            .get(at..at + 20)
            .ok_or_else(|| garbage("short IPv4 header"))?;
        let ihl = usize::from(ip[0] & 0xf) * 4;
        if ip[9] != 17 {
            return Err(garbage("not UDP"));
        }
        let udp = at + ihl;
        let h = f
            .get(udp..udp + 8)
            .ok_or_else(|| garbage("short UDP header"))?;
        if u16::from_be_bytes([h[2], h[3]]) != PORT {
            return Err(garbage("not our port"));
        }
        let len = usize::from(u16::from_be_bytes([h[4], h[5]]));
        let payload = f
            .get(udp + 8..udp + len.max(8))
            .ok_or_else(|| garbage("cut UDP payload"))?;
        if payload.len() < 7 || &payload[..3] != MARKER {
            return Err(garbage("no marker"));
        }
        Ok(Some(Marked {
            index: u32::from_be_bytes(payload[3..7].try_into().unwrap()),
            body: f.slice_ref(&payload[7..]),
        }))
    }
}

/// Every marked frame comes out as its `Marked`, every garbage frame as one error, in order: an
/// error ends the packet, not the stream.
async fn decodes_marked_frames_and_survives_garbage<R: Exec>() {
    if !can_run(
        "decodes_marked_frames_and_survives_garbage",
        &["tcpreplay", "scapy"],
    ) {
        return;
    }
    let t = traffic();
    let net = Arc::new(TestNet::new());
    let (packets, sent) = capture_and_replay::<R>(&net);
    let mut items = packets.decode_with(MarkedDecoder);
    let mut got = Vec::with_capacity(N);
    while got.len() < N {
        let item = within::<R, _>(Duration::from_secs(10), "next item", items.next())
            .await
            .expect("stream ended");
        got.push(item);
    }
    assert_eq!(sent.await, N as u64);
    for (i, ((marked, frame), item)) in t.frames.iter().zip(&got).enumerate() {
        match (marked, item) {
            (true, Ok(m)) => {
                assert_eq!(m.index, i as u32, "item {i}");
                assert_eq!(
                    &m.body[..],
                    &frame[frame.len() - m.body.len()..],
                    "item {i}"
                );
                assert_eq!(
                    frame.len() - m.body.len() - 7,
                    frame_headers(frame),
                    "item {i}"
                );
            }
            (false, Err(e)) => assert_eq!(e.kind(), io::ErrorKind::InvalidData, "item {i}: {e}"),
            _ => panic!("item {i}: marked {marked}, decoded {item:?}"),
        }
    }
    let errors = got.iter().filter(|r| r.is_err()).count();
    assert_eq!(errors, t.frames.iter().filter(|(m, _)| !m).count());
    // Nothing more: one item per packet.
    assert!(
        timeout::<R, _>(Duration::from_millis(300), items.next())
            .await
            .is_none(),
        "an item after the last packet"
    );
    eprintln!(
        "{}: {N} packets -> {} items, {errors} errors",
        R::name(),
        N - errors
    );
}

/// Header bytes before "NRT" in a marked frame: Ethernet, tags, IPv4 (20), UDP (8).
fn frame_headers(frame: &[u8]) -> usize {
    let mut at = 12;
    while matches!(
        u16::from_be_bytes([frame[at], frame[at + 1]]),
        0x8100 | 0x88a8
    ) {
        at += 4;
    }
    at + 2 + 20 + 8
}

/// Two bytes at a time; the default `decode_eof` makes an odd byte left at the end of a packet an
/// error.
struct Pairs;

impl Decoder for Pairs {
    type Item = [u8; 2];
    type Error = io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> io::Result<Option<[u8; 2]>> {
        if buf.len() < 2 {
            return Ok(None);
        }
        let pair = [buf[0], buf[1]];
        let _ = buf.split_to(2);
        Ok(Some(pair))
    }
}

/// Each packet is decoded on its own: pairs never span two packets, and an odd packet ends with
/// exactly one error (its last byte is dropped, not carried into the next packet).
async fn leftovers_never_leak_into_the_next_packet<R: Exec>() {
    if !can_run(
        "leftovers_never_leak_into_the_next_packet",
        &["tcpreplay", "scapy"],
    ) {
        return;
    }
    let t = traffic();
    let mut want: Vec<Option<[u8; 2]>> = Vec::new();
    for (_, frame) in &t.frames {
        let f = as_received(frame);
        want.extend(f.chunks_exact(2).map(|c| Some([c[0], c[1]])));
        if f.len() % 2 == 1 {
            want.push(None);
        }
    }
    let odd = want.iter().filter(|w| w.is_none()).count();
    assert!(odd > N / 4, "only {odd} odd-length frames");
    let net = Arc::new(TestNet::new());
    let (packets, sent) = capture_and_replay::<R>(&net);
    let mut items = packets.decode_with(Pairs);
    let mut got = Vec::with_capacity(want.len());
    while got.len() < want.len() {
        let item = within::<R, _>(Duration::from_secs(10), "next item", items.next())
            .await
            .expect("stream ended");
        got.push(match item {
            Ok(pair) => Some(pair),
            Err(e) => {
                assert_eq!(e.kind(), io::ErrorKind::Other, "{e}");
                None
            }
        });
    }
    assert_eq!(sent.await, N as u64);
    if let Some(i) = got.iter().zip(&want).position(|(g, w)| g != w) {
        panic!(
            "item {i}: got {:?}, want {:?} (around: got {:?}, want {:?})",
            got[i],
            want[i],
            &got[i.saturating_sub(3)..(i + 3).min(got.len())],
            &want[i.saturating_sub(3)..(i + 3).min(want.len())]
        );
    }
    eprintln!(
        "{}: {N} packets -> {} pairs, {odd} leftover errors",
        R::name(),
        want.len() - odd
    );
}

// --- Encoding -----------------------------------------------------------------------------------

/// A message to send: index and body.
struct Message {
    index: u32,
    body: Vec<u8>,
}

/// Message -> Ethernet (SRC_MAC -> DST_MAC) / IPv4 / UDP to PORT / "NRT" index body, with the
/// IPv4 header checksum.
struct MessageEncoder;

impl Encoder<&Message> for MessageEncoder {
    type Error = io::Error;

    fn encode(&mut self, m: &Message, dst: &mut BytesMut) -> io::Result<()> {
        let udp_len = 8 + 7 + m.body.len();
        let ip_len = 20 + udp_len;
        dst.reserve(14 + ip_len);
        dst.put_slice(&DST_MAC);
        dst.put_slice(&SRC_MAC);
        dst.put_u16(0x0800);
        let ip_at = dst.len();
        dst.put_u8(0x45);
        dst.put_u8(0);
        dst.put_u16(ip_len as u16);
        dst.put_u16(m.index as u16);
        dst.put_u16(0x4000);
        dst.put_u8(64);
        dst.put_u8(17);
        dst.put_u16(0);
        dst.put_slice(&[10, 9, 0, 1, 10, 9, 0, 2]);
        let sum = checksum(&dst[ip_at..ip_at + 20]);
        dst[ip_at + 10..ip_at + 12].copy_from_slice(&sum.to_be_bytes());
        dst.put_u16(40000);
        dst.put_u16(PORT);
        dst.put_u16(udp_len as u16);
        dst.put_u16(0); // no UDP checksum (allowed over IPv4)
        dst.put_slice(MARKER);
        dst.put_u32(m.index);
        dst.put_slice(&m.body);
        Ok(())
    }
}

fn checksum(b: &[u8]) -> u16 {
    let mut s: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// 3000 messages through the encoder into a 16-slot ring on a 20 Mbit/s link: `poll_ready`
/// waits (backpressure reaches the producer through the encoder), nothing is lost, and tcpdump
/// on the peer sees exactly the frames, in order. The expected frames are checked with scapy's
/// parser (IPv4 checksum, UDP port, marker and index), not only against our own bytes.
async fn encodes_onto_a_throttled_link<R: Exec>() {
    if !can_run("encodes_onto_a_throttled_link", &["tcpdump", "tc", "scapy"]) {
        return;
    }
    const M: usize = 3000;
    let _pinned = pin_to_one_cpu();
    let mut rng = Rng::new(9);
    let messages: Vec<Message> = (0..M as u32)
        .map(|index| {
            let len = rng.range(0, 400);
            Message {
                index,
                body: (0..len).map(|_| rng.next_u64() as u8).collect(),
            }
        })
        .collect();
    let want: Vec<Vec<u8>> = messages
        .iter()
        .map(|m| {
            let mut b = BytesMut::new();
            MessageEncoder.encode(m, &mut b).unwrap();
            b.to_vec()
        })
        .collect();

    let net = TestNet::new();
    throttle(&net, &net.a, "20mbit");
    let file = scratch("codec-encode.pcap");
    let dump = Tcpdump::start(&net, &net.b, &file);
    let mut tx: AsyncInjector<R> = net
        .within(|| Injector::builder(&net.a).frame_count(16).open_async())
        .expect("open_async");
    let mut probe = Probe::new(&mut tx);
    {
        let mut sink = (&mut probe).encode_with(MessageEncoder);
        let mut items = stream::iter(messages.iter().map(Ok));
        within::<R, _>(
            Duration::from_secs(60),
            "send_all",
            sink.send_all(&mut items),
        )
        .await
        .expect("send_all never fails under backpressure");
        within::<R, _>(
            Duration::from_secs(30),
            "close",
            SinkExt::<&Message>::close(&mut sink),
        )
        .await
        .expect("close");
    }
    let waits = probe.ready_pending;
    assert_eq!(probe.accepted, M as u64);
    assert!(waits > 0, "poll_ready never waited on a throttled link");
    assert_eq!(tx.get_ref().in_flight(), 0);

    let records = dump.wait_for_records(M, Duration::from_secs(30));
    let stats = dump.stop();
    assert_eq!(records, M, "tcpdump recorded {records} of {M} ({stats:?})");
    assert_eq!(stats.dropped_by_kernel, 0, "{stats:?}");
    assert_frames("encoded", &read_pcap(&file), &want);
    assert_eq!(link_stat(&net, &net.a, "tx_dropped"), 0);

    // An independent reading of what went on the wire.
    let check = r#"
import sys
from scapy.all import rdpcap, IP, UDP, Raw
bad = 0
for i, p in enumerate(rdpcap(sys.argv[1])):
    ip = p[IP]
    w = IP(bytes(ip))
    del w.chksum
    load = bytes(p[Raw].load)
    if ip.chksum != IP(bytes(w)).chksum or p[UDP].dport != 7777 or load[:3] != b"NRT" \
            or int.from_bytes(load[3:7], "big") != i:
        bad += 1
print(bad)
"#;
    let out = run(std::process::Command::new(SCAPY_PYTHON).args(["-c", check, &file]));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0",
        "frames scapy finds wrong"
    );
    std::fs::remove_file(&file).unwrap();
    eprintln!(
        "{}: {M} messages encoded onto a 16-slot ring at 20 Mbit/s, poll_ready waited {waits} \
         times; tcpdump {stats:?}",
        R::name()
    );
}

// --- Allocation counting ------------------------------------------------------------------------

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Once the buffers have grown, decoding and encoding allocate nothing per packet (with a
/// decoder and an encoder that keep nothing of the buffer).
#[test]
fn no_allocation_per_packet_once_warm() {
    use futures::executor::block_on;

    /// Sums the bytes of each frame; one item per frame.
    struct Sum;
    impl Decoder for Sum {
        type Item = u64;
        type Error = io::Error;
        fn decode(&mut self, buf: &mut BytesMut) -> io::Result<Option<u64>> {
            if buf.is_empty() {
                return Ok(None);
            }
            let s = buf.iter().map(|&b| u64::from(b)).sum();
            buf.clear();
            Ok(Some(s))
        }
    }
    /// Writes `n` bytes of `n as u8`.
    struct Fill;
    impl Encoder<usize> for Fill {
        type Error = io::Error;
        fn encode(&mut self, n: usize, dst: &mut BytesMut) -> io::Result<()> {
            dst.put_bytes(n as u8, n);
            Ok(())
        }
    }
    /// Counts frames and bytes.
    #[derive(Default)]
    struct Tally(u64, u64);
    impl<B: AsRef<[u8]>> futures::Sink<B> for Tally {
        type Error = io::Error;
        fn poll_ready(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn start_send(self: std::pin::Pin<&mut Self>, f: B) -> io::Result<()> {
            let t = self.get_mut();
            t.0 += 1;
            t.1 += f.as_ref().len() as u64;
            Ok(())
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_close(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    let frames: Vec<Vec<u8>> = (0..1000usize).map(|i| vec![1u8; 60 + i % 1400]).collect();
    // The largest first, so the buffer has its final size after one packet.
    let mut largest = frames.clone();
    largest.sort_by_key(|f| std::cmp::Reverse(f.len()));
    let items = stream::iter(frames.iter().map(Ok::<_, io::Error>));
    let mut decoded = stream::iter(largest.iter().take(1).map(Ok::<_, io::Error>))
        .chain(items)
        .decode_with(Sum);
    assert_eq!(block_on(decoded.next()).unwrap().unwrap(), 1059);
    let (sums, allocs) = allocations(|| {
        let mut total = 0u64;
        while let Some(s) = block_on(decoded.next()) {
            total += s.unwrap();
        }
        total
    });
    assert_eq!(sums, frames.iter().map(|f| f.len() as u64).sum::<u64>());
    assert_eq!(allocs, 0, "decoding allocated");

    let mut encoded = Tally::default().encode_with(Fill);
    block_on(encoded.send(1500)).unwrap();
    let ((), allocs) = allocations(|| {
        for n in 60..1500 {
            block_on(encoded.feed(n)).unwrap();
        }
    });
    assert_eq!(allocs, 0, "encoding allocated");
    assert_eq!(encoded.get_ref().0, 1 + 1440);
}
