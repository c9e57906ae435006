mod common;
use common::*;
use std::time::Duration;

#[test]
fn smoke_rx_tx() {
    if !can_run("smoke_rx_tx", &["scapy"]) {
        return;
    }
    let net = TestNet::new();
    let mut cap = net.within(|| netring::Capture::open(&net.b)).unwrap();
    let mut tx = net.within(|| netring::Injector::open(&net.a)).unwrap();
    for i in 0..100u8 {
        let mut f = vec![0xffu8; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
        f.extend_from_slice(&[0x88, 0xb5]);
        f.extend(std::iter::repeat(i).take(50));
        tx.send(&f).unwrap();
    }
    assert!(tx.wait_sent(Some(Duration::from_secs(5))).unwrap());
    let mut n = 0;
    while let Some(b) = cap.next_batch(Some(Duration::from_millis(200))).unwrap() {
        for p in &b {
            assert_eq!(p.data().len(), 64);
            n += 1;
        }
    }
    assert_eq!(n, 100);
    let out = net.cmd(SCAPY_PYTHON).args(["-c", &format!("from scapy.all import *; sendp([Ether(dst='ff:ff:ff:ff:ff:ff')/IP()/UDP(dport=9)/Raw(b'x'*i) for i in range(1,51)], iface='{}', verbose=0)", net.a)]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut n = 0;
    while let Some(b) = cap.next_batch(Some(Duration::from_millis(200))).unwrap() {
        n += b.len();
    }
    assert_eq!(n, 50);
    eprintln!("{:?}", cap.cumulative_stats().unwrap());
}
