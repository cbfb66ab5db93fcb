//! Builds jatah's eBPF programs (ebpf/) with aya-build, after checking that
//! the toolchain it needs is present, so a missing piece fails with one line
//! that says how to install it.
use std::process::{Command, Stdio};

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(1);
}

fn check_toolchain() {
    let nightly = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !matches!(nightly, Ok(s) if s.success()) {
        fail(
            "the eBPF programs need the nightly toolchain: run ./scripts/setup.sh build \
             (or: rustup toolchain install nightly --component rust-src)",
        );
    }
    let components = Command::new("rustup")
        .args(["component", "list", "--toolchain", "nightly", "--installed"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if !components.lines().any(|l| l.starts_with("rust-src")) {
        fail(
            "the eBPF programs need nightly's rust-src: run ./scripts/setup.sh build \
             (or: rustup component add rust-src --toolchain nightly)",
        );
    }
    if which_bpf_linker().is_none() {
        fail(
            "the eBPF programs need bpf-linker: run ./scripts/setup.sh build \
             (it builds bpf-linker 0.13 against LLVM 22)",
        );
    }
}

fn which_bpf_linker() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("bpf-linker"))
        .find(|p| p.is_file())
}

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=PATH");
    check_toolchain();
    let metadata = cargo_metadata::MetadataCommand::new().no_deps().exec()?;
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "jatah-ebpf")
        .ok_or_else(|| anyhow::anyhow!("jatah-ebpf is not in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow::anyhow!("jatah-ebpf manifest has no parent"))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
