//! Read consistency: the store-level `consistency=` URL option shared by every driver.
//!
//! - [`Consistency::Linearizable`] (the default, `consistency=linearizable`): every read
//!   (`get`, `exists`, `list`, the first item of a watch, the gets of a `txn`) reflects every
//!   write acknowledged before the read was called, by any client on any member.
//! - [`Consistency::Stale`] (`consistency=stale`): reads are served by whichever server the
//!   client talks to, from its own copy, without a round through the leader or a quorum. They
//!   are cheaper and may miss writes acknowledged to other clients shortly before. What can go
//!   stale differs per backend and is stated in each driver's crate docs. Writes, compare-and-
//!   swap and locks are unaffected: the server checks their conditions.

use crate::error::{Error, Result};

/// How reads are served; see the [module docs](self). Parsed from the `consistency=` URL option.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Consistency {
    /// Every read sees every write acknowledged before it was called (the default).
    #[default]
    Linearizable,
    /// Reads may be served from a server's local, possibly lagging, copy.
    Stale,
}

/// Name of the URL option.
pub const OPTION: &str = "consistency";

impl Consistency {
    /// The allowed option values, in the order the docs list them.
    pub const VALUES: [&'static str; 2] = ["linearizable", "stale"];

    /// Parses an option value (`linearizable` or `stale`, ASCII case-insensitive); anything
    /// else is an [`Error::Config`] naming the allowed values.
    pub fn parse(value: &str) -> Result<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "linearizable" => Ok(Consistency::Linearizable),
            "stale" => Ok(Consistency::Stale),
            _ => Err(Error::config(format!(
                "option {OPTION}: {value:?} is not one of {}",
                Self::VALUES.join(", ")
            ))),
        }
    }

    /// The option value of this mode (`"linearizable"` or `"stale"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::Linearizable => "linearizable",
            Consistency::Stale => "stale",
        }
    }

    /// True for [`Consistency::Stale`].
    pub fn is_stale(self) -> bool {
        self == Consistency::Stale
    }
}

impl std::fmt::Display for Consistency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Consistency {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_values_and_rejects_others() {
        assert_eq!(Consistency::default(), Consistency::Linearizable);
        assert_eq!(
            Consistency::parse("linearizable").unwrap(),
            Consistency::Linearizable
        );
        assert_eq!(Consistency::parse("STALE").unwrap(), Consistency::Stale);
        for v in Consistency::VALUES {
            assert_eq!(Consistency::parse(v).unwrap().as_str(), v);
        }
        for bad in ["", "serializable", "strong", "stale!"] {
            let e = Consistency::parse(bad).unwrap_err();
            assert!(matches!(e, Error::Config { .. }), "{bad}");
            let msg = e.to_string();
            assert!(msg.contains("linearizable, stale"), "{msg}");
        }
    }
}
