//! The one shutdown signal of every traceflow binary.

/// Resolves at the first SIGINT (Ctrl-C) or SIGTERM (what Kubernetes and the lab send).
///
/// If the SIGTERM handler cannot be installed (no signal support: never on Linux), only SIGINT
/// is awaited rather than failing the program.
pub async fn signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    let term = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    /// SIGTERM sent to this very process resolves the future (the handler is installed before
    /// the signal is raised, so the default action, termination, does not happen).
    #[tokio::test]
    async fn sigterm_resolves_the_signal_future() {
        let waiting = tokio::spawn(super::signal());
        // Let the task install its handlers first.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiting.is_finished(), "resolved before any signal");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("SIGTERM did not resolve shutdown::signal")
            .expect("signal task");
    }
}
