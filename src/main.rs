//! Parse the command line, start tokio, run the command, render its report, exit with its code.

use std::io::Write;

use clap::Parser;

use dlq::cli::{Cli, Command};
use dlq::error::{exit_code, Error, Outcome};
use dlq::settings::Settings;

/// jemalloc instead of the system's allocator: see Cargo.toml.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    // Threads dlq does not spawn itself (lapin's I/O loop parses each frame's header table
    // recursively: a table nested 2,000 deep overflowed its default 2 MiB) get dlq's stack
    // size too. Set before the first thread is spawned, which is when std reads it.
    if std::env::var_os("RUST_MIN_STACK").is_none() {
        std::env::set_var("RUST_MIN_STACK", dlq::STACK_SIZE.to_string());
    }
    let cli = Cli::try_parse().unwrap_or_else(|e| usage_error(&e));
    if let Command::Completions(a) = &cli.command {
        let _ = std::io::stdout().write_all(&dlq::generate::completions(a.shell));
        return;
    }
    let verbose = cli.global.verbose;
    // The command runs on a thread with a stack big enough for the largest jq expression dlq
    // accepts (see dlq::STACK_SIZE).
    let result = std::thread::Builder::new()
        .stack_size(dlq::STACK_SIZE)
        .spawn(move || run(cli))
        .map_err(|e| Error::with_cause("cannot start the command's thread", e))
        .and_then(|t| {
            t.join()
                .unwrap_or_else(|_| Err(Error::runtime("internal error: the command panicked")))
        });
    if let Err(e) = &result {
        // One line; a message's further lines (e.g. a caret under a filter's bad column) and the
        // cause are hints shown with -v.
        let mut lines = e.message().lines();
        eprintln!(
            "error: {}",
            dlq::sanitize::line(lines.next().unwrap_or_default())
        );
        if verbose {
            for hint in lines {
                eprintln!("{}", dlq::sanitize::for_terminal(hint).trim_end());
            }
            for cause in e.causes() {
                eprintln!("cause: {}", dlq::sanitize::for_terminal(&cause));
            }
        }
    }
    std::process::exit(exit_code(&result));
}

/// clap's error as one line (exit 2), its tip and usage lines only with -v; help and version
/// are printed as clap prints them.
fn usage_error(e: &clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        e.exit();
    }
    let verbose = std::env::args_os().any(|a| a == "-v" || a == "--verbose");
    let text = e.render().to_string();
    let line = if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        "a command is needed: topology, list, peek, replay, export, import, purge, stats or completions; try 'dlq --help'".to_string()
    } else {
        // The error is what comes before the first blank line; tip and usage follow it.
        let head: Vec<&str> = text
            .lines()
            .take_while(|l| !l.trim().is_empty())
            .map(str::trim)
            .collect();
        let head = head.join(" ");
        let head = head.strip_prefix("error: ").unwrap_or(&head);
        format!("{head}; try '--help'")
    };
    eprintln!("error: {}", dlq::sanitize::line(&line));
    if verbose {
        for hint in text.lines().skip_while(|l| !l.trim().is_empty()) {
            if !hint.trim().is_empty() {
                eprintln!("{}", dlq::sanitize::for_terminal(hint).trim_end());
            }
        }
    }
    std::process::exit(2);
}

fn run(cli: Cli) -> Result<Outcome, Error> {
    let settings = Settings::from_env(&cli.global)?;
    let task = dlq::settings::task(cli.command)
        .ok_or_else(|| Error::runtime("internal error: completions reached the commands"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_stack_size(dlq::STACK_SIZE)
        .enable_all()
        .build()
        .map_err(|e| Error::with_cause("cannot start the async runtime", e))?;
    let report = runtime.block_on(async {
        dlq::interrupt::install()
            .map_err(|e| Error::with_cause("cannot listen for Ctrl-C, SIGTERM and SIGHUP", e))?;
        dlq::cmd::run(task, &settings).await
    })?;
    // A closed stdout (e.g. `| head`) is not an error worth reporting.
    let _ = dlq::output::emit(report.as_ref(), &settings);
    Ok(report.outcome())
}
