use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

/// jatah: per-OPD bandwidth allocation for a government Internet gateway.
///
/// jatah holds every OPD (government agency) to its allocation (a guaranteed
/// rate and a ceiling, for download and upload) with an eBPF classifier and
/// HTB, counts each OPD's traffic, and tells an upstream capacity drop apart
/// from a fault at one OPD. Admins drive it with a TOML policy file; see
/// policies/ for examples and the README for the format.
#[derive(Debug, Parser)]
#[command(name = "jatah", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of `Run`'s options costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a policy file; no root needed, nothing is changed.
    ///
    /// Every problem is reported as FILE:LINE:COLUMN: message; the exit code
    /// is 1 if there is any. Interfaces are checked only by `run`.
    Check {
        /// The policy file (TOML).
        file: PathBuf,
    },
    /// Run the daemon: enforce the policy and serve HTTP.
    ///
    /// Needs root (or CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON). Stopping jatah
    /// leaves the allocations in force; `jatah down` removes them.
    Run {
        /// The policy file (TOML).
        #[arg(long, env = "JATAH_POLICY")]
        policy: PathBuf,
        /// Address for /healthz, /metrics and the API.
        #[arg(long, env = "JATAH_LISTEN", default_value = "127.0.0.1:9476")]
        listen: SocketAddr,
        /// Address for the status page alone (/status, /status/admin and
        /// the endpoints they call; no /metrics, no other API), reached
        /// from the OPDs' LANs, e.g. 0.0.0.0:9477. The visitor's source
        /// address (and, for OPDs bound to an interface, where it came in)
        /// picks its OPD; behind a proxy, set --status-by-address=false so
        /// that only token links identify.
        #[arg(long, env = "JATAH_STATUS_LISTEN")]
        status_listen: Option<SocketAddr>,
        /// bpffs mount under which jatah pins its maps and links, so a
        /// restart adopts them. Inside `ip netns exec` /sys is remounted:
        /// mount a bpffs elsewhere (e.g. /run/jatah/bpffs) and name it here.
        #[arg(long, env = "JATAH_BPFFS", default_value = "/sys/fs/bpf")]
        bpffs: PathBuf,
        /// Directory for the lock that keeps one jatah per gateway.
        #[arg(long, default_value = "/run/jatah", hide = true)]
        run_dir: PathBuf,
        /// Directory of the usage history database (SQLite).
        #[arg(long, env = "JATAH_DATA_DIR", default_value = "/var/lib/jatah")]
        data_dir: PathBuf,
        /// API tokens file (TOML; `jatah token new --append FILE` adds to
        /// it). Only its owner may read it (mode 0600): a file group or
        /// others may read or write is refused. It is read again when it
        /// changes and on SIGHUP, so `jatah token revoke` takes effect
        /// within 2 s. Without one the API answers only /healthz, /metrics
        /// and /openapi.json. Default: /etc/jatah/tokens.toml if it exists.
        #[arg(long, env = "JATAH_TOKENS")]
        tokens: Option<PathBuf>,
        /// A DNS name the gateway is reached by (repeat, or comma-separate
        /// in JATAH_SERVER_NAMES), e.g. status.example.go.id. Requests are
        /// answered only when their Host is one of these, localhost, the
        /// machine's host name or an IP address; others get 421, so a web
        /// site cannot read jatah through a rebound DNS name.
        #[arg(
            long = "server-name",
            env = "JATAH_SERVER_NAMES",
            value_delimiter = ','
        )]
        server_names: Vec<String>,
        /// Serve the status page (--status-listen) over HTTPS with this
        /// certificate, so token links work from outside with no proxy in
        /// front (https://NAME:9477/status#token=...). A PEM file: the
        /// server's certificate first, then its intermediates (certbot's
        /// fullchain.pem). Get one from your CA, or from Let's Encrypt for
        /// the gateway's public DNS name NAME, e.g. `certbot certonly
        /// --standalone -d NAME` (needs port 80 reachable from outside), and
        /// give NAME with --server-name too, or requests for it get 421.
        /// The port then speaks HTTPS only, to the offices too. Needs
        /// --status-tls-key. Read again when the file changes and on
        /// SIGHUP: a renewed certificate needs no restart.
        #[arg(
            long,
            env = "JATAH_STATUS_TLS_CERT",
            value_name = "FILE",
            requires_all = ["status_tls_key", "status_listen"]
        )]
        status_tls_cert: Option<PathBuf>,
        /// The private key of --status-tls-cert (PEM: PKCS#8, RSA or EC;
        /// unencrypted), e.g. certbot's privkey.pem. Only its owner may
        /// read it (mode 0600): a key group or others may read is refused.
        #[arg(
            long,
            env = "JATAH_STATUS_TLS_KEY",
            value_name = "FILE",
            requires = "status_tls_cert"
        )]
        status_tls_key: Option<PathBuf>,
        /// Serve --listen (the API, /metrics, /healthz) over HTTPS with
        /// this certificate (PEM, as --status-tls-cert), for an API reached
        /// across a network. Needs --tls-key. Prometheus then scrapes with
        /// `scheme: https`; `jatah status` and `jatah plan` reach it with
        /// `--api https://HOST:PORT` (and `--ca FILE` for a private CA).
        #[arg(
            long,
            env = "JATAH_TLS_CERT",
            value_name = "FILE",
            requires = "tls_key"
        )]
        tls_cert: Option<PathBuf>,
        /// The private key of --tls-cert (as --status-tls-key; mode 0600).
        #[arg(
            long,
            env = "JATAH_TLS_KEY",
            value_name = "FILE",
            requires = "tls_cert"
        )]
        tls_key: Option<PathBuf>,
        /// Recognise a status-page visitor without a token by its source
        /// address (and, for OPDs bound to an `interface`, where it came
        /// in). Set to false when a proxy or NAT stands between the
        /// offices and the gateway: every visitor would then look like
        /// the proxy, so only token links identify.
        #[arg(
            long,
            env = "JATAH_STATUS_BY_ADDRESS",
            default_value_t = true,
            action = clap::ArgAction::Set,
            value_name = "true|false"
        )]
        status_by_address: bool,
    },
    /// Print a table of OPDs from a running jatah: id and name, state,
    /// allocation, current rate, percent of ceiling, today's volume.
    ///
    /// Examples: `jatah status`; over HTTPS with a self-signed gateway
    /// certificate: `jatah status --api https://gw.example:9476 --ca
    /// /etc/jatah/cert.pem`; redrawn every 5 s: `jatah status --watch 5`;
    /// for scripts: `jatah status --json`.
    Status(jatah::StatusArgs),
    /// Show what a reload of FILE would change in the running jatah (OPDs
    /// added, removed, rates changed, subnets moved). Nothing is changed.
    /// Exit code 1 if FILE is invalid.
    ///
    /// Example: `jatah plan new-policy.toml --api https://gw.example:9476
    /// --ca /etc/jatah/cert.pem` (an admin token in JATAH_TOKEN).
    Plan(jatah::PlanArgs),
    /// Write a policy from MikroTik simple queues or LibreQoS's
    /// ShapedDevices.csv (and network.json), so no queue is retyped.
    ///
    /// The policy goes to stdout (or -o FILE) only if `jatah check` would
    /// accept it; what could not be carried over is listed on stderr as
    /// FILE:LINE: warning: ... Example:
    ///
    ///   jatah import mikrotik queues.rsc --capacity-download 300M --capacity-upload 300M -o policy.toml
    #[command(subcommand)]
    Import(jatah::ImportCommand),
    Report(jatah::ReportArgs),
    /// Manage API tokens: add one (`new --append`), list, revoke.
    ///
    /// The tokens file holds only the tokens' SHA-256 hashes and must be
    /// readable by its owner alone (mode 0600). A running jatah reads it
    /// again when it changes, so changes take effect within 2 s.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Remove everything jatah put on the gateway: its programs, pinned maps
    /// and the HTB trees on the policy's interfaces. Nothing else is touched.
    ///
    /// Refused, with nothing removed, while a jatah runs on this gateway
    /// (stop it first: systemctl stop jatah) and when --bpffs is not a
    /// bpffs mount.
    Down {
        /// The policy file naming the interfaces.
        #[arg(long, env = "JATAH_POLICY")]
        policy: PathBuf,
        /// The bpffs mount given to `run`.
        #[arg(long, env = "JATAH_BPFFS", default_value = "/sys/fs/bpf")]
        bpffs: PathBuf,
        /// Directory of the lock that keeps one jatah per gateway (the
        /// --run-dir given to `run`).
        #[arg(long, default_value = "/run/jatah", hide = true)]
        run_dir: PathBuf,
    },
    /// Build a simulated gateway with several OPDs in network namespaces,
    /// run jatah on it with live iperf3 traffic, and print per-OPD rates.
    ///
    /// Everything the lab creates is removed when it ends (also on ctrl-c).
    Lab {
        /// How long to drive traffic, in seconds.
        #[arg(long, default_value_t = 40)]
        seconds: u64,
    },
    /// Write man pages (DIR/man) and bash, zsh and fish completions
    /// (DIR/completions) generated from this command line. Used by
    /// scripts/package.sh: `jatah generate-docs target/docs`.
    #[command(hide = true)]
    GenerateDocs {
        /// The directory to write into (created if missing).
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a random token for a role.
    ///
    /// With --append FILE the entry (name, role and the token's SHA-256,
    /// never the token) is added to FILE, created mode 0600 if missing, and
    /// the token is printed on stdout, only there: hand it to its holder,
    /// it is stored nowhere. A running jatah accepts it within 2 s:
    ///
    ///   jatah token new --role opd:dinkes --name "operator dinkes" --append /etc/jatah/tokens.toml
    ///
    /// Without --append the entry is printed on stdout and the token on
    /// stderr, so a redirection of stdout never captures the token.
    New {
        /// "admin" (everything) or "opd:<id>" (only that OPD's data).
        #[arg(long)]
        role: String,
        /// Who holds it: shown in logs instead of the token, and the name
        /// `jatah token revoke` takes. Unique within the file.
        #[arg(long)]
        name: String,
        /// The tokens file to add the entry to (e.g. /etc/jatah/tokens.toml).
        /// Refused if group or others may read or write it, if it does not
        /// parse, or if NAME is in it already.
        #[arg(long, value_name = "FILE")]
        append: Option<PathBuf>,
    },
    /// List the tokens in the tokens file: names and roles.
    ///
    /// Each entry's name, role and the first 8 hex digits of its token's
    /// SHA-256 (the tokens themselves are stored nowhere). Warns of a token
    /// left in plain text in a comment by `jatah token new >> FILE`.
    List {
        /// The tokens file.
        #[arg(
            long,
            value_name = "FILE",
            env = "JATAH_TOKENS",
            default_value = "/etc/jatah/tokens.toml"
        )]
        tokens: PathBuf,
    },
    /// Revoke a token: remove the entry named NAME from the tokens file.
    ///
    /// The rest of the file (comments, other entries) stays as it was; the
    /// file is replaced in one rename. A running jatah reads it again
    /// within 2 s and answers the revoked token with 401: no restart. An
    /// unknown NAME changes nothing and exits 1, listing the names there are.
    Revoke {
        /// The holder's name, as `jatah token list` shows it.
        name: String,
        /// The tokens file.
        #[arg(
            long,
            value_name = "FILE",
            env = "JATAH_TOKENS",
            default_value = "/etc/jatah/tokens.toml"
        )]
        tokens: PathBuf,
    },
}

