//! Shell completion scripts and the man page, generated from the clap definition.

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;

/// The completion script for `shell`, as `dlq completions SHELL` prints it.
pub fn completions(shell: Shell) -> Vec<u8> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "dlq", &mut out);
    out
}

/// The file name each committed completion script has under `completions/`.
pub fn completion_file(shell: Shell) -> &'static str {
    match shell {
        Shell::Bash => "dlq.bash",
        Shell::Zsh => "_dlq",
        Shell::Fish => "dlq.fish",
        Shell::PowerShell => "_dlq.ps1",
        Shell::Elvish => "dlq.elv",
        _ => "dlq.unknown",
    }
}

pub const SHELLS: [Shell; 5] = [
    Shell::Bash,
    Shell::Zsh,
    Shell::Fish,
    Shell::PowerShell,
    Shell::Elvish,
];

/// The roff man page (`docs/dlq.1`).
pub fn man_page() -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut out)?;
    Ok(out)
}
