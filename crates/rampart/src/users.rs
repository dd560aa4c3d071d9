//! `rampart passwd` and `rampart ctl users ...`: built-in users in the data directory.
//!
//! These open the store directly, so the broker must be stopped (the store is locked while
//! it runs); the admin API will do the same live. Passwords are read from the terminal
//! without echo, or as one line from stdin with `--password-stdin` (for scripts); they are
//! never taken from the command line, where `ps` and shell history would see them.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Subcommand};
use rampart_auth::users::{self, UserRecord};
use rampart_config::{Config, PasswordHashConfig};
use rampart_store::{RedbStore, Store, StoreOptions, WriteBatch};

// `ctl banned` lives beside this file; declared here so that main.rs need not change.
#[path = "banned.rs"]
mod banned;

#[derive(Subcommand, Debug)]
pub enum AuthCommand {
    /// Print an argon2id hash of a password (for a SQL table or a password file).
    Passwd(PasswdArgs),
    /// Administration against the data directory (run while the broker is stopped).
    Ctl {
        #[command(subcommand)]
        command: CtlCommand,
    },
}

#[derive(Args, Debug)]
pub struct PasswdArgs {
    /// Print `USERNAME:HASH` (the Mosquitto password-file form) instead of the bare hash.
    #[arg(long, short = 'u')]
    username: Option<String>,
    /// Read the password as one line from stdin instead of prompting.
    #[arg(long)]
    password_stdin: bool,
    /// Take argon2 parameters from this config's [auth.password_hash].
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum CtlCommand {
    /// Built-in users (the `builtin` and `scram` auth backends).
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Show or set the built-in ACL rules of one client id (they apply to whoever connects
    /// with it: prefer user rules, and keep auth.client_id_ownership on).
    ClientAcl {
        client_id: String,
        /// Replace the rules with these (repeatable); --clear removes them; neither shows them.
        #[arg(long = "acl", value_name = "RULE")]
        acl: Vec<String>,
        #[arg(long, conflicts_with = "acl")]
        clear: bool,
        #[command(flatten)]
        target: Target,
    },
    /// The banned list: client ids, usernames, addresses and networks refused with 0x8A.
    Banned {
        #[command(subcommand)]
        command: banned::BannedCommand,
    },
}

#[derive(Args, Debug, Clone)]
pub struct Target {
    /// Data directory holding rampart.redb (default: node.data_dir from --config, or ./data).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum UsersCommand {
    /// Add a user (refused if it exists).
    Add {
        name: String,
        /// May publish and subscribe anywhere, bypassing ACL rules.
        #[arg(long)]
        superuser: bool,
        /// ACL rule for this user, e.g. "allow publish sensors/${username}/#" (repeatable).
        #[arg(long = "acl", value_name = "RULE")]
        acl: Vec<String>,
        /// Group for `group:` ACL rules (repeatable).
        #[arg(long = "group", value_name = "GROUP")]
        groups: Vec<String>,
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        target: Target,
    },
    /// List users (name, super-user flag, hash kind, rules).
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Delete a user.
    Delete {
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Set a user's password.
    Passwd {
        name: String,
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Import the users of a Mosquitto password file (hashes kept as they are; existing
    /// users are left alone unless --replace).
    Import {
        file: PathBuf,
        #[arg(long)]
        replace: bool,
        #[command(flatten)]
        target: Target,
    },
}

/// Entry point for `rampart passwd` and `rampart ctl ...`.
pub fn run(cmd: AuthCommand) -> ExitCode {
    let result = match cmd {
        AuthCommand::Passwd(a) => passwd(a),
        AuthCommand::Ctl {
            command: CtlCommand::Users { command },
        } => users_cmd(command),
        AuthCommand::Ctl {
            command:
                CtlCommand::ClientAcl {
                    client_id,
                    acl,
                    clear,
                    target,
                },
        } => client_acl(&client_id, acl, clear, &target),
        AuthCommand::Ctl {
            command: CtlCommand::Banned { command },
        } => banned::run(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rampart: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(path: Option<&PathBuf>) -> Result<Config, String> {
    let env = rampart_config::process_env();
    match path {
        Some(p) => Config::load(p, &env).map_err(|e| e.to_string()),
        None => Config::local_only_with_env(&env).map_err(|e| e.to_string()),
    }
}

fn params(config: Option<&PathBuf>) -> Result<PasswordHashConfig, String> {
    Ok(load_config(config)?.auth.password_hash)
}

/// Reads a password: one stdin line, or two no-echo prompts that must agree.
fn read_password(from_stdin: bool, confirm: bool) -> Result<String, String> {
    let pw = if from_stdin || !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("reading stdin: {e}"))?;
        line.trim_end_matches(['\n', '\r']).to_string()
    } else {
        let a = rpassword::prompt_password("Password: ").map_err(|e| e.to_string())?;
        if confirm {
            let b = rpassword::prompt_password("Again: ").map_err(|e| e.to_string())?;
            if a != b {
                return Err("the passwords differ".to_string());
            }
        }
        a
    };
    if pw.is_empty() {
        return Err("empty password".to_string());
    }
    Ok(pw)
}

fn passwd(a: PasswdArgs) -> Result<(), String> {
    let p = params(a.config.as_ref())?;
    if let Some(u) = &a.username {
        users::valid_username(u)?;
    }
    let pw = read_password(a.password_stdin, true)?;
    let hash = rampart_auth::hash::hash_password(pw.as_bytes(), &p)?;
    match a.username {
        Some(u) => println!("{u}:{hash}"),
        None => println!("{hash}"),
    }
    Ok(())
}

fn open(target: &Target) -> Result<(Arc<dyn Store>, PasswordHashConfig), String> {
    let cfg = load_config(target.config.as_ref())?;
    let dir = target.data_dir.clone().unwrap_or(cfg.node.data_dir.clone());
    let store = RedbStore::open(&dir, StoreOptions::default()).map_err(|e| {
        format!(
            "cannot open the store in {}: {e} (is the broker running? stop it first)",
            dir.display()
        )
    })?;
    Ok((Arc::new(store), cfg.auth.password_hash))
}

fn commit(store: &Arc<dyn Store>, batch: WriteBatch) -> Result<(), String> {
    store
        .write(batch)
        .wait_blocking()
        .map_err(|e| format!("store: {e}"))
}

fn check_rules(acl: &[String]) -> Result<(), String> {
    for r in acl {
        rampart_auth::AclRule::parse_identity_rule(r, String::new())
            .map_err(|e| format!("--acl \"{r}\": {e}"))?;
    }
    Ok(())
}

fn client_acl(
    client_id: &str,
    acl: Vec<String>,
    clear: bool,
    target: &Target,
) -> Result<(), String> {
    check_rules(&acl)?;
    let (store, _) = open(target)?;
    if acl.is_empty() && !clear {
        let rules = users::get_client_rules(store.as_ref(), client_id)?;
        for r in &rules {
            println!("{r}");
        }
        println!("{} rule(s) for client \"{client_id}\"", rules.len());
        return Ok(());
    }
    let mut b = WriteBatch::new();
    users::put_client_rules(&mut b, client_id, &acl);
    commit(&store, b)?;
    println!("client \"{client_id}\": {} rule(s)", acl.len());
    Ok(())
}

fn users_cmd(cmd: UsersCommand) -> Result<(), String> {
    match cmd {
        UsersCommand::Add {
            name,
            superuser,
            acl,
            groups,
            password_stdin,
            target,
        } => {
            users::valid_username(&name)?;
            check_rules(&acl)?;
            let (store, p) = open(&target)?;
            if users::get_user(store.as_ref(), &name)?.is_some() {
                return Err(format!(
                    "user \"{name}\" exists (use `rampart ctl users passwd`)"
                ));
            }
            let pw = read_password(password_stdin, true)?;
            let mut rec = UserRecord::with_password(pw.as_bytes(), &p)?;
            rec.superuser = superuser;
            rec.acl = acl;
            rec.groups = groups;
            let mut b = WriteBatch::new();
            users::put_user(&mut b, &name, &rec);
            commit(&store, b)?;
            println!(
                "added user \"{name}\"{}",
                if superuser { " (super-user)" } else { "" }
            );
            Ok(())
        }
        UsersCommand::List { target } => {
            let (store, _) = open(&target)?;
            let list = users::list_users(store.as_ref())?;
            let mut out = std::io::stdout().lock();
            for (name, r) in &list {
                let kind = format!("{:?}", rampart_auth::hash::kind_of(&r.hash)).to_lowercase();
                let _ = writeln!(
                    out,
                    "{name}\t{}\t{kind}\t{}",
                    if r.superuser { "superuser" } else { "-" },
                    if r.acl.is_empty() {
                        "-".to_string()
                    } else {
                        r.acl.join("; ")
                    }
                );
            }
            let _ = writeln!(out, "{} user(s)", list.len());
            Ok(())
        }
        UsersCommand::Delete { name, target } => {
            let (store, _) = open(&target)?;
            if users::get_user(store.as_ref(), &name)?.is_none() {
                return Err(format!("no user \"{name}\""));
            }
            let mut b = WriteBatch::new();
            users::delete_user(&mut b, &name);
            commit(&store, b)?;
            println!("deleted user \"{name}\"");
            Ok(())
        }
        UsersCommand::Passwd {
            name,
            password_stdin,
            target,
        } => {
            let (store, p) = open(&target)?;
            let Some(mut rec) = users::get_user(store.as_ref(), &name)? else {
                return Err(format!("no user \"{name}\""));
            };
            let pw = read_password(password_stdin, true)?;
            rec.set_password(pw.as_bytes(), &p)?;
            let mut b = WriteBatch::new();
            users::put_user(&mut b, &name, &rec);
            commit(&store, b)?;
            println!("password of \"{name}\" changed");
            Ok(())
        }
        UsersCommand::Import {
            file,
            replace,
            target,
        } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| format!("{}: cannot read: {e}", file.display()))?;
            let entries = rampart_auth::hash::parse_mosquitto_passwd(&text).map_err(|errs| {
                errs.iter()
                    .map(|e| format!("{}: {e}", file.display()))
                    .collect::<Vec<_>>()
                    .join("\n")
            })?;
            let (store, _) = open(&target)?;
            let mut b = WriteBatch::new();
            let (mut added, mut kept) = (0, 0);
            for (name, hash) in entries {
                users::valid_username(&name)?;
                match users::get_user(store.as_ref(), &name)? {
                    Some(mut rec) if replace => {
                        // A migrated hash cannot give SCRAM keys; the old ones would be stale.
                        rec.hash = hash;
                        rec.scram_sha256 = None;
                        rec.scram_sha512 = None;
                        users::put_user(&mut b, &name, &rec);
                        added += 1;
                    }
                    Some(_) => kept += 1,
                    None => {
                        let rec = UserRecord {
                            hash,
                            ..UserRecord::default()
                        };
                        users::put_user(&mut b, &name, &rec);
                        added += 1;
                    }
                }
            }
            commit(&store, b)?;
            println!("imported {added} user(s), kept {kept} existing");
            Ok(())
        }
    }
}
