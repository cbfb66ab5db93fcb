//! `jatah import`: a policy from another shaper's configuration, so an
//! admin moving from MikroTik simple queues or LibreQoS does not retype
//! every queue (the README's "Moving from MikroTik or LibreQoS").
//!
//! Each importer (`mikrotik.rs`, `libreqos.rs`) reads its format into a
//! [`model::Draft`]: groups and OPDs with the rates the source gave.
//! [`model::Draft::settle`] fills in what the source left open (a capacity,
//! unlimited ceilings, missing guarantees) with a warning each,
//! `write.rs` writes the policy, and the project's own policy loader must
//! accept it before anything is printed or written.

mod libreqos;
mod mikrotik;
mod model;
mod write;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use model::{Draft, Origin};

use crate::policy::{Rate, parse_rate};

/// `jatah import ...`: which format to read.
#[derive(Debug, clap::Subcommand)]
pub enum ImportCommand {
    /// Read a MikroTik `/queue simple export` and print a policy.
    ///
    /// Each simple queue with an address target becomes an [[opd]]
    /// (max-limit: ceiling, limit-at: guarantee; upload/download as
    /// RouterOS writes them); a queue other queues name as parent becomes
    /// a [[group]]. Warnings on stderr name every source line whose
    /// settings were not carried over. On the router:
    ///
    ///   /queue simple export file=queues
    ///
    /// then, with the file copied here:
    ///
    ///   jatah import mikrotik queues.rsc --capacity-download 300M --capacity-upload 300M -o policy.toml
    Mikrotik {
        /// The export (a .rsc file).
        file: PathBuf,
        #[command(flatten)]
        options: ImportOptions,
    },
    /// Read LibreQoS's ShapedDevices.csv (and network.json) and print a
    /// policy.
    ///
    /// Each circuit (all its device rows) becomes an [[opd]] with every
    /// address of its devices (Min Mbps: guarantee, Max Mbps: ceiling);
    /// its Parent Node becomes a [[group]], limited as network.json says.
    /// Example:
    ///
    ///   jatah import libreqos ShapedDevices.csv network.json --capacity-download 1G --capacity-upload 1G -o policy.toml
    Libreqos {
        /// ShapedDevices.csv.
        devices: PathBuf,
        /// network.json (optional): the nodes' limits become the groups'.
        network: Option<PathBuf>,
        #[command(flatten)]
        options: ImportOptions,
    },
}

/// What both formats take.
#[derive(Debug, clap::Args)]
pub struct ImportOptions {
    /// Write the policy to FILE instead of stdout. An existing FILE is
    /// refused unless --force is given.
    #[arg(short = 'o', long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Replace the --output file if it exists.
    #[arg(long, requires = "output")]
    force: bool,
    /// The uplink's contracted download rate, e.g. 300M. Neither format
    /// holds it; without it one is derived (and warned of).
    #[arg(long, value_name = "RATE", value_parser = rate_arg)]
    capacity_download: Option<Rate>,
    /// The uplink's contracted upload rate, e.g. 300M.
    #[arg(long, value_name = "RATE", value_parser = rate_arg)]
    capacity_upload: Option<Rate>,
    /// The [gateway] wan interface (towards the ISP).
    #[arg(long, value_name = "IFACE")]
    wan: Option<String>,
    /// The [gateway] lan interfaces (towards the OPDs); repeat or
    /// comma-separate.
    #[arg(long, value_name = "IFACE", value_delimiter = ',')]
    lan: Vec<String>,
}

fn rate_arg(text: &str) -> Result<Rate, String> {
    parse_rate(text).map_err(|e| e.to_string())
}

