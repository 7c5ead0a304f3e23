//! The TLS settings every network driver takes, and their one set of rules.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::url::ConnectUrl;

/// PEM files for TLS: `ca=` (trust this CA), `cert=` + `key=` (client certificate for mutual
/// TLS), `domain=` (server name to verify instead of the host). The same URL options on every
/// network driver; `tls=true` enables TLS with no file (the system's roots, where the driver
/// supports that), `tls=false` with a file is a contradiction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM CA certificate(s) to trust.
    pub ca: Option<PathBuf>,
    /// PEM client certificate (needs `key`).
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`. Only its path is ever printed.
    pub key: Option<PathBuf>,
    /// Server name to verify instead of the URL's host.
    pub domain: Option<String>,
}

/// The URL options [`TlsFiles::take`] reads.
pub const TLS_OPTIONS: [&str; 5] = ["ca", "cert", "key", "domain", "tls"];

impl TlsFiles {
    /// Trusts the CA in `ca` (PEM).
    pub fn with_ca(mut self, ca: impl Into<PathBuf>) -> Self {
        self.ca = Some(ca.into());
        self
    }

    /// Presents a client certificate (mutual TLS).
    pub fn with_client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.cert = Some(cert.into());
        self.key = Some(key.into());
        self
    }

    /// Verifies the server as `domain`.
    pub fn with_domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = Some(domain.into());
        self
    }

    /// Takes the TLS options out of a URL: `Some` when any file option or `tls=true` is given.
    pub fn take(url: &mut ConnectUrl) -> Result<Option<TlsFiles>> {
        let files = TlsFiles {
            ca: url.take("ca").map(PathBuf::from),
            cert: url.take("cert").map(PathBuf::from),
            key: url.take("key").map(PathBuf::from),
            domain: url.take("domain"),
        };
        let any = files != TlsFiles::default();
        match (url.take_bool("tls")?, any) {
            (Some(false), true) => Err(Error::config(
                "tls=false contradicts the TLS options ca=/cert=/key=/domain=",
            )),
            (Some(true), _) | (None, true) => Ok(Some(files)),
            (_, false) => Ok(None),
        }
    }

    /// The shared rules: `cert` and `key` go together, and TLS needs the driver's `tls` cargo
    /// feature (`enabled`), else [`Error::Config`] naming `krate`'s feature.
    pub fn validate(&self, enabled: bool, krate: &str) -> Result<()> {
        if !enabled {
            return Err(Error::config(format!(
                "TLS options (ca=, cert=, key=, domain=, tls=) need the `tls` feature of {krate} (or of kv); rebuild with it enabled"
            )));
        }
        if self.cert.is_some() != self.key.is_some() {
            return Err(Error::config(
                "TLS options cert= and key= must be given together",
            ));
        }
        Ok(())
    }

    /// The CA file's contents, if one is set.
    pub fn read_ca(&self) -> Result<Option<Vec<u8>>> {
        self.ca
            .as_deref()
            .map(|p| read_pem(p, "CA certificate"))
            .transpose()
    }

    /// The client certificate and key contents, if set.
    pub fn read_identity(&self) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        match (&self.cert, &self.key) {
            (Some(c), Some(k)) => Ok(Some((
                read_pem(c, "client certificate")?,
                read_pem(k, "client key")?,
            ))),
            _ => Ok(None),
        }
    }
}

/// Reads a PEM file; the error names the file and what it was for, never its contents.
pub fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>> {
    let data = std::fs::read(path).map_err(|e| {
        Error::config(format!(
            "cannot read the {what} file {}: {e}",
            path.display()
        ))
    })?;
    if !data.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(Error::config(format!(
            "the {what} file {} is not PEM (no -----BEGIN line)",
            path.display()
        )));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(url: &str) -> Result<Option<TlsFiles>> {
        let mut u = ConnectUrl::parse(url)?;
        let t = TlsFiles::take(&mut u);
        u.finish()?;
        t
    }

    #[test]
    fn options_and_rules() {
        assert_eq!(take("x://h/").unwrap(), None);
        assert_eq!(take("x://h/?tls=true").unwrap(), Some(TlsFiles::default()));
        let t = take("x://h/?ca=/c.pem&cert=/a&key=/b&domain=d")
            .unwrap()
            .unwrap();
        assert_eq!(t.ca.as_deref(), Some(Path::new("/c.pem")));
        assert!(t.validate(true, "kv-x").is_ok());
        assert!(take("x://h/?tls=false&ca=/c").is_err());
        let half = TlsFiles::default().with_ca("/c").with_domain("d");
        let e = TlsFiles {
            cert: Some("/a".into()),
            ..half
        }
        .validate(true, "kv-x")
        .unwrap_err();
        assert!(e.to_string().contains("together"), "{e}");
        let e = TlsFiles::default().validate(false, "kv-x").unwrap_err();
        assert!(e.to_string().contains("`tls` feature of kv-x"), "{e}");
    }

    #[test]
    fn pem_errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("kv-core-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad = dir.join("bad.pem");
        std::fs::write(&bad, "secret-material").unwrap();
        let e = read_pem(&bad, "client key").unwrap_err().to_string();
        assert!(e.contains("bad.pem") && e.contains("not PEM"), "{e}");
        assert!(!e.contains("secret-material"), "{e}");
        let e = read_pem(&dir.join("missing.pem"), "CA certificate")
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.pem"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
