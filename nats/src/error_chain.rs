//! One line for an error and its causes, for logs and for the reasons users read.

use std::error::Error;
use std::fmt;
use std::io::ErrorKind;

/// Any error, boxed: the `#[source]` of errors that wrap another library's.
pub type BoxError = Box<dyn Error + Send + Sync + 'static>;

/// Displays an error followed by each of its causes: `storing the checkpoint: object store,
/// jobs/…: connection refused`. A cause whose text its parent already shows is skipped.
#[derive(Debug, Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.0.to_string();
        f.write_str(&shown)?;
        let mut cause = self.0.source();
        while let Some(error) = cause {
            let text = error.to_string();
            if !shown.contains(&text) {
                write!(f, ": {text}")?;
                shown = text;
            }
            cause = error.source();
        }
        Ok(())
    }
}

/// I/O errors that say a service is down or refusing, not that the job is bad.
const OUTAGE_KINDS: [ErrorKind; 12] = [
    ErrorKind::PermissionDenied,
    ErrorKind::ReadOnlyFilesystem,
    ErrorKind::StorageFull,
    ErrorKind::QuotaExceeded,
    ErrorKind::StaleNetworkFileHandle,
    ErrorKind::ConnectionRefused,
    ErrorKind::ConnectionReset,
    ErrorKind::ConnectionAborted,
    ErrorKind::NotConnected,
    ErrorKind::HostUnreachable,
    ErrorKind::NetworkUnreachable,
    ErrorKind::NetworkDown,
];

/// Whether `error` or one of its causes is an I/O error that says a service is down (a store
/// unreachable, read-only, full or denying access): waiting helps, blaming the job does not.
/// Timeouts are left out: a job can cause its own.
pub fn is_outage(error: &(dyn Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && OUTAGE_KINDS.contains(&io.kind())
        {
            return true;
        }
        cause = error.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct Layer {
        text: &'static str,
        #[source]
        source: Option<Box<Layer>>,
    }

    fn chain(texts: &[&'static str]) -> Layer {
        texts
            .iter()
            .rev()
            .fold(None, |source, text| {
                Some(Layer {
                    text,
                    source: source.map(Box::new),
                })
            })
            .expect("at least one layer")
    }

    #[test]
    fn causes_follow_the_error_once_each() {
        let cases: [(&[&str], &str); 3] = [
            (&["reading"], "reading"),
            (&["reading", "timed out"], "reading: timed out"),
            (
                &[
                    "error sending request: connection refused",
                    "connection refused",
                ],
                "error sending request: connection refused",
            ),
        ];
        for (layers, expected) in cases {
            assert_eq!(ErrorChain(&chain(layers)).to_string(), expected);
        }
    }

    #[test]
    fn an_outage_is_found_however_deep_its_io_error_lies() {
        #[derive(Debug, thiserror::Error)]
        #[error("object store, jobs/1/audio.pcm")]
        struct Store(#[source] std::io::Error);
        let deep = Store(std::io::Error::from(ErrorKind::ReadOnlyFilesystem));
        let plain = Store(std::io::Error::from(ErrorKind::UnexpectedEof));
        assert!(is_outage(&deep));
        assert!(!is_outage(&plain));
        assert!(!is_outage(&chain(&["reading", "connection refused"])));
    }
}
