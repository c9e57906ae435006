//! TX with real traffic: frames injected with `Injector` on one end of a veth pair, captured by
//! tcpdump on the other end, and compared byte for byte with what was sent.

mod common;

use std::time::Duration;

use common::frames::*;
use common::*;
use netring::{Injector, Timestamp};

/// How a frame is handed to the ring.
#[derive(Debug, Clone, Copy)]
enum Path {
    /// `send`: one copy into a free slot.
    Send,
    /// `reserve` + `data_mut` (written in place) + `commit`.
    Reserve,
    /// `try_reserve` (retried after `wait_sent` when the ring is full) + in place + `commit`.
    TryReserve,
    /// `reserve` of a larger frame, written in place, `truncate`d to the frame's length.
    ReserveTruncate,
    /// `try_send` (retried after `wait_sent` when the ring is full).
    TrySend,
}

const PATHS: [Path; 5] = [
    Path::Send,
    Path::Reserve,
    Path::TryReserve,
    Path::ReserveTruncate,
    Path::TrySend,
];

const WAIT: Duration = Duration::from_secs(10);

fn inject(tx: &mut Injector, spec: &FrameSpec, path: Path) {
    match path {
        Path::Send => tx.send(&spec.build()).unwrap(),
        Path::Reserve => {
            let mut slot = tx
                .reserve(spec.len, Some(WAIT))
                .unwrap()
                .expect("a free slot");
            spec.fill(slot.data_mut());
            slot.commit();
        }
        Path::TryReserve => {
            let mut tries = 0;
            loop {
                if let Some(mut slot) = tx.try_reserve(spec.len).unwrap() {
                    spec.fill(slot.data_mut());
                    slot.commit();
                    break;
                }
                tries += 1;
                assert!(tries < 1000, "no free slot");
                tx.wait_sent(Some(WAIT)).unwrap();
            }
        }
        Path::ReserveTruncate => {
            let room = (spec.len + 100).min(tx.interface().mtu() as usize + 14);
            let mut slot = tx.reserve(room, Some(WAIT)).unwrap().expect("a free slot");
            assert_eq!(slot.data_mut().len(), room);
            spec.fill(&mut slot.data_mut()[..spec.len]);
            slot.truncate(spec.len);
            assert_eq!(slot.data_mut().len(), spec.len);
            slot.commit();
        }
        Path::TrySend => {
            let frame = spec.build();
            let mut tries = 0;
            while !tx.try_send(&frame).unwrap() {
                tries += 1;
                assert!(tries < 1000, "no free slot");
                tx.wait_sent(Some(WAIT)).unwrap();
            }
        }
    }
}

/// Injects `specs` on net.a (waiting for the ring to drain every `pace` frames), captures them
/// with tcpdump on net.b, and checks the capture against them byte for byte, in order.
fn inject_and_verify(net: &TestNet, mut tx: Injector, specs: &[FrameSpec], pace: usize) {
    let file = scratch("tx.pcap");
    let dump = Tcpdump::start(net, &net.b, &file);
    {
        // Frames sent from one CPU reach the veth peer in order.
        let _pin = pin_to_one_cpu();
        for (i, spec) in specs.iter().enumerate() {
            inject(&mut tx, spec, PATHS[i % PATHS.len()]);
            if i % pace == pace - 1 {
                assert!(tx.wait_sent(Some(WAIT)).unwrap(), "frames still in flight");
            }
        }
        assert!(tx.wait_sent(Some(WAIT)).unwrap(), "frames still in flight");
    }
    assert_eq!(tx.in_flight(), 0);
    assert_eq!(tx.queued(), 0);
    let n = specs.len();
    let seen = dump.wait_for_records(n, Duration::from_secs(20));
    let stats = dump.stop();
    eprintln!("{n} frames injected; tcpdump: {stats:?}");
    assert_eq!(seen, n, "records tcpdump wrote before it was stopped");
    assert_eq!(stats.dropped_by_kernel, 0, "{stats:?}");
    assert_eq!(stats.captured, n as u64, "{stats:?}");

    // Our reader, plus libpcap's own count of the records.
    assert_eq!(tcpdump_count(&file), n, "records per `tcpdump -r | wc -l`");
    let reader = netring::pcap::PcapReader::new(std::fs::File::open(&file).unwrap()).unwrap();
    assert!(reader.is_nanosecond());
    assert_eq!(reader.link_type(), netring::pcap::LINKTYPE_ETHERNET);
    let records: Vec<_> = reader.collect::<Result<_, _>>().unwrap();
    assert_eq!(records.len(), n);
    let mut prev = Timestamp { sec: 0, nsec: 0 };
    for (i, (rec, spec)) in records.iter().zip(specs).enumerate() {
        assert_frame_eq("tcpdump capture", i, &rec.data, &spec.build());
        assert_eq!(
            rec.wire_len as usize, spec.len,
            "frame {i}: length on the wire"
        );
        assert!(rec.timestamp >= prev, "frame {i}: timestamps go backwards");
        prev = rec.timestamp;
    }
    let _ = std::fs::remove_file(&file);
}

#[test]
fn tx_ring_slots_reused_frames_match_tcpdump() {
    if !can_run("tx_ring_slots_reused_frames_match_tcpdump", &["tcpdump"]) {
        return;
    }
    let net = TestNet::new();
    let tx = net
        .within(|| Injector::builder(&net.a).frame_count(64).open())
        .unwrap();
    assert_eq!(tx.frame_count(), 64);
    // 20 turns of the ring, every path, sizes 60..=1514, some 802.1Q and 802.1ad tagged.
    let specs = frame_specs(64 * 20, 60, 1514, 21);
    assert!(specs.iter().any(|s| s.len == 1514 && s.tag.is_some()));
    inject_and_verify(&net, tx, &specs, 32);
}

#[test]
fn tx_ring_with_qdisc_bypass_frames_match_tcpdump() {
    if !can_run(
        "tx_ring_with_qdisc_bypass_frames_match_tcpdump",
        &["tcpdump"],
    ) {
        return;
    }
    let net = TestNet::new();
    let tx = net
        .within(|| {
            Injector::builder(&net.a)
                .frame_count(64)
                .qdisc_bypass(true)
                .open()
        })
        .unwrap();
    let specs = frame_specs(64 * 10, 60, 1514, 22);
    inject_and_verify(&net, tx, &specs, 32);
}

#[test]
fn tx_jumbo_frames_match_tcpdump() {
    if !can_run("tx_jumbo_frames_match_tcpdump", &["tcpdump"]) {
        return;
    }
    let net = TestNet::with_mtu(9000);
    let tx = net
        .within(|| {
            Injector::builder(&net.a)
                .frame_size(16384)
                .frame_count(16)
                .open()
        })
        .unwrap();
    assert_eq!(tx.frame_count(), 16);
    assert!(tx.max_frame_len() >= 9014);
    let specs = frame_specs(16 * 12, 60, 9014, 23);
    assert!(specs.iter().filter(|s| s.len == 9014).count() >= 2);
    inject_and_verify(&net, tx, &specs, 8);
}
