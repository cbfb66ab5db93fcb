#!/usr/bin/env bash
# Builds jatah's Debian package with cargo-deb:
#   target/debian/jatah_<version>_amd64.deb
# holding /usr/bin/jatah (release build, the eBPF programs inside), the
# systemd unit (installed, neither enabled nor started), /etc/jatah/policy.toml
# (a conffile), man pages and bash/zsh/fish completions generated from the
# binary's own command line, and the dashboards, rules and example policies
# under /usr/share/jatah. Install it on a gateway with `apt install ./jatah_*.deb`
# (README.md, "Installing on a gateway").
#
#   ./scripts/package.sh                      release build, then the package
#   ./scripts/package.sh --binary PATH --output DIR [--fast]
#       package an already built jatah (tests/package.rs does, with the
#       binary `cargo test` built) into DIR; nothing is compiled. --fast
#       compresses less (a larger file, made sooner).
#
# Installs what the build needs first (./scripts/setup.sh build), except
# with --binary, which only needs cargo-deb.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

binary=""
output=""
fast=0
while (($#)); do
  case $1 in
    --binary) binary=${2:?--binary needs a path}; shift 2 ;;
    --output) output=${2:?--output needs a directory}; shift 2 ;;
    --fast) fast=1; shift ;;
    *) echo "package.sh: unknown argument $1 (see the header of $0)" >&2; exit 1 ;;
  esac
done

if [[ -z $binary ]]; then
  ./scripts/setup.sh build
fi
if ! cargo deb --version >/dev/null 2>&1; then
  echo "package.sh: cargo-deb is missing: run ./scripts/setup.sh build" >&2
  exit 1
fi

if [[ -n $binary ]]; then
  # cargo-deb reads the binary and generated files from <target>/release;
  # a private target directory holds a copy, so the real one is untouched.
  target=$(mktemp -d /tmp/jatah-package.XXXXXX)
  trap 'rm -rf "$target"' EXIT
  mkdir -p "$target/release"
  cp "$binary" "$target/release/jatah"
  export CARGO_TARGET_DIR=$target
else
  echo "package.sh: building jatah (release)"
  # The build's own failure stops the script (pipefail); the filter only
  # drops the eBPF build's progress lines.
  cargo build --release --locked -p jatah 2>&1 | { grep -vE '^warning: jatah@' || true; }
  target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
fi
release="$target/release"
test -x "$release/jatah" || { echo "package.sh: $release/jatah was not built" >&2; exit 1; }

rm -rf "$release/docs"
"$release/jatah" generate-docs "$release/docs" >/dev/null
# Debian keeps man pages gzip-compressed (-n: no name or time stamp inside,
# so the same page gives the same bytes).
gzip -9nf "$release"/docs/man/*.1

args=(deb -p jatah --no-build --locked)
if [[ -n $output ]]; then args+=(--output "$output"); fi
if ((fast)); then args+=(--fast); fi
cargo "${args[@]}"
