//! Ctrl-C, and the signals that mean the same from elsewhere, listened to from the first moment of
//! the run.
//!
//! `install` registers the handlers before any command starts, so no signal can arrive in a gap
//! where the default action would kill the process mid-write. A command that can stop cleanly
//! (finish what is in flight, report the counts) holds an [`Armed`] guard while it runs and
//! waits on [`interrupted`]; outside such a guard the signal ends the process at once with exit
//! 130, because nothing is in flight there that a report could describe.
//!
//! SIGTERM (`kill`, `timeout`, a CI job cancelled, a container stopped) and SIGHUP (the terminal
//! or the ssh session went away) are an interruption like Ctrl-C: by default either killed a
//! `replay` with up to a window of copies confirmed and their sources not yet acked, so a rerun
//! duplicated them, and with no report. SIGKILL cannot be caught; what it leaves is described in
//! docs/MOVE-ENGINE.md.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use tokio::sync::watch;

static SIGNALLED: OnceLock<watch::Sender<bool>> = OnceLock::new();
static ARMED: AtomicUsize = AtomicUsize::new(0);

fn sender() -> &'static watch::Sender<bool> {
    SIGNALLED.get_or_init(|| watch::channel(false).0)
}

/// Registers the handlers; call once inside the runtime, before the command runs.
pub fn install() -> std::io::Result<()> {
    #[cfg(unix)]
    let mut signals = {
        use tokio::signal::unix::{signal, SignalKind};
        [
            (signal(SignalKind::interrupt())?, "interrupted"),
            (signal(SignalKind::terminate())?, "interrupted (SIGTERM)"),
            (signal(SignalKind::hangup())?, "interrupted (SIGHUP)"),
        ]
    };
    tokio::spawn(async move {
        loop {
            #[cfg(unix)]
            let said = {
                let [(int, i), (term, t), (hup, h)] = &mut signals;
                tokio::select! {
                    got = int.recv() => got.map(|_| *i),
                    got = term.recv() => got.map(|_| *t),
                    got = hup.recv() => got.map(|_| *h),
                }
            };
            #[cfg(not(unix))]
            let said = tokio::signal::ctrl_c().await.ok().map(|_| "interrupted");
            let Some(said) = said else {
                return;
            };
            if ARMED.load(Ordering::SeqCst) == 0 {
                eprintln!("{said}");
                std::process::exit(130);
            }
            sender().send_replace(true);
        }
    });
    Ok(())
}

/// While held, a Ctrl-C (or SIGTERM, SIGHUP) is turned into [`interrupted`] instead of ending the
/// process.
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

/// Completes once Ctrl-C has been pressed or SIGTERM or SIGHUP received (at once if it already
/// was). Cancel-safe.
pub(crate) async fn interrupted() {
    let mut rx = sender().subscribe();
    // The sender lives in a static, so the channel never closes.
    let _ = rx.wait_for(|&v| v).await;
}

/// Whether Ctrl-C has been pressed (or SIGTERM, SIGHUP received).
pub(crate) fn requested() -> bool {
    *sender().borrow()
}
