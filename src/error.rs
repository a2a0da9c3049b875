//! The error type every command returns, and the one function that turns an outcome into an exit code.

use std::fmt;

/// What went wrong, in the categories the exit-code table of the contract distinguishes.
#[derive(Debug)]
pub enum Error {
    /// Bad flag, bad config, bad filter, bad input file, confirmation needed but no terminal.
    Usage(String),
    /// Broker unreachable, access refused, queue not found, a publish not confirmed, I/O failure.
    Runtime {
        message: String,
        /// What it came from, as an error source (its own `source()` chain kept), shown with `-v`.
        cause: Option<Cause>,
    },
    /// Ctrl-C: what was in flight was finished; the message says what was done.
    Interrupted(String),
}

impl Error {
    pub fn usage(message: impl Into<String>) -> Self {
        Error::Usage(message.into())
    }

    pub fn runtime(message: impl Into<String>) -> Self {
        Error::Runtime {
            message: message.into(),
            cause: None,
        }
    }

    /// A runtime error whose underlying cause is shown only with `-v`.
    pub fn with_cause(message: impl Into<String>, cause: impl Into<Cause>) -> Self {
        Error::Runtime {
            message: message.into(),
            cause: Some(cause.into()),
        }
    }

    /// A runtime error that says more than `self` (what was done before it happened), keeping
    /// `self`'s cause.
    pub fn restated(self, message: impl Into<String>) -> Self {
        let cause = match self {
            Error::Runtime { cause, .. } => cause,
            Error::Usage(_) | Error::Interrupted(_) => None,
        };
        Error::Runtime {
            message: message.into(),
            cause,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Error::Usage(m) | Error::Interrupted(m) => m,
            Error::Runtime { message, .. } => message,
        }
    }

    /// The causes below the message, outermost first: the cause, then its `source()` chain.
    pub fn causes(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut next = std::error::Error::source(self);
        while let Some(e) = next {
            out.push(e.to_string());
            next = e.source();
        }
        out
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Runtime {
                cause: Some(cause), ..
            } => Some(cause.as_ref()),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The cause below a runtime error: any error (a `String` or `&str` becomes one).
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// How a command that returned normally ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything asked was done (or the user answered "no" to a prompt).
    Success,
    /// The work ran, but some items failed (e.g. replay kept messages it could not move).
    PartialFailure,
    /// `topology verify` found drift, or `topology apply` hit a conflict.
    Drift,
    /// Ctrl-C: the command finished what was in flight and reported it.
    Interrupted,
}

/// The single place exit codes are decided (contract section 7):
///
/// | outcome                                    | code |
/// |--------------------------------------------|------|
/// | `Ok(Success)`                              | 0    |
/// | `Ok(PartialFailure)`, `Err(Runtime)`       | 1    |
/// | `Err(Usage)` (clap's own errors also exit 2) | 2  |
/// | `Ok(Drift)`                                | 3    |
/// | `Ok(Interrupted)`, `Err(Interrupted)`      | 130  |
pub fn exit_code(result: &Result<Outcome>) -> i32 {
    match result {
        Ok(Outcome::Success) => 0,
        Ok(Outcome::PartialFailure) => 1,
        Ok(Outcome::Drift) => 3,
        Ok(Outcome::Interrupted) => 130,
        Err(Error::Runtime { .. }) => 1,
        Err(Error::Usage(_)) => 2,
        Err(Error::Interrupted(_)) => 130,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_exits_0() {
        assert_eq!(exit_code(&Ok(Outcome::Success)), 0);
    }

    #[test]
    fn runtime_failures_exit_1() {
        assert_eq!(exit_code(&Err(Error::runtime("broker down"))), 1);
        assert_eq!(exit_code(&Ok(Outcome::PartialFailure)), 1);
    }

    #[test]
    fn usage_errors_exit_2() {
        assert_eq!(exit_code(&Err(Error::usage("bad flag"))), 2);
    }

    #[test]
    fn drift_exits_3() {
        assert_eq!(exit_code(&Ok(Outcome::Drift)), 3);
    }

    #[test]
    fn interrupt_exits_130() {
        assert_eq!(exit_code(&Err(Error::Interrupted("stopped".into()))), 130);
        assert_eq!(exit_code(&Ok(Outcome::Interrupted)), 130);
    }

    #[test]
    fn cause_is_kept_apart_from_the_message() {
        let e = Error::with_cause("cannot connect", "io error: refused");
        assert_eq!(e.to_string(), "cannot connect");
        assert_eq!(e.causes(), ["io error: refused"]);
    }

    #[test]
    fn causes_are_a_chain_of_error_sources() {
        let io = std::io::Error::other(Error::with_cause("inner", "root"));
        let e = Error::with_cause("outer", io).restated("outer, after 3 messages");
        assert_eq!(e.to_string(), "outer, after 3 messages");
        assert_eq!(e.causes(), ["inner", "root"]);
        assert!(Error::runtime("alone").causes().is_empty());
    }
}
