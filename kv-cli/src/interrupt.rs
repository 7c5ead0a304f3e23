//! Ctrl-C with the handler installed at once.

use std::future::Future;

use tokio::signal::unix::{signal, SignalKind};

/// Resolves on SIGINT (Ctrl-C). The handler is installed when this is called, not when the
/// future is first polled, so a Ctrl-C that arrives before the first poll (a `select!` may
/// poll its other branch first) still ends the command cleanly instead of killing it.
pub fn ctrl_c() -> impl Future<Output = ()> + Send {
    let mut sigint = signal(SignalKind::interrupt()).ok();
    async move {
        match sigint.as_mut() {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    }
}
