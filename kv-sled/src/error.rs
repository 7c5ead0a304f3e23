//! Error mapping: every sled and I/O failure of this driver becomes a kv [`Error`] here.

use kv_core::Error;

use crate::BACKEND;

/// Maps one sled error to kv's error (the one mapping function of this driver). Nothing sled
/// reports is worth retrying the same call for (I/O errors of a local disk, corruption,
/// unsupported operations), so every error is a non-retryable [`Error::Backend`].
pub(crate) fn map_err(operation: &str, e: sled::Error) -> Error {
    match e {
        sled::Error::Io(io) => Error::backend(BACKEND, format!("{operation}: I/O error: {io}"), io),
        other => Error::Backend {
            retryable: false,
            backend: BACKEND,
            message: format!("{operation}: {other}"),
            source: Some(Box::new(other)),
        },
    }
}

/// An I/O error of kv's own file work (syncs, threads), mapped like sled's.
pub(crate) fn io_err(operation: &str, e: std::io::Error) -> Error {
    map_err(operation, sled::Error::Io(e))
}

/// A failure without a source error (a corrupt record, a failed flush round).
pub(crate) fn failed(message: impl Into<String>) -> Error {
    Error::Backend {
        retryable: false,
        backend: BACKEND,
        message: message.into(),
        source: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_retryable() {
        let io = std::io::Error::other("disk gone");
        for e in [
            io_err("fsync", io),
            map_err("read", sled::Error::Unsupported("x".into())),
            failed("corrupt record"),
        ] {
            assert!(
                matches!(
                    e,
                    Error::Backend {
                        backend: "sled",
                        ..
                    }
                ),
                "{e:?}"
            );
            assert!(!e.is_transient(), "{e:?}");
        }
        assert!(io_err("fsync", std::io::Error::other("disk gone"))
            .to_string()
            .contains("fsync: I/O error: disk gone"));
    }
}
