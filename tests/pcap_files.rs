//! pcap files against real traffic and an independent reader: what `PcapWriter` writes from a
//! capture must read back in tcpdump as the frames were on the wire (VLAN tags included, the
//! capture's nanosecond timestamps), and files written by scapy and tcpdump must replay through
//! `PcapReader` + `Injector` unchanged.

mod common;

use std::fs::File;
use std::io::BufWriter;
use std::time::{Duration, Instant};

use common::frames::*;
use common::*;
use netring::pcap::{LINKTYPE_ETHERNET, PcapReader, PcapWriter};
use netring::{Capture, Injector, Timestamp, VlanTag};

#[test]
fn pcap_writer_output_reads_in_tcpdump_as_on_the_wire() {
    if !can_run(
        "pcap_writer_output_reads_in_tcpdump",
        &["scapy", "tcpdump", "taskset"],
    ) {
        return;
    }
    let sf = scapy_frames("pcap-w", 400, 31, 60, 1514, 0);
    let n = sf.frames.len();
    let net = TestNet::new();
    let mut cap = net.within(|| Capture::open(&net.b)).unwrap();
    let file = scratch("netring-written.pcap");
    let mut w = PcapWriter::new(BufWriter::new(File::create(&file).unwrap())).unwrap();
    let mut seen: Vec<(Timestamp, Option<VlanTag>)> = Vec::with_capacity(n);

    let sent = std::thread::scope(|s| {
        let sender = s.spawn(|| scapy_sendp_file(&net, &net.a, &sf.file));
        let deadline = Instant::now() + Duration::from_secs(60);
        while seen.len() < n && Instant::now() < deadline {
            let Some(batch) = cap.next_batch(Some(Duration::from_millis(250))).unwrap() else {
                continue;
            };
            for p in batch.iter().filter(|p| is_ours(p.data())) {
                // Both writer entry points: borrowed packets, and every 10th as an owned one.
                if seen.len() % 10 == 9 {
                    w.write_owned(&p.to_owned_packet()).unwrap();
                } else {
                    w.write_packet(&p).unwrap();
                }
                seen.push((p.timestamp(), p.vlan()));
            }
        }
        sender.join().expect("scapy thread")
    });
    assert_eq!(sent, n, "scapy sent");
    assert_eq!(seen.len(), n, "frames captured");
    assert_eq!(w.records(), n as u64);
    w.into_inner().unwrap();
    assert_eq!(cap.cumulative_stats().unwrap().drops, 0);

    let dumped = tcpdump_dump(&file);
    assert_eq!(dumped.len(), n, "packets tcpdump read from our file");
    assert_eq!(tcpdump_count(&file), n);
    let mut sub_microsecond = 0;
    for (i, ((d, want), (ts, tag))) in dumped.iter().zip(&sf.frames).zip(&seen).enumerate() {
        // The frame as it was on the wire, the stripped tag back in place.
        assert_frame_eq("tcpdump -r of PcapWriter's file", i, &d.bytes, want);
        assert_eq!(*tag, wire_tag(want), "frame {i}: tag the capture reported");
        // tcpdump prints the capture's own timestamp, to the nanosecond.
        assert_eq!(
            d.ts,
            format!("{}.{:09}", ts.sec, ts.nsec),
            "frame {i}: timestamp"
        );
        sub_microsecond += usize::from(ts.nsec % 1000 != 0);
        // And decodes the link layer as on the wire.
        let s = &d.summary;
        assert!(
            s.contains(&format!("length {}:", want.len())),
            "frame {i}: {s}"
        );
        match wire_tag(want) {
            None => assert!(s.contains("ethertype IPv4 (0x0800)"), "frame {i}: {s}"),
            Some(t) => {
                let name = if t.tpid == 0x88a8 {
                    "ethertype 802.1Q-QinQ (0x88a8)"
                } else {
                    "ethertype 802.1Q (0x8100)"
                };
                let vlan = format!("vlan {}, p {}", t.id(), t.tci >> 13);
                assert!(s.contains(name) && s.contains(&vlan), "frame {i}: {s}");
            }
        }
    }
    assert!(
        sub_microsecond > n / 2,
        "only {sub_microsecond} of {n} timestamps have sub-microsecond digits"
    );
    // Our own reader agrees.
    let back = PcapReader::new(File::open(&file).unwrap()).unwrap();
    assert!(back.is_nanosecond());
    for (i, (r, (ts, _))) in back.zip(&seen).enumerate() {
        let r = r.unwrap();
        assert_frame_eq("PcapReader of PcapWriter's file", i, &r.data, &sf.frames[i]);
        assert_eq!(r.timestamp, *ts);
        assert_eq!(r.wire_len as usize, sf.frames[i].len());
    }
    let _ = std::fs::remove_file(&file);
}

