#!/usr/bin/env bash
# Builds jatah and runs the lab: a simulated Diskominfo gateway with four
# OPDs in network namespaces, live iperf3 traffic, and per-OPD rates printed
# from jatah's own counters. Needs root. Everything it creates is removed
# when it ends (also on ctrl-c). Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

if [[ $(id -u) -ne 0 ]]; then
  echo "lab.sh: run as root (the lab creates network namespaces and loads eBPF programs)" >&2
  exit 1
fi

./scripts/setup.sh lab
echo "lab.sh: building jatah (release)"
cargo build --release --quiet -p jatah 2>&1 | grep -vE '^warning: jatah@' || true
exec ./target/release/jatah lab "$@"
