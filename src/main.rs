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
    let result = run(cli);
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
