//! How the examples end: an error is printed with `Display`, one line per cause, not as a
//! `Debug` struct.

use std::error::Error;
use std::process::ExitCode;

/// `error: {e}`, then `  caused by: {cause}` for each source in the chain whose text the line
/// before does not already include (many messages quote their source).
pub fn describe(e: &dyn Error) -> String {
    let mut text = format!("error: {e}");
    let mut last = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !last.contains(&line) {
            text.push_str(&format!("\n  caused by: {line}"));
        }
        last = line;
        source = cause.source();
    }
    text
}

/// The exit status of a `main` that ran to `result`; an error is printed to stderr first.
pub fn exit_code<E: Into<Box<dyn Error>>>(result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", describe(e.into().as_ref()));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;

    /// An error with a message and an optional cause.
    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl fmt::Display for Layer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for Layer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|l| l as &(dyn Error + 'static))
        }
    }

    #[test]
    fn prints_the_message_and_each_new_cause() {
        let root = Layer("connection refused", None);
        let quoted = Layer("download failed: connection refused", Some(Box::new(root)));
        let top = Layer("cannot fetch CIFAR-10", Some(Box::new(quoted)));
        assert_eq!(
            describe(&top),
            "error: cannot fetch CIFAR-10\n  caused by: download failed: connection refused"
        );
        let alone = Layer("no GPU adapter found", None);
        assert_eq!(describe(&alone), "error: no GPU adapter found");
        let chain = Layer(
            "a",
            Some(Box::new(Layer("b", Some(Box::new(Layer("c", None)))))),
        );
        assert_eq!(describe(&chain), "error: a\n  caused by: b\n  caused by: c");
    }

    #[test]
    fn a_core_error_reads_as_its_message() {
        let e = bayesian_bits::Error::InvalidRange {
            op: "Quantizer::set_x_max",
            x_max: -1.0,
        };
        assert_eq!(
            describe(&e),
            "error: Quantizer::set_x_max: x_max must be positive and finite, got -1"
        );
        assert_eq!(exit_code(Err(e)), ExitCode::FAILURE);
        assert_eq!(
            exit_code(Ok::<(), bayesian_bits::Error>(())),
            ExitCode::SUCCESS
        );
    }
}