/// Runs `jatah import`: the policy on stdout or in the --output file,
/// warnings and errors on stderr; exit code 1 on any error, with nothing
/// written.
pub fn command(command: ImportCommand) -> ExitCode {
    let (draft, options) = match command {
        ImportCommand::Mikrotik { file, options } => (read(&file).map(|text| {
            mikrotik::read(&text, &file.display().to_string())
        }), options),
        ImportCommand::Libreqos {
            devices,
            network,
            options,
        } => {
            let draft = read(&devices).and_then(|csv| {
                let json = match &network {
                    Some(path) => Some((read(path)?, path.display().to_string())),
                    None => None,
                };
                Ok(libreqos::read(
                    &csv,
                    &devices.display().to_string(),
                    json.as_ref().map(|(text, name)| (text.as_str(), name.as_str())),
                ))
            });
            (draft, options)
        }
    };
    let mut draft = match draft {
        Ok(draft) => draft,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(1);
        }
    };
    match finish(&mut draft, &options) {
        Ok(text) => {
            for warning in draft.warning_lines() {
                eprintln!("{warning}");
            }
            match output(&text, &options) {
                Ok(()) => ExitCode::SUCCESS,
                Err(message) => {
                    eprintln!("{message}");
                    ExitCode::from(1)
                }
            }
        }
        Err(errors) => {
            for warning in draft.warning_lines() {
                eprintln!("{warning}");
            }
            for error in errors {
                eprintln!("{error}");
            }
            eprintln!("nothing written");
            ExitCode::from(1)
        }
    }
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))
}

/// The policy text of a draft, once it has passed the policy loader; or
/// every error (the source's, or the loader's traced back to the source).
fn finish(draft: &mut Draft, options: &ImportOptions) -> Result<String, Vec<String>> {
    if !draft.errors.is_empty() {
        return Err(std::mem::take(&mut draft.errors));
    }
    if draft.opds.iter().all(|o| o.disabled) {
        let origin = Origin {
            file: draft.sources[0].clone(),
            line: 0,
        };
        return Err(vec![format!(
            "{origin}: no queue or circuit with an address to carry over"
        )]);
    }
    draft.unique_ids();
    let capacity = draft.settle([options.capacity_download, options.capacity_upload]);
    let default_lan = ["eth1".to_string()];
    let interfaces = write::Interfaces {
        wan: options.wan.as_deref().unwrap_or("eth0"),
        lan: if options.lan.is_empty() {
            &default_lan
        } else {
            &options.lan
        },
        given: options.wan.is_some() && !options.lan.is_empty(),
    };
    if !interfaces.given {
        let origin = Origin {
            file: draft.sources[0].clone(),
            line: 0,
        };
        draft.warn(
            &origin,
            format!(
                "the gateway's interfaces are not in the source; wrote wan = \"{}\", lan = [{}]: \
                 give --wan and --lan, or edit [gateway]",
                interfaces.wan,
                interfaces
                    .lan
                    .iter()
                    .map(|l| format!("\"{l}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
    let (text, starts) = write::policy(draft, capacity, &interfaces);
    let label = match &options.output {
        Some(path) => path.display().to_string(),
        None => "<imported policy>".to_string(),
    };
    match crate::policy::parse(&text, &label) {
        Ok(_) => Ok(text),
        Err(error) => {
            let mut errors = vec![format!(
                "{}: the imported policy does not pass `jatah check`:",
                draft.sources.join(", ")
            )];
            for d in error.diagnostics {
                let from = starts
                    .iter()
                    .rev()
                    .find(|(start, _)| *start <= d.line)
                    .map(|(_, origin)| format!(" (the entry from {origin})"))
                    .unwrap_or_default();
                errors.push(format!("  {}{from}", d.message));
            }
            Err(errors)
        }
    }
}

fn output(text: &str, options: &ImportOptions) -> Result<(), String> {
    let Some(path) = &options.output else {
        let mut stdout = std::io::stdout().lock();
        return stdout
            .write_all(text.as_bytes())
            .map_err(|e| format!("cannot write the policy: {e}"));
    };
    let mut open = std::fs::OpenOptions::new();
    open.write(true);
    if options.force {
        open.create(true).truncate(true);
    } else {
        // Refused in the same step as the file is made: no window in
        // which another file could appear and be overwritten.
        open.create_new(true);
    }
    let mut file = open.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            format!(
                "{}: exists; nothing written (give --force to replace it)",
                path.display()
            )
        } else {
            format!("{}: cannot write: {e}", path.display())
        }
    })?;
    file.write_all(text.as_bytes())
        .map_err(|e| format!("{}: cannot write: {e}", path.display()))?;
    eprintln!("{}: written", path.display());
    Ok(())
}
