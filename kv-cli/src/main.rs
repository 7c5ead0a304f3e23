//! `kvctl`: a command-line client for every kv store (see `kvctl --help`).
//!
//! ```text
//! kvctl put app/port 8080                          # embedded store, no server needed
//! kvctl --url etcd://127.0.0.1:2379/myapp ls app --output json
//! kvctl lock jobs/nightly -- ./backup.sh           # hold a lock while a command runs
//! kvctl watch -r app                               # stream changes until Ctrl-C
//! ```
//!
//! Exit codes: 0 success; 1 not found or compare failed (and other failed operations); 2 usage
//! or configuration error; 3 unreachable or timed out; 4 lock lost. Errors are one line on
//! standard error, naming the problem.

mod cli;
mod commands;
mod demo;
mod election_cmd;
mod interrupt;
mod lock_cmd;
mod output;
mod txn;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use kv::Error;

use crate::cli::{Cli, Command};
use crate::output::Printer;

/// The embedded database used without `--url`: `$XDG_DATA_HOME/kvctl`, else
/// `~/.local/share/kvctl`, else `./kvctl-data`.
fn default_url() -> String {
    let dir = std::env::var_os("XDG_DATA_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".local/share"))
        })
        .map(|d| d.join("kvctl"));
    match dir {
        Some(d) => format!("sled://{}", d.display()),
        None => "sled://./kvctl-data".to_string(),
    }
}

/// The documented exit code of an error.
fn exit_code(e: &Error) -> u8 {
    match e {
        Error::Config { .. }
        | Error::InvalidKey { .. }
        | Error::InvalidArgument { .. }
        | Error::ValueTooLarge { .. }
        | Error::Unsupported { .. }
        | Error::Unauthorized { .. } => 2,
        Error::Unreachable { .. } | Error::Timeout { .. } => 3,
        Error::LockLost { .. } => lock_cmd::LOCK_LOST,
        _ => 1,
    }
}

async fn run(cli: Cli) -> kv::Result<ExitCode> {
    let out = Printer {
        output: cli.output,
        raw: cli.raw,
    };
    match &cli.command {
        Command::Demo => return demo::run(cli.url.clone()).await.map(|_| ExitCode::SUCCESS),
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(*shell, &mut cmd, "kvctl", &mut std::io::stdout());
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let url = cli.url.clone().unwrap_or_else(default_url);
    let store = kv::open(&url).await?;
    let result = dispatch(&store, out, &cli.command).await;
    // Close in every case (bounded by the store's timeout); the command's error wins.
    let closed = store.close().await;
    let code = result?;
    closed?;
    Ok(code)
}

async fn dispatch(
    store: &commands::Handle,
    out: Printer,
    command: &Command,
) -> kv::Result<ExitCode> {
    match command {
        Command::Get { key } => commands::get(store, out, key).await?,
        Command::Put {
            key,
            source,
            ttl,
            create,
            if_version,
        } => {
            let value = commands::read_value(source)?;
            commands::put(store, out, key, value, ttl.as_deref(), *create, *if_version).await?
        }
        Command::Delete { key, if_version } => {
            commands::delete(store, out, key, *if_version).await?
        }
        Command::Ls { prefix, keys_only } => {
            commands::ls(store, out, prefix.as_deref().unwrap_or(""), *keys_only).await?
        }
        Command::Rm { prefix, .. } => commands::rm(store, out, prefix).await?,
        Command::Watch { key, recursive } => commands::watch(store, out, key, *recursive).await?,
        Command::Events { prefix, from } => commands::events(store, out, prefix, *from).await?,
        Command::Lock {
            key,
            value,
            ttl,
            command,
        } => return lock_cmd::run(store, key, value, ttl.as_deref(), command).await,
        Command::Elect { key, name, ttl } => {
            return election_cmd::elect(store, out, key, name, ttl.as_deref()).await
        }
        Command::Leader { key, watch } => {
            return election_cmd::leader(store, out, key, *watch).await
        }
        Command::Txn => txn::run(store, out).await?,
        Command::Capabilities => commands::capabilities(store, out),
        Command::Demo | Command::Completions { .. } => unreachable!("handled before opening"),
    }
    Ok(ExitCode::SUCCESS)
}

#[tokio::main]
async fn main() -> ExitCode {
    // clap exits with 2 on usage errors and prints help/version with 0.
    let mut cli = Cli::parse();
    cli.url = cli.url.filter(|u| !u.is_empty()); // an empty KV_URL counts as unset
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            let one_line = e.to_string().replace('\n', " ");
            eprintln!("kvctl: {one_line}");
            ExitCode::from(exit_code(&e))
        }
    }
}
