//! `rampart ctl banned add|list|delete`: the banned list (client id, username, address or
//! network) in the data directory, enforced by the broker at accept (addresses, networks)
//! and at CONNECT (0x8A).
//!
//! Like `ctl users`, this opens the store directly, so the broker must be stopped (the store
//! is locked while it runs); the broker loads the list at start.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use rampart_broker::limits::{self, BanEntry, BanKey};
use rampart_config::Config;
use rampart_store::{RedbStore, Store, StoreOptions, WriteBatch};

#[derive(Subcommand, Debug)]
pub enum BannedCommand {
    /// Ban a client id, username, address or network: client:ID, user:NAME, addr:IP,
    /// net:CIDR (replaces an existing ban of the same thing).
    Add {
        what: String,
        /// Why (shown by `list` and logged when the ban refuses a client).
        #[arg(long, default_value = "manual")]
        reason: String,
        /// Seconds until the ban expires; without it the ban never expires.
        #[arg(long, value_name = "SECS")]
        duration: Option<u64>,
        #[command(flatten)]
        target: BannedTarget,
    },
    /// List bans (expired ones are marked; the broker drops them at start).
    List {
        #[command(flatten)]
        target: BannedTarget,
    },
    /// Lift a ban.
    Delete {
        what: String,
        #[command(flatten)]
        target: BannedTarget,
    },
}

#[derive(Args, Debug, Clone)]
pub struct BannedTarget {
    /// Data directory holding rampart.redb (default: node.data_dir from --config, or ./data).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
}

fn open(target: &BannedTarget) -> Result<RedbStore, String> {
    let env = rampart_config::process_env();
    let cfg = match &target.config {
        Some(p) => Config::load(p, &env).map_err(|e| e.to_string())?,
        None => Config::local_only_with_env(&env).map_err(|e| e.to_string())?,
    };
    let dir = target.data_dir.clone().unwrap_or(cfg.node.data_dir.clone());
    RedbStore::open(&dir, StoreOptions::default()).map_err(|e| {
        format!(
            "cannot open the store in {}: {e} (is the broker running? stop it first)",
            dir.display()
        )
    })
}

fn commit(store: &RedbStore, batch: WriteBatch) -> Result<(), String> {
    store
        .write(batch)
        .wait_blocking()
        .map_err(|e| format!("store: {e}"))
}

/// Control characters in a client id or reason must not reach the terminal as such.
fn printable(s: &str) -> String {
    s.chars().flat_map(char::escape_debug).collect::<String>()
}

pub fn run(cmd: BannedCommand) -> Result<(), String> {
    match cmd {
        BannedCommand::Add {
            what,
            reason,
            duration,
            target,
        } => {
            let key = BanKey::parse(&what)?;
            if reason.contains('\n') {
                return Err("--reason must be one line".to_string());
            }
            let expires_at = duration.map(|d| limits::unix_now().saturating_add(d));
            let store = open(&target)?;
            let e = BanEntry {
                key,
                reason,
                expires_at,
            };
            let mut b = WriteBatch::new();
            limits::put_ban(&mut b, &e);
            commit(&store, b)?;
            match duration {
                Some(d) => println!("banned {} for {d} s", printable(&e.key.encode())),
                None => println!("banned {} (no expiry)", printable(&e.key.encode())),
            }
            Ok(())
        }
        BannedCommand::List { target } => {
            let store = open(&target)?;
            let list = limits::load_banned(&store)?;
            let now = limits::unix_now();
            for e in &list {
                let exp = match e.expires_at {
                    None => "never".to_string(),
                    Some(t) if t <= now => "expired".to_string(),
                    Some(t) => format!("in {} s", t - now),
                };
                println!(
                    "{}\t{exp}\t{}",
                    printable(&e.key.encode()),
                    printable(&e.reason)
                );
            }
            println!("{} ban(s)", list.len());
            Ok(())
        }
        BannedCommand::Delete { what, target } => {
            let key = BanKey::parse(&what)?;
            let store = open(&target)?;
            let exists = store
                .get_kv(limits::BANNED_NS, key.encode().as_bytes())
                .map_err(|e| format!("store: {e}"))?
                .is_some();
            if !exists {
                return Err(format!("no ban on {}", printable(&key.encode())));
            }
            let mut b = WriteBatch::new();
            limits::delete_ban(&mut b, &key);
            commit(&store, b)?;
            println!("lifted the ban on {}", printable(&key.encode()));
            Ok(())
        }
    }
}
