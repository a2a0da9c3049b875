//! Parse the command line, start tokio, run the command, render its report, exit with its code.

use std::io::Write;

use clap::Parser;

use dlq::cli::{Cli, Command};
use dlq::error::{exit_code, Error, Outcome};
use dlq::settings::Settings;

fn main() {
    let cli = Cli::parse();
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
        eprintln!("error: {}", e.message());
        if verbose {
            if let Some(cause) = e.cause() {
                eprintln!("cause: {cause}");
            }
        }
    }
    std::process::exit(exit_code(&result));
}

fn run(cli: Cli) -> Result<Outcome, Error> {
    let settings = Settings::from_env(&cli.global)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_stack_size(dlq::STACK_SIZE)
        .enable_all()
        .build()
        .map_err(|e| Error::with_cause("cannot start the async runtime", e))?;
    let report = runtime.block_on(async {
        dlq::interrupt::install().map_err(|e| Error::with_cause("cannot listen for Ctrl-C", e))?;
        dlq::cmd::run(cli.command, &settings).await
    })?;
    // A closed stdout (e.g. `| head`) is not an error worth reporting.
    let _ = dlq::output::emit(report.as_ref(), &settings);
    Ok(report.outcome())
}
