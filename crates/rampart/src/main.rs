//! The `rampart` binary: serve, check-config.
#![forbid(unsafe_code)]

mod users;

use clap::{Parser, Subcommand};
use rampart_config::{Config, ConfigErrors, LogFormat};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Rampart: an MQTT 3.1.1 and 5.0 broker, hardened by default.
///
/// With no configuration file, `rampart serve` runs in local-only mode: plain MQTT on
/// 127.0.0.1:1883 and [::1]:1883, anonymous clients from loopback only, data in ./data.
/// Every config key can be overridden from the environment: RAMPART_<SECTION>__<KEY>=value,
/// e.g. RAMPART_MQTT__MAX_PACKET_SIZE=65536.
#[derive(Parser, Debug)]
#[command(name = "rampart", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the broker (local-only mode without --config).
    Serve {
        /// TOML configuration file (see config/rampart.example.toml).
        #[arg(long, short = 'c', value_name = "FILE")]
        config: Option<PathBuf>,
        /// Start even when hardening checks fail on an exposed (non-loopback) broker.
        /// Every failure is still logged as an error. Never use this in production.
        #[arg(long)]
        danger_ignore_doctor: bool,
    },
    /// Audit the host and configuration against the hardening checklist (HARDENING.md).
    Doctor(rampart_doctor::cli::DoctorArgs),
    /// Check a configuration file: report every error as file:line: key: message, or print
    /// the listeners and limits in effect. Exits non-zero on any error.
    CheckConfig {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Inspect the embedded store.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    #[command(flatten)]
    Auth(users::AuthCommand),
}

#[derive(Subcommand, Debug)]
enum StoreCommand {
    /// Verify the store without modifying it: decode every record, check cross references.
    /// Run it while the broker is stopped. Exits non-zero if anything is damaged.
    Check {
        /// Data directory holding rampart.redb (default: node.data_dir from --config, or ./data).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        #[arg(long, short = 'c', value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

fn load(path: Option<&PathBuf>) -> Result<Config, ConfigErrors> {
    let env = rampart_config::process_env();
    match path {
        Some(p) => Config::load(p, &env),
        None => Config::local_only_with_env(&env),
    }
}

fn init_logging(cfg: &Config) {
    use tracing_subscriber::EnvFilter;
    // RUST_LOG wins over the config for ad-hoc debugging.
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: log files and journald get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match cfg.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Auth(cmd) => users::run(cmd),
        Command::CheckConfig { file } => match load(Some(&file)) {
            Ok(cfg) => {
                println!("{}: OK", file.display());
                print!("{}", cfg.describe());
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprint!("{errors}");
                if !errors.to_string().ends_with('\n') {
                    eprintln!();
                }
                eprintln!("{} error(s); configuration rejected", errors.0.len());
                ExitCode::from(2)
            }
        },
        Command::Store {
            command: StoreCommand::Check { data_dir, config },
        } => {
            let dir = match (data_dir, config) {
                (Some(d), _) => d,
                (None, c) => match load(c.as_ref()) {
                    Ok(cfg) => cfg.node.data_dir.clone(),
                    Err(errors) => {
                        eprint!("{errors}");
                        return ExitCode::from(2);
                    }
                },
            };
            match rampart_store::RedbStore::check_offline(&dir) {
                Ok(report) => {
                    println!("store: {}", dir.join(rampart_store::FILE_NAME).display());
                    println!("format version: {}", report.format_version);
                    println!(
                        "sessions: {}, queued messages: {}, inbound QoS 2 ids: {}, retained: {}, kv: {}",
                        report.sessions, report.queued, report.inbound_qos2, report.retained, report.kv
                    );
                    println!(
                        "orphans (purged at next start): {} queue entries, {} inbound ids",
                        report.orphan_queue_entries, report.orphan_inbound_qos2
                    );
                    for p in &report.problems {
                        println!("problem: {p}");
                    }
                    if report.is_ok() {
                        println!("OK");
                        ExitCode::SUCCESS
                    } else {
                        println!("DAMAGED: {} problem(s)", report.problem_count);
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    eprintln!("rampart: store check failed: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Doctor(args) => rampart_doctor::cli::run(args),
        Command::Serve {
            config,
            danger_ignore_doctor,
        } => {
            let cfg = match load(config.as_ref()) {
                Ok(c) => c,
                Err(errors) => {
                    eprint!("{errors}");
                    if !errors.to_string().ends_with('\n') {
                        eprintln!();
                    }
                    eprintln!("{} error(s); not starting", errors.0.len());
                    return ExitCode::from(2);
                }
            };
            init_logging(&cfg);
            if cfg.local_only {
                tracing::warn!(
                    "development mode: no config file, local-only listeners, anonymous loopback clients"
                );
            }
            // Same checks as `rampart doctor` (no live probe): a failure stops an exposed
            // broker here, before any port is bound.
            if let Err(refused) = rampart_doctor::startup_check(&cfg, danger_ignore_doctor) {
                tracing::error!("{refused}");
                eprintln!("rampart: {refused}");
                return ExitCode::from(3);
            }
            match serve(Arc::new(cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "broker stopped with an error");
                    eprintln!("rampart: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn serve(cfg: Arc<Config>) -> anyhow::Result<()> {
    // Before the runtime's threads exist: growing the descriptor table later stalls every
    // accept for an RCU grace period at each power of two.
    match rampart_broker::prepare_process(&cfg) {
        Ok(slots) => tracing::debug!(slots, "descriptor table sized"),
        Err(e) => tracing::warn!(error = %e, "could not size the descriptor table up front"),
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("rampart-worker")
        .build()?;
    rt.block_on(async move {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let broker = tokio::spawn(rampart_broker::run(cfg, rx));
        tokio::spawn(async move {
            wait_for_signal().await;
            let _ = tx.send(true);
        });
        broker.await?
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    // SIGHUP reloads certificates and CRLs (the TLS listeners watch it too); without a
    // handler its default action would kill the broker.
    if let Ok(mut hup) = signal(SignalKind::hangup()) {
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: TLS material is reloaded by the TLS listeners");
            }
        });
    }
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