/// Injects `frames` on net.a (64-slot ring, draining every 32 frames) while tcpdump captures
/// on net.b; checks tcpdump's file against the frames and returns its path.
fn replay_and_capture(net: &TestNet, frames: &[Vec<u8>], name: &str) -> String {
    let file = scratch(name);
    let dump = Tcpdump::start(net, &net.b, &file);
    let mut tx = net
        .within(|| Injector::builder(&net.a).frame_count(64).open())
        .unwrap();
    {
        // Frames sent from one CPU reach the veth peer in order.
        let _pin = pin_to_one_cpu();
        for (i, f) in frames.iter().enumerate() {
            tx.send(f).unwrap();
            if i % 32 == 31 {
                assert!(tx.wait_sent(Some(Duration::from_secs(10))).unwrap());
            }
        }
        assert!(tx.wait_sent(Some(Duration::from_secs(10))).unwrap());
    }
    let n = frames.len();
    let got = dump.wait_for_records(n, Duration::from_secs(20));
    let stats = dump.stop();
    assert_eq!(got, n, "records tcpdump wrote");
    assert_eq!(stats.dropped_by_kernel, 0, "{stats:?}");
    assert_eq!(stats.captured, n as u64, "{stats:?}");
    assert_eq!(tcpdump_count(&file), n);
    let reader = PcapReader::new(File::open(&file).unwrap()).unwrap();
    assert!(reader.is_nanosecond(), "tcpdump wrote a nanosecond file");
    let records: Vec<_> = reader.collect::<Result<_, _>>().unwrap();
    assert_eq!(records.len(), n);
    for (i, (r, want)) in records.iter().zip(frames).enumerate() {
        assert_frame_eq(name, i, &r.data, want);
        assert_eq!(r.wire_len as usize, want.len());
    }
    file
}

#[test]
fn pcap_files_from_scapy_and_tcpdump_replay_through_injector() {
    if !can_run("pcap_files_replay_through_injector", &["scapy", "tcpdump"]) {
        return;
    }
    let sf = scapy_frames("pcap-replay", 600, 32, 60, 1514, 0);

    // scapy's file: microsecond pcap, read with our reader.
    let reader = PcapReader::new(File::open(&sf.file).unwrap()).unwrap();
    assert!(!reader.is_nanosecond());
    assert_eq!(reader.link_type(), LINKTYPE_ETHERNET);
    let from_scapy: Vec<Vec<u8>> = reader.map(|r| r.unwrap().data).collect();
    assert_eq!(from_scapy, sf.frames);

    let net = TestNet::new();
    let first = replay_and_capture(&net, &from_scapy, "replay-of-scapy.pcap");

    // tcpdump's file (nanosecond, written by libpcap), read with our reader and replayed again.
    let reader = PcapReader::new(File::open(&first).unwrap()).unwrap();
    let from_tcpdump: Vec<Vec<u8>> = reader.map(|r| r.unwrap().data).collect();
    let second = replay_and_capture(&net, &from_tcpdump, "replay-of-tcpdump.pcap");
    assert_eq!(read_pcap(&second), sf.frames);
    for f in [first, second] {
        let _ = std::fs::remove_file(f);
    }
}

/// scapy stores `round(fraction * 1e6)` microseconds, which is 1000000 for a time a hair below
/// the next second (seen in a generated file: usec = 1000000 on record 163). tcpdump reads such
/// a file; so must `PcapReader`, carrying the second.
#[test]
fn pcap_reader_takes_scapy_rounded_up_timestamps() {
    if !can_run(
        "pcap_reader_takes_scapy_rounded_up_timestamps",
        &["scapy", "tcpdump"],
    ) {
        return;
    }
    let file = scratch("scapy-rounding.pcap");
    let script = "import sys\n\
                  from scapy.all import Ether, Raw, wrpcap\n\
                  ps = []\n\
                  for i, t in enumerate([1000.9999996, 1001.5, 1002.0000004]):\n\
                  \x20   p = Ether(src='02:4e:52:00:00:01', dst='02:4e:52:00:00:02') / Raw(bytes([i]) * 46)\n\
                  \x20   p.time = t\n\
                  \x20   ps.append(p)\n\
                  wrpcap(sys.argv[1], ps)\n";
    run(std::process::Command::new(SCAPY_PYTHON).args(["-c", script, &file]));
    assert_eq!(tcpdump_count(&file), 3);
    let reader = PcapReader::new(File::open(&file).unwrap()).unwrap();
    assert!(!reader.is_nanosecond());
    let records: Vec<_> = reader.collect::<Result<_, _>>().unwrap();
    let times: Vec<(u32, u32)> = records
        .iter()
        .map(|r| (r.timestamp.sec, r.timestamp.nsec))
        .collect();
    assert_eq!(times, [(1001, 0), (1001, 500_000_000), (1002, 0)]);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.data.len(), 60);
        assert!(r.data[14..].iter().all(|&b| b == i as u8));
    }
    let _ = std::fs::remove_file(&file);
}
