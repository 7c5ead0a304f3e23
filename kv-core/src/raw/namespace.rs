//! A store's namespace: the key prefix every stored key of the store carries.

use crate::error::Result;
use crate::key::{normalize_key, normalize_prefix};

/// A normalized namespace (possibly empty) and the mapping between user keys and stored keys
/// `<namespace>/<key>`. Drivers whose stored form needs more (a leading `/` on ZooKeeper) add
/// it around these.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Namespace(String);

impl Namespace {
    /// Normalizes `namespace` by the prefix rules; an invalid one is
    /// [`Error::InvalidKey`](crate::Error::InvalidKey).
    pub fn new(namespace: &str) -> Result<Self> {
        Ok(Namespace(normalize_prefix(namespace)?))
    }

    /// The normalized namespace (`""` for none).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for the empty namespace.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The stored form of a normalized key or prefix (`""` → the namespace itself).
    pub fn join(&self, key: &str) -> String {
        crate::key::join(&self.0, key)
    }

    /// The stored string every key of `prefix`'s subtree starts with (`"ns/p/"`, `"ns/"`, or
    /// `""` for the root of an empty namespace).
    pub fn subtree_start(&self, prefix: &str) -> String {
        crate::key::subtree_start(&self.join(prefix))
    }

    /// The user key of a stored key, `None` when it is outside the namespace or is not a
    /// valid normalized kv key (written by another program): such keys are invisible.
    pub fn user_key(&self, stored: &str) -> Option<String> {
        let k = crate::key::strip_namespace(&self.0, stored)?;
        match normalize_key(k) {
            Ok(n) if n == k => Some(n),
            _ => None,
        }
    }
}

impl std::fmt::Display for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::Namespace;

    #[test]
    fn join_strip_and_subtree() {
        let ns = Namespace::new("/app/").unwrap();
        assert_eq!(ns.as_str(), "app");
        assert_eq!(ns.join("a/b"), "app/a/b");
        assert_eq!(ns.join(""), "app");
        assert_eq!(ns.subtree_start(""), "app/");
        assert_eq!(ns.subtree_start("a"), "app/a/");
        assert_eq!(ns.user_key("app/a/b").as_deref(), Some("a/b"));
        assert_eq!(ns.user_key("apple/a"), None);
        assert_eq!(ns.user_key("app//x"), None);
        let root = Namespace::default();
        assert_eq!(root.join("k"), "k");
        assert_eq!(root.subtree_start(""), "");
        assert_eq!(root.user_key("/registry/x"), None);
        assert!(Namespace::new("a/../b").is_err());
    }
}
