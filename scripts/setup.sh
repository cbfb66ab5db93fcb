#!/usr/bin/env bash
# Installs what a fresh Debian 12 gateway or CI machine lacks to build and test
# jatah. Idempotent: every step checks first and does nothing when satisfied.
#
#   Debian packages  llvm-22-dev libpolly-22-dev libzstd-dev (for bpf-linker),
#                    iproute2 iperf3 iputils-ping nftables (lab and tests),
#                    prometheus (promtool + a real server for tests), bpftool,
#                    wrk hyperfine (benchmarks), chromium chromium-driver (UI tests)
#   Rust             the nightly toolchain's rust-src component (eBPF build)
#   bpf-linker       0.13, built against Debian's LLVM 22
#   schemathesis     4.x from PyPI (API fuzzing against the OpenAPI document)
set -euo pipefail

say() { printf 'setup: %s\n' "$*"; }

APT_PACKAGES=(
  llvm-22-dev libpolly-22-dev libzstd-dev pkg-config
  iproute2 iperf3 iputils-ping nftables procps
  prometheus bpftool wrk hyperfine
  chromium chromium-driver
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if ((${#missing[@]})); then
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Package installs must not start services (prometheus) on this machine.
  # policy-rc.d is removed again however the install ends (a trap), so
  # the machine's own service policy is left as it was.
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; created_policy=1
    trap 'rm -f "$policy"' EXIT
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if ((created_policy)); then rm -f "$policy"; trap - EXIT; fi
else
  say "Debian packages: all present"
fi

# schemathesis fuzzes the API against its OpenAPI document (tests/schemathesis.rs).
st_bin="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/schemathesis"
if ! "$st_bin" --version 2>/dev/null | grep -q 'version 4\.'; then
  say "installing schemathesis 4 from PyPI (API fuzzing tests)"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore 'schemathesis>=4,<5'
else
  say "schemathesis: $("$st_bin" --version)"
fi

if ! command -v rustup >/dev/null; then
  say "error: rustup not found; install Rust with rustup first (https://rustup.rs)"; exit 1
fi
if ! rustup toolchain list | grep -q '^nightly'; then
  say "installing the nightly toolchain (needed to build the eBPF program)"
  rustup toolchain install nightly --profile minimal
fi
if ! rustup component list --toolchain nightly --installed | grep -q '^rust-src'; then
  say "installing rust-src for nightly"
  rustup component add rust-src --toolchain nightly
else
  say "nightly rust-src: present"
fi

if ! bpf-linker --version 2>/dev/null | grep -q '^bpf-linker 0\.13'; then
  say "building bpf-linker 0.13 against LLVM 22 (about 75 s)"
  # bpf-linker finds LLVM through LLVM_PREFIX (else through the first
  # llvm-config on PATH, which may be an older LLVM); llvm-sys through
  # LLVM_SYS_221_PREFIX.
  LLVM_PREFIX=/usr/lib/llvm-22 LLVM_SYS_221_PREFIX=/usr/lib/llvm-22 cargo install --locked bpf-linker@^0.13 \
    --no-default-features --features llvm-22
else
  say "bpf-linker: $(bpf-linker --version)"
fi
