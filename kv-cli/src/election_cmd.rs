//! `elect KEY NAME` and `leader KEY`: the election recipe on the command line.

use std::process::ExitCode;
use std::time::Duration;

use futures::StreamExt;
use kv::election::{observe, Candidate, Leader};
use kv::{Error, Result};
use serde_json::json;

use crate::commands::{parse_ttl, Handle};
use crate::lock_cmd::LOCK_LOST;
use crate::output::Printer;

/// The election TTL when `--ttl` is not given: 10 s, or the backend's minimum if larger.
fn default_ttl(store: &Handle) -> Duration {
    store.capabilities().min_ttl.max(Duration::from_secs(10))
}

/// Campaigns for `key` as `name`, prints the term once elected, and holds the office until
/// Ctrl-C (resigns, exit 0) or until leadership is lost (exit 4).
pub async fn elect(
    store: &Handle,
    out: Printer,
    key: &str,
    name: &str,
    ttl: Option<&str>,
) -> Result<ExitCode> {
    let ttl = parse_ttl(ttl)?.unwrap_or_else(|| default_ttl(store));
    let candidate = Candidate::new(store.clone(), key, name.as_bytes().to_vec(), ttl);
    let interrupted = crate::interrupt::ctrl_c();
    tokio::pin!(interrupted);
    let leadership = tokio::select! {
        l = candidate.campaign() => l?,
        _ = &mut interrupted => return Ok(ExitCode::from(130)),
    };
    out.done(
        &format!("elected {key} as {name} (term {})", leadership.term()),
        json!({ "elected": key, "name": name, "term": leadership.term() }),
    );
    tokio::select! {
        reason = leadership.lost() => {
            eprintln!("kvctl: {reason}");
            Ok(ExitCode::from(LOCK_LOST))
        }
        _ = &mut interrupted => {
            leadership.resign().await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_leader(out: Printer, key: &str, leader: &Option<Leader>) {
    match leader {
        Some(l) => out.value(
            format!("{key}: {} (term {})", l.value_str(), l.term),
            json!({ "key": key, "leader": l.value_str(), "term": l.term }),
        ),
        None => out.value(
            format!("{key}: no leader"),
            json!({ "key": key, "leader": null }),
        ),
    }
}

/// Prints the current leader of `key` (exit 1 if there is none); with `follow`, every change
/// until Ctrl-C.
pub async fn leader(store: &Handle, out: Printer, key: &str, follow: bool) -> Result<ExitCode> {
    let mut leaders = observe(store.clone(), key);
    let interrupted = crate::interrupt::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let item = tokio::select! {
            item = leaders.next() => item,
            _ = &mut interrupted => return Ok(ExitCode::SUCCESS),
        };
        match item {
            Some(Ok(leader)) => {
                print_leader(out, key, &leader);
                if !follow {
                    let code = if leader.is_some() { 0 } else { 1 };
                    return Ok(ExitCode::from(code));
                }
            }
            Some(Err(e)) if !follow => return Err(e),
            Some(Err(e)) => eprintln!("kvctl: leader: {e} (still following)"),
            None => return Err(Error::Closed),
        }
    }
}
