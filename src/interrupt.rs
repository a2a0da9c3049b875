//! Ctrl-C, listened to from the first moment of the run.
//!
//! `install` registers the SIGINT handler before any command starts, so no signal can arrive in
//! a gap where the default action would kill the process mid-write. A command that can stop
//! cleanly (finish what is in flight, report the counts) holds an [`Armed`] guard while it runs
//! and waits on [`interrupted`]; outside such a guard a Ctrl-C ends the process at once with
//! exit 130, as before, because nothing is in flight there that a report could describe.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use tokio::sync::watch;

static SIGNALLED: OnceLock<watch::Sender<bool>> = OnceLock::new();
static ARMED: AtomicUsize = AtomicUsize::new(0);

fn sender() -> &'static watch::Sender<bool> {
    SIGNALLED.get_or_init(|| watch::channel(false).0)
}

/// Registers the handler; call once inside the runtime, before the command runs.
pub fn install() -> std::io::Result<()> {
    #[cfg(unix)]
    let mut signals = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    tokio::spawn(async move {
        loop {
            #[cfg(unix)]
            let got = signals.recv().await.is_some();
            #[cfg(not(unix))]
            let got = tokio::signal::ctrl_c().await.is_ok();
            if !got {
                return;
            }
            if ARMED.load(Ordering::SeqCst) == 0 {
                eprintln!("interrupted");
                std::process::exit(130);
            }
            sender().send_replace(true);
        }
    });
    Ok(())
}

/// While held, a Ctrl-C is turned into [`interrupted`] instead of ending the process.
pub(crate) struct Armed(());

pub(crate) fn arm() -> Armed {
    ARMED.fetch_add(1, Ordering::SeqCst);
    Armed(())
}

impl Drop for Armed {
    fn drop(&mut self) {
        ARMED.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Completes once Ctrl-C has been pressed (at once if it already was). Cancel-safe.
pub(crate) async fn interrupted() {
    let mut rx = sender().subscribe();
    // The sender lives in a static, so the channel never closes.
    let _ = rx.wait_for(|&v| v).await;
}

/// Whether Ctrl-C has been pressed.
pub(crate) fn requested() -> bool {
    *sender().borrow()
}
