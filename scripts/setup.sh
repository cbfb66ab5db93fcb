#!/usr/bin/env bash
# Installs what a Debian 12 machine lacks to build, run the lab or test
# jatah, one level at a time; each level includes the one before it.
# Idempotent: every step checks first and does nothing when satisfied.
#
#   ./scripts/setup.sh build   what a builder needs to build jatah and its package:
#       Debian   gcc libc6-dev binutils pkg-config dpkg-dev (compiler, strip, dpkg),
#                llvm-22-dev libpolly-22-dev libzstd-dev (to build bpf-linker)
#       Rust     the nightly toolchain's rust-src component (the eBPF programs)
#       cargo    bpf-linker 0.13 (built against Debian's LLVM 22),
#                cargo-deb 3.8 (./scripts/package.sh)
#   ./scripts/setup.sh lab     build, and what the lab runs (./scripts/lab.sh):
#       Debian   iproute2 iperf3 iputils-ping nftables procps bpftool
#   ./scripts/setup.sh test    lab, and what the test suite and benchmarks use
#                              (./scripts/test.sh):
#       Debian   prometheus (promtool and a real server), prometheus-alertmanager
#                (amtool and a real Alertmanager), chromium chromium-driver
#                (status page tests), wrk hyperfine (benchmarks), curl openssl,
#                systemd (systemd-analyze), man-db, python3-venv
#       Python   schemathesis 4 from PyPI, in a virtual environment: .venv/ in
#                the repository (tests/schemathesis.rs runs .venv/bin/schemathesis)
#
# A gateway that runs the package needs none of this. What the script
# leaves alone: no process is stopped, no service is started or enabled
# (package installs run under a policy-rc.d that refuses starts, removed
# again however the script ends, and a service a package enabled as it was
# installed here is disabled again), the system Python is not touched.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

say() { printf 'setup: %s\n' "$*"; }

level=${1:-}
case $level in
  build | lab | test) ;;
  *)
    echo "usage: $0 build|lab|test   (see the header of $0 for what each installs)" >&2
    exit 1
    ;;
esac

APT_PACKAGES=(gcc libc6-dev binutils pkg-config dpkg-dev llvm-22-dev libpolly-22-dev libzstd-dev)
if [[ $level != build ]]; then
  APT_PACKAGES+=(iproute2 iperf3 iputils-ping nftables procps bpftool)
fi
if [[ $level == test ]]; then
  APT_PACKAGES+=(prometheus prometheus-alertmanager chromium chromium-driver wrk hyperfine curl openssl systemd man-db python3-venv)
fi

# Starting services is refused while packages install (policy-rc.d). The
# file is removed only if this script made it, and however it ends: an
# error, ctrl-c, a kill.
policy=/usr/sbin/policy-rc.d
created_policy=0
remove_policy() {
  if ((created_policy)); then
    rm -f "$policy"
    created_policy=0
  fi
}
trap remove_policy EXIT
trap 'remove_policy; exit 130' INT
trap 'remove_policy; exit 143' TERM
trap 'remove_policy; exit 129' HUP

# The systemd units (service, socket, timer) package $1 ships.
units_of() {
  dpkg-query -L "$1" 2>/dev/null |
    grep -E '^(/usr)?/lib/systemd/system/[^/]+\.(service|socket|timer)$' |
    xargs -r -n1 basename | sort -u || true
}

installed_packages() {
  dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' | awk '$1 == "ii" { print $2 }' | sort
}

missing=()
for p in "${APT_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if ((${#missing[@]})); then
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if (set -C; : >"$policy") 2>/dev/null; then
    created_policy=1
    printf '#!/bin/sh\n# Made by jatah scripts/setup.sh while it installs packages.\nexit 101\n' >"$policy"
    chmod 755 "$policy"
  fi
  installed_before=$(installed_packages)
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  remove_policy
  # A package's postinst enables its service (prometheus does); this
  # machine is a builder or a test bed, not that service's host. What the
  # install pulled in counts too, so every newly installed package is seen.
  for p in $(comm -13 <(echo "$installed_before") <(installed_packages)); do
    for unit in $(units_of "$p"); do
      if [[ $(systemctl is-enabled "$unit" 2>/dev/null) == enabled ]]; then
        say "disabling $unit (enabled by installing $p; nothing here asks for it)"
        systemctl disable --quiet "$unit" 2>/dev/null || true
      fi
    done
  done
else
  say "Debian packages for '$level': all present"
fi

if ! command -v rustup >/dev/null; then
  say "error: rustup is not installed. Install Rust with it (as the user who builds):"
  say "  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y"
  say "  . \"\$HOME/.cargo/env\""
  say "then run this script again. Debian's own rustc/cargo packages are too old for jatah."
  exit 1
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

# cargo install builds in a temporary directory of its own, not in the
# project's CARGO_TARGET_DIR.
if ! bpf-linker --version 2>/dev/null | grep -q '^bpf-linker 0\.13'; then
  say "building bpf-linker 0.13 against LLVM 22 (about 75 s)"
  # bpf-linker finds LLVM through LLVM_PREFIX (else through the first
  # llvm-config on PATH, which may be an older LLVM); llvm-sys through
  # LLVM_SYS_221_PREFIX.
  LLVM_PREFIX=/usr/lib/llvm-22 LLVM_SYS_221_PREFIX=/usr/lib/llvm-22 env -u CARGO_TARGET_DIR \
    cargo install --locked bpf-linker@^0.13 --no-default-features --features llvm-22
else
  say "bpf-linker: $(bpf-linker --version)"
fi

if ! cargo deb --version 2>/dev/null | grep -q '^cargo-deb 3\.8\.'; then
  say "building cargo-deb 3.8.0 (about 45 s)"
  env -u CARGO_TARGET_DIR cargo install --locked cargo-deb@=3.8.0
else
  say "cargo-deb: $(cargo deb --version)"
fi

if [[ $level == test ]]; then
  # schemathesis fuzzes the API against its OpenAPI document
  # (tests/schemathesis.rs). Debian's Python refuses `pip install` into
  # the system (PEP 668); a virtual environment in the repository is
  # the project's own.
  venv=.venv
  if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q 'version 4\.'; then
    say "installing schemathesis 4 from PyPI into $venv (API fuzzing tests)"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'schemathesis>=4,<5'
  else
    say "schemathesis: $("$venv/bin/schemathesis" --version)"
  fi
fi
