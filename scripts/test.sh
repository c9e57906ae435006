#!/usr/bin/env bash
# Installs what the test suite needs (Debian packages) and runs every test: unit tests, kernel
# tests on throwaway network namespaces, doctests, and a build of the examples and benchmark.
# Run as root: the tests create network namespaces and raw sockets.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v ip >/dev/null || need_pkgs+=(iproute2)
command -v tcpdump >/dev/null || need_pkgs+=(tcpdump)
command -v tcpreplay >/dev/null || need_pkgs+=(tcpreplay)
command -v trafgen >/dev/null || need_pkgs+=(netsniff-ng)
command -v setpriv >/dev/null || need_pkgs+=(util-linux)
command -v capsh >/dev/null || need_pkgs+=(libcap2-bin)
/usr/bin/python3 -c 'import scapy.all' 2>/dev/null || need_pkgs+=(python3-scapy)
[ -e /usr/include/pcap/pcap.h ] || need_pkgs+=(libpcap-dev)
if ((${#need_pkgs[@]})); then
  echo "installing: ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

# Privileged tests fail instead of skipping when something they need is missing.
export NETRING_REQUIRE_PRIV="${NETRING_REQUIRE_PRIV:-1}"
cargo build --all-targets --all-features
cargo test --all-features -- --test-threads=2
