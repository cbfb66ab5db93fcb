#!/usr/bin/env bash
# Runs jatah's whole test suite: formatting, clippy, unit tests, the eBPF
# classifier tests (BPF_PROG_TEST_RUN), the network-namespace lab tests
# with real iperf3 traffic, and a smoke run of the benchmark command
# (tests/bench_smoke.rs: one short round, proves it works, judges no
# timing), and the layout rules (tests/layout.rs: no module cycles, no
# source file over 800 lines, libc calls only in sys.rs). Needs root
# (namespaces, BPF, qdiscs).
# Installs what is missing first (./scripts/setup.sh test).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

if [[ $(id -u) -ne 0 ]]; then
  echo "test.sh: run as root (the tests create network namespaces and load eBPF programs)" >&2
  exit 1
fi

./scripts/setup.sh test

echo "test.sh: cargo fmt --check"
cargo fmt --all -- --check
echo "test.sh: cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings
# The shipped binary alone: with --all-targets the tests' dev-dependency
# turns the `testkit` feature on for everything, so a build without it
# (what the package ships) is only checked here.
echo "test.sh: cargo clippy -p jatah --bin jatah (the shipped build, no testkit)"
cargo clippy -p jatah --bin jatah --quiet -- -D warnings
echo "test.sh: cargo test"
# The labs' daemons also log why a delivered-capacity figure did not form
# each second (a capacity test that fails prints those lines).
export JATAH_LAB_LOG=${JATAH_LAB_LOG:-info,jatah::diagnosis::capacity=debug}
log=$(mktemp /tmp/jatah-test.XXXXXX.log)
status=0
cargo test --workspace --no-fail-fast 2>&1 | tee "$log" | grep -vE '^warning: jatah@' || status=${PIPESTATUS[0]}
echo
echo "test.sh: summary (full log: $log)"
grep -E '^test result:|^ *Running ' "$log" | sed 's/^ *//'
exit "$status"
