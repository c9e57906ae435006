//! `PcapReader` over arbitrary bytes: every record is read (or the reader stops at an error), no
//! panic, and what it returns is self-consistent and survives a write/read round trip.
//!
//! The first input byte picks how the bytes are handed over (read sizes, interrupted reads), so
//! the reader's short-read handling is exercised too; the rest is the file.

#![no_main]

use std::io::{self, Read};

use libfuzzer_sys::fuzz_target;
use netring::pcap::{PcapReader, PcapWriter};

/// A reader that returns at most `chunk` bytes per call and, if `interrupt`, fails every third
/// call with `Interrupted` (which readers must retry).
struct Trickle<'a> {
    data: &'a [u8],
    chunk: usize,
    interrupt: bool,
    calls: u32,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.calls += 1;
        if self.interrupt && self.calls.is_multiple_of(3) {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let n = buf.len().min(self.chunk).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, file)) = input.split_first() else {
        return;
    };
    let src = Trickle {
        data: file,
        chunk: if mode & 0x7f == 0 {
            usize::MAX
        } else {
            (mode & 0x7f) as usize
        },
        interrupt: mode & 0x80 != 0,
        calls: 0,
    };
    let Ok(mut reader) = PcapReader::new(src) else {
        return;
    };
    let _ = (reader.link_type(), reader.snaplen(), reader.is_nanosecond());

    let mut records = Vec::new();
    let mut total = 24usize;
    let mut failed = false;
    for item in reader.by_ref() {
        match item {
            Ok(rec) => {
                assert!(!failed, "a record after an error");
                assert!(rec.timestamp.nsec < 1_000_000_000, "{:?}", rec.timestamp);
                total += 16 + rec.data.len();
                assert!(total <= file.len(), "read more than the file holds");
                records.push(rec);
            }
            Err(e) => {
                failed = true;
                let _ = e.to_string();
            }
        }
    }
    // A finished (or failed) reader stays finished.
    assert!(reader.next().is_none());
    if !failed {
        assert_eq!(
            total,
            file.len(),
            "clean end of file before the end of the data"
        );
    }

    // What was read writes back and reads again the same.
    let mut out = Vec::new();
    let mut w = PcapWriter::new(&mut out).unwrap();
    for r in &records {
        w.write_frame(r.timestamp, r.wire_len as usize, &r.data, None)
            .unwrap();
    }
    w.into_inner().unwrap();
    let again: Vec<_> = PcapReader::new(&out[..])
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(again.len(), records.len());
    for (a, r) in again.iter().zip(&records) {
        assert_eq!(a.timestamp, r.timestamp);
        assert_eq!(a.data, r.data);
        assert_eq!(a.wire_len, r.wire_len.max(r.data.len() as u32));
    }
});
