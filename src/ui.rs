//! Prompts and progress bars, on stderr and only on a terminal.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::error::{Error, Result};
use crate::format::OutputFormat;
use crate::settings::Settings;

/// Whether a person can answer a prompt: stdin AND stderr are terminals. (dialoguer only checks
/// stderr, and would read /dev/tty with stdin piped; that is not a person answering.)
pub(crate) fn interactive() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// How a command that removes or moves messages may go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Consent {
    /// `--yes` was given.
    Given,
    /// A person will be asked at the terminal.
    Ask,
}

/// Checked before connecting: without a terminal, removing or moving messages needs `--yes`.
pub(crate) fn consent(settings: &Settings, action: &str) -> Result<Consent> {
    decide_consent(settings.yes, interactive(), action)
}

pub(crate) fn decide_consent(yes: bool, interactive: bool, action: &str) -> Result<Consent> {
    match (yes, interactive) {
        (true, _) => Ok(Consent::Given),
        (false, true) => Ok(Consent::Ask),
        (false, false) => Err(Error::usage(format!(
            "{action} needs confirmation, and stdin is not a terminal: pass --yes to go ahead"
        ))),
    }
}

/// Asks a yes/no question (default No). `Given` answers yes without asking.
pub(crate) fn confirm(consent: Consent, question: &str) -> Result<bool> {
    match consent {
        Consent::Given => Ok(true),
        Consent::Ask => dialoguer::Confirm::new()
            .with_prompt(question)
            .default(false)
            .interact()
            .map_err(|e| Error::with_cause("could not read the answer from the terminal", e)),
    }
}

/// A progress bar on stderr for long work: hidden unless stderr is a terminal, the output is a
/// table (machine output stays clean) and --quiet is off.
pub(crate) fn progress(settings: &Settings, total: u64, what: &str) -> ProgressBar {
    let visible = std::io::stderr().is_terminal()
        && !settings.quiet
        && settings.output == OutputFormat::Table;
    let pb = ProgressBar::with_draw_target(
        Some(total),
        if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({per_sec}, {eta} left)")
    {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_string());
    pb
}

/// A line on stderr while a command runs (e.g. that it is reconnecting), unless --quiet:
/// sanitised, one line.
pub(crate) fn note(settings: &Settings, text: &str) {
    if !settings.quiet {
        eprintln!("note: {}", crate::sanitize::line(text));
    }
}

/// Shows what a command is about to do (e.g. a replay's preview, before its confirmation) on
/// stderr, as given: the text is already rendered and sanitised by the output layer.
pub(crate) fn show_preview(text: &str) {
    eprintln!("{text}");
}

/// Whether text written to stderr may be coloured: stderr is a terminal and colour is not
/// turned off (--no-color, NO_COLOR).
pub(crate) fn stderr_color(settings: &Settings) -> bool {
    settings.color_allowed && std::io::stderr().is_terminal()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yes_goes_ahead_without_a_terminal() {
        assert_eq!(
            decide_consent(true, false, "replay").unwrap(),
            Consent::Given
        );
    }

    #[test]
    fn a_terminal_is_asked() {
        assert_eq!(decide_consent(false, true, "replay").unwrap(), Consent::Ask);
    }

    #[test]
    fn no_terminal_and_no_yes_is_a_usage_error() {
        let e = decide_consent(false, false, "purge").unwrap_err();
        assert!(
            matches!(&e, Error::Usage(m) if m.contains("--yes") && m.starts_with("purge")),
            "{e}"
        );
    }
}
