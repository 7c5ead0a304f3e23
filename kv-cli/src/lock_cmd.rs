//! `lock KEY -- COMMAND…`: hold a lock while a command runs, like `etcdctl lock` / `consul lock`.

use std::process::ExitCode;
use std::time::Duration;

use kv::{Error, LockOptions, Result};
use tokio::process::{Child, Command};

use crate::commands::{parse_ttl, Handle};

/// Exit code when the lock was lost while the command ran.
pub const LOCK_LOST: u8 = 4;

/// How long a command gets after SIGTERM before SIGKILL.
const GRACE: Duration = Duration::from_secs(5);

/// Acquires `key`, runs `command` while holding it, releases it when the command exits, and
/// returns the command's exit code (`LOCK_LOST` if the lock was lost: the command is killed).
pub async fn run(
    store: &Handle,
    key: &str,
    value: &str,
    ttl: Option<&str>,
    command: &[String],
) -> Result<ExitCode> {
    let mut options = LockOptions::with_value(value.as_bytes().to_vec());
    if let Some(ttl) = parse_ttl(ttl)? {
        options = options.ttl(ttl);
    }
    let interrupted = crate::interrupt::ctrl_c();
    tokio::pin!(interrupted);
    let lock = tokio::select! {
        l = store.new_lock(key, options) => l?,
        _ = &mut interrupted => return Ok(ExitCode::from(130)),
    };
    let (program, args) = command
        .split_first()
        .ok_or_else(|| Error::invalid_argument("lock needs a command after --"))?;
    let mut child = match Command::new(program).args(args).spawn() {
        Ok(c) => c,
        Err(e) => {
            let _ = lock.unlock().await;
            return Err(Error::invalid_argument(format!(
                "cannot run {program:?}: {e}"
            )));
        }
    };
    let lost = lock.lost_signal();
    tokio::select! {
        status = child.wait() => {
            lock.unlock().await?;
            let code = status
                .map_err(|e| Error::invalid_argument(format!("waiting for {program:?}: {e}")))?
                .code()
                .unwrap_or(1);
            Ok(ExitCode::from(code.clamp(0, 255) as u8))
        }
        reason = lost.wait() => {
            eprintln!("kvctl: {reason}; stopping {program:?}");
            stop(&mut child).await;
            Ok(ExitCode::from(LOCK_LOST))
        }
        _ = &mut interrupted => {
            stop(&mut child).await;
            lock.unlock().await?;
            Ok(ExitCode::from(130))
        }
    }
}

/// SIGTERM, then SIGKILL if the command is still running after [`GRACE`].
async fn stop(child: &mut Child) {
    if let Some(pid) = child.id() {
        // SAFETY: sending a signal to our own child process; no memory is involved.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
    }
    if tokio::time::timeout(GRACE, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}