/// `jatah token ...`.
fn token_command(command: TokenCommand) -> ExitCode {
    let result = match command {
        TokenCommand::New {
            role,
            name,
            append: Some(file),
        } => jatah::append_token(&file, &name, &role).map(|token| {
            println!("{token}");
            eprintln!(
                "added {name:?} ({role}) to {}; hand the printed token to {name}: it is stored nowhere",
                file.display()
            );
        }),
        TokenCommand::New {
            role,
            name,
            append: None,
        } => jatah::new_token_entry(&name, &role).map(|(token, entry)| {
            print!("{entry}");
            eprintln!(
                "# Add the entry printed on stdout to the tokens file (`--append FILE` does it).\n\
                 # Hand this token to {name} (it is stored nowhere):\n{token}"
            );
        }),
        TokenCommand::List { tokens } => jatah::list_tokens(&tokens).map(|(table, notes)| {
            print!("{table}");
            for n in notes {
                eprintln!("warning: {n}");
            }
        }),
        TokenCommand::Revoke { name, tokens } => {
            jatah::revoke_token(&tokens, &name).map(|role| {
                println!(
                    "revoked {name:?} ({role}) in {}; a jatah running with this file refuses it within 2 s",
                    tokens.display()
                );
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: journald and log files get plain text.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { file } => match jatah::load_policy(&file) {
            Ok(policy) => {
                println!("{}: ok: {}", file.display(), policy.summary());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(1)
            }
        },
        Command::Run {
            policy,
            listen,
            status_listen,
            bpffs,
            run_dir,
            data_dir,
            tokens,
            server_names,
            status_tls_cert,
            status_tls_key,
            tls_cert,
            tls_key,
            status_by_address,
        } => {
            // A reload (SIGHUP) may come at any moment; `run` handles it
            // once its runtime is up.
            jatah::ignore_hangup();
            init_logging();
            let tokens = tokens.or_else(|| {
                let default = PathBuf::from("/etc/jatah/tokens.toml");
                default.exists().then_some(default)
            });
            // A tokens file others may read, or one that does not parse,
            // stops jatah before anything else is looked at.
            if let Some(path) = &tokens {
                match jatah::check_tokens(path) {
                    Ok(notes) => notes.iter().for_each(|n| eprintln!("warning: {n}")),
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::from(1);
                    }
                }
            }
            // clap refuses a certificate without its key and the other
            // way round; a listener is never quietly left on plain HTTP.
            let tls = jatah::TlsFiles::from_options(tls_cert, tls_key, "--tls-cert", "--tls-key")
                .and_then(|api| {
                    let status = jatah::TlsFiles::from_options(
                        status_tls_cert,
                        status_tls_key,
                        "--status-tls-cert",
                        "--status-tls-key",
                    )?;
                    Ok((api, status))
                });
            let (tls, status_tls) = match tls {
                Ok(pairs) => pairs,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(1);
                }
            };
            if let Err(e) = jatah::require_privileges() {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
            let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
            let opts = jatah::RunOptions {
                policy,
                listen,
                status_listen,
                bpffs,
                run_dir,
                data_dir,
                tokens,
                server_names,
                tls,
                status_tls,
                status_by_address,
            };
            let token = CancellationToken::new();
            rt.spawn(jatah::shutdown_on_signal(token.clone()));
            match rt.block_on(jatah::run(opts, token)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Down {
            policy,
            bpffs,
            run_dir,
        } => {
            init_logging();
            match jatah::down_in(&policy, &bpffs, &run_dir) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Status(args) => jatah::print_status(&args),
        Command::Plan(args) => match jatah::print_plan(&args) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e:#}");
                ExitCode::from(1)
            }
        },
        Command::Token(command) => token_command(command),
        Command::Import(command) => jatah::import_command(command),
        Command::Report(args) => jatah::report_main(args),
        Command::GenerateDocs { dir } => match jatah::generate_docs(Cli::command(), &dir) {
            Ok(files) => {
                files.iter().for_each(|f| println!("{}", f.display()));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        },
        Command::Lab { seconds } => {
            init_logging();
            match jatah::run_lab(seconds) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
