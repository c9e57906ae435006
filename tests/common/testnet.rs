//! Throwaway test hosts: a network namespace holding one veth pair, removed on drop (also when
//! the test panics). Shared by the tests, the examples and the benchmark (`#[path]` include).
//!
//! Nothing here touches the root namespace: the veth pair is created inside the new namespace.
#![allow(dead_code)]

use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

const PREFIX: &str = "netring-t";

/// True when CI demands that privileged tests run (`NETRING_REQUIRE_PRIV=1`).
pub fn priv_required() -> bool {
    std::env::var("NETRING_REQUIRE_PRIV").is_ok_and(|v| v == "1")
}

/// Checks that we can build test hosts (root, `ip`) and that `tools` are installed. Under
/// `NETRING_REQUIRE_PRIV=1` a missing piece is a panic; otherwise the test prints why it is
/// skipped and the caller returns.
pub fn can_run(test: &str, tools: &[&str]) -> bool {
    let mut missing = Vec::new();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root (CAP_NET_RAW, CAP_NET_ADMIN, CAP_SYS_ADMIN)".to_string());
    }
    for tool in std::iter::once(&"ip").chain(tools) {
        if !tool_exists(tool) {
            missing.push(format!("the `{tool}` tool"));
        }
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "{test}: needs {} (install with scripts/test.sh)",
        missing.join(", ")
    );
    if priv_required() {
        panic!("{msg}; NETRING_REQUIRE_PRIV=1 forbids skipping");
    }
    eprintln!("SKIPPED {msg}");
    false
}

fn tool_exists(tool: &str) -> bool {
    if tool == "scapy" {
        return Command::new(SCAPY_PYTHON)
            .args(["-c", "import scapy.all"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    }
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The interpreter Debian's python3-scapy is installed for.
pub const SCAPY_PYTHON: &str = "/usr/bin/python3";

/// `python3 -c script` with scapy's interpreter, here, killed after 120 s: add the script's
/// arguments and [`run`] it.
pub fn scapy_script(script: &str) -> Command {
    let mut cmd = Command::new("timeout");
    cmd.args(["-s", "KILL", "120", SCAPY_PYTHON, "-c", script]);
    cmd
}

/// Runs a command and panics with its output if it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A network namespace with a veth pair `a` <-> `b` inside it, both up, IPv6 off (so the links stay
/// quiet unless a test sends something).
#[derive(Debug)]
pub struct TestNet {
    pub ns: String,
    pub a: String,
    pub b: String,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl TestNet {
    /// A new namespace with a veth pair at the default MTU (1500).
    pub fn new() -> Self {
        Self::with_mtu(1500)
    }

    /// A new namespace with a veth pair at `mtu`.
    pub fn with_mtu(mtu: u32) -> Self {
        Self::with_options(mtu, 1)
    }

    /// A new namespace with a veth pair at `mtu` with `queues` RX/TX queues on each end.
    pub fn with_options(mtu: u32, queues: u32) -> Self {
        sweep_stale();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let net = TestNet {
            ns: format!("{PREFIX}{pid}-{n}"),
            a: format!("nr{n}a"),
            b: format!("nr{n}b"),
        };
        run(Command::new("ip").args(["netns", "add", &net.ns]));
        // From here on, Drop removes the namespace even if a step below panics.
        net.sysctl("net.ipv6.conf.all.disable_ipv6", "1");
        net.sysctl("net.ipv6.conf.default.disable_ipv6", "1");
        let q = queues.to_string();
        net.ip(&[
            "link",
            "add",
            &net.a,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            &net.b,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
        ]);
        for dev in [&net.a, &net.b] {
            net.ip(&["link", "set", dev, "mtu", &mtu.to_string()]);
            net.ip(&["link", "set", dev, "up"]);
        }
        net.ip(&["link", "set", "lo", "up"]);
        net
    }

    /// Runs `ip -n NS ARGS...`.
    pub fn ip(&self, args: &[&str]) -> Output {
        run(Command::new("ip").arg("-n").arg(&self.ns).args(args))
    }

    /// Sets a sysctl inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) {
        run(self.cmd("sysctl").args(["-qw", &format!("{key}={value}")]));
    }

    /// A command that runs inside the namespace (`ip netns exec NS PROGRAM`).
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, program]);
        c
    }

    /// Moves the current thread into the namespace until the guard drops.
    pub fn enter(&self) -> netring::netns::NetnsGuard {
        netring::netns::enter(&self.ns).expect("entering the test namespace")
    }

    /// Runs `f` inside the namespace (sockets opened there stay there).
    pub fn within<T>(&self, f: impl FnOnce() -> T) -> T {
        let _g = self.enter();
        f()
    }

    /// Waits until `dev`'s operational state inside the namespace is "up" (carrier on both ends).
    pub fn wait_oper_up(&self, dev: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let out = run(self
                .cmd("cat")
                .arg(format!("/sys/class/net/{dev}/operstate")));
            if String::from_utf8_lossy(&out.stdout).trim() == "up" {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{dev} did not come up"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// MAC address of an interface of this namespace.
    pub fn mac(&self, dev: &str) -> [u8; 6] {
        self.within(|| netring::Interface::by_name(dev).unwrap().mac())
    }
}

impl Default for TestNet {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pair inside it.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.ns])
            .stderr(Stdio::null())
            .status();
    }
}

/// Removes namespaces left behind by test processes that were killed (no Drop ran).
fn sweep_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// A background command (tcpdump, tcpreplay, ...) killed on drop.
pub struct Background {
    pub child: std::process::Child,
}

impl Background {
    pub fn spawn(cmd: &mut Command) -> Self {
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        Background { child }
    }

    /// Sends SIGINT (tcpdump flushes its file and exits) and waits, up to `secs`.
    pub fn interrupt_and_wait(mut self, secs: u64) -> Output {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let child = std::mem::replace(
            &mut self.child,
            Command::new("true").spawn().expect("spawn true"),
        );
        child.wait_with_output().expect("waiting for child")
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts tcpdump on `dev` inside the namespace, writing `file`, and waits until it is
/// listening (it prints "listening on" to stderr).
pub fn start_tcpdump(net: &TestNet, dev: &str, file: &str, filter: &[&str]) -> Background {
    use std::io::{BufRead, BufReader};
    let mut bg = Background::spawn(
        net.cmd("tcpdump")
            .args([
                "-i",
                dev,
                "-w",
                file,
                // libpcap's immediate mode uses fixed slots sized by the snaplen: keep the
                // snaplen near the largest test frame and the buffer large, or bursts drop.
                "-B",
                "65536",
                "-s",
                "9216",
                "-n",
                "-U",
                "--immediate-mode",
            ])
            .args(["--time-stamp-precision=nano"])
            .args(filter),
    );
    let stderr = bg.child.stderr.take().expect("tcpdump stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stderr).lines();
        let mut sent = false;
        while let Some(Ok(line)) = lines.next() {
            if !sent && line.contains("listening on") {
                let _ = tx.send(());
                sent = true;
            }
        }
    });
    rx.recv_timeout(std::time::Duration::from_secs(10))
        .expect("tcpdump did not start listening within 10 s");
    bg
}

/// A unique scratch file path under the target directory's tmp (removed by the caller or left for
/// inspection on failure).
pub fn scratch(name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("netring-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("{n}-{name}"))
        .to_string_lossy()
        .into_owned()
}
