//! jatah: per-OPD bandwidth allocation, metrics and fault diagnosis for a
//! regional government gateway.
//!
//! The library is what the `jatah` binary runs; its public surface is the
//! handful of entry points below. Where things happen (docs/architecture.md
//! draws it): a packet is classified in `ebpf/` (kernel side); `datapath`
//! loads those programs and keeps their maps; `shaper` builds the HTB
//! classes over rtnetlink; `gateway` turns a `policy` into both; `runtime`
//! runs it all, with one sampler reading the kernel each second, and `http`
//! answers HTTP; `diagnosis` decides verdicts; `history` keeps usage.
//!
//! With the `testkit` feature (on for this package's tests and benchmarks,
//! off in the shipped binary) the modules themselves are public, so tests
//! can drive the kernel data path, the lab and the HTTP router directly.

/// Declares the library's modules: private in the shipped build, public
/// for tests and benchmarks (feature `testkit`).
macro_rules! modules {
    ($($name:ident),* $(,)?) => {
        $(
            #[cfg(feature = "testkit")]
            pub mod $name;
            #[cfg(not(feature = "testkit"))]
            mod $name;
        )*
    };
}

modules!(
    cli, datapath, diagnosis, gateway, history, http, import, lab, policy, runtime, shaper,
);
mod sys;

#[cfg(feature = "testkit")]
pub mod bench;

pub use cli::docs::generate as generate_docs;
pub use cli::report::{ReportArgs, main as report_main};
pub use cli::status::{PlanArgs, StatusArgs, plan as print_plan, run as print_status};
pub use cli::tokens::{
    append as append_token, check as check_tokens, list as list_tokens, revoke as revoke_token,
};
pub use http::auth::new_entry as new_token_entry;
pub use http::tls::TlsFiles;
pub use import::{ImportCommand, command as import_command};
pub use lab::run_interactive as run_lab;
pub use policy::{Policy, PolicyError, load as load_policy};
pub use runtime::{RunOptions, down, down_in, require_privileges, run, shutdown_on_signal};
pub use sys::ignore_hangup;
