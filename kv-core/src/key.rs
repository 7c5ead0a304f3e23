//! Key rules: the one place that decides what a key is.
//!
//! A key is a `/`-separated path of one or more segments. [`normalize_key`] turns a caller's
//! string into the canonical form every driver stores:
//!
//! - leading and trailing `/` are removed: `"/a/b/"`, `"a/b/"` and `"a/b"` are the same key;
//! - it must then be non-empty and at most [`MAX_KEY_LEN`] bytes;
//! - no empty segment (`"a//b"`), no `.` or `..` segment;
//! - no control character (U+0000–U+001F, U+007F–U+009F) anywhere;
//! - no segment that starts or ends with white space (some servers trim or reject them).
//!
//! A *prefix* (for `list`, `watch_tree`, `delete_tree`) follows the same rules, except that the
//! empty prefix (`""` or `"/"`) is allowed and means the whole store. The subtree of prefix `p`
//! is every key that starts with `p/`; `p` itself is not part of it.

use crate::error::{Error, Result};

/// Longest accepted key, in bytes, after normalization.
pub const MAX_KEY_LEN: usize = 1024;

fn invalid(key: &str, reason: impl Into<String>) -> Error {
    Error::InvalidKey {
        key: key.to_string(),
        reason: reason.into(),
    }
}

/// True when `path` is plainly valid: at most [`MAX_KEY_LEN`] bytes, all printable ASCII, and
/// every segment non-empty, not `.`/`..`, and without a space at either end. One pass over the
/// bytes; `false` leaves the verdict (and the error message) to [`check_path`]'s full rules.
fn plainly_valid(path: &str) -> bool {
    let b = path.as_bytes();
    if b.len() > MAX_KEY_LEN {
        return false;
    }
    let segment_ok = |s: &[u8]| {
        !s.is_empty() && s != b"." && s != b".." && s[0] != b' ' && s[s.len() - 1] != b' '
    };
    let mut start = 0;
    for (i, &c) in b.iter().enumerate() {
        if c == b'/' {
            if !segment_ok(&b[start..i]) {
                return false;
            }
            start = i + 1;
        } else if !(0x20..0x7f).contains(&c) {
            return false;
        }
    }
    segment_ok(&b[start..])
}

fn check_path(original: &str, path: &str) -> Result<()> {
    if plainly_valid(path) {
        return Ok(());
    }
    full_rules(original, path)
}

/// Every key rule, with the error that names the first one `path` breaks.
fn full_rules(original: &str, path: &str) -> Result<()> {
    if path.len() > MAX_KEY_LEN {
        return Err(invalid(
            original,
            format!(
                "it is {} bytes long, the limit is {MAX_KEY_LEN}",
                path.len()
            ),
        ));
    }
    if let Some(c) = path.chars().find(|c| c.is_control()) {
        return Err(invalid(
            original,
            format!("it contains the control character U+{:04X}", c as u32),
        ));
    }
    for segment in path.split('/') {
        match segment {
            "" => return Err(invalid(original, "it contains an empty segment (\"//\")")),
            "." | ".." => {
                return Err(invalid(
                    original,
                    format!("it contains a {segment:?} segment"),
                ))
            }
            s if s.starts_with(char::is_whitespace) || s.ends_with(char::is_whitespace) => {
                return Err(invalid(
                    original,
                    format!("segment {s:?} starts or ends with white space"),
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

fn trim_slashes(s: &str) -> &str {
    s.trim_matches('/')
}

/// Normalizes and validates a key; see the [module docs](self) for the rules.
///
/// ```
/// assert_eq!(kv_core::normalize_key("/app/db/").unwrap(), "app/db");
/// assert!(kv_core::normalize_key("app//db").is_err());
/// assert!(kv_core::normalize_key("/").is_err());
/// ```
pub fn normalize_key(key: &str) -> Result<String> {
    normalized_key(key).map(str::to_string)
}

/// [`normalize_key`] without the copy: the normalized key is a slice of `key`.
pub(crate) fn normalized_key(key: &str) -> Result<&str> {
    let path = trim_slashes(key);
    if path.is_empty() {
        return Err(invalid(key, "it is empty"));
    }
    check_path(key, path)?;
    Ok(path)
}

/// Normalizes and validates a prefix; `""` and `"/"` give `""`, the whole store.
///
/// ```
/// assert_eq!(kv_core::normalize_prefix("/app/").unwrap(), "app");
/// assert_eq!(kv_core::normalize_prefix("/").unwrap(), "");
/// ```
pub fn normalize_prefix(prefix: &str) -> Result<String> {
    normalized_prefix(prefix).map(str::to_string)
}

/// [`normalize_prefix`] without the copy: the normalized prefix is a slice of `prefix`.
pub(crate) fn normalized_prefix(prefix: &str) -> Result<&str> {
    let path = trim_slashes(prefix);
    if path.is_empty() {
        return Ok("");
    }
    check_path(prefix, path)?;
    Ok(path)
}

/// The string every key of `prefix`'s subtree starts with: `"p/"`, or `""` for the root.
///
/// `prefix` must already be normalized.
pub fn subtree_start(prefix: &str) -> String {
    if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    }
}

/// True when normalized `key` is inside the subtree of normalized `prefix` (not `prefix` itself).
pub fn in_subtree(prefix: &str, key: &str) -> bool {
    if prefix.is_empty() {
        return !key.is_empty();
    }
    key.len() > prefix.len() + 1 && key.starts_with(prefix) && key.as_bytes()[prefix.len()] == b'/'
}

/// Joins a driver's namespace (normalized, may be empty) and a normalized key.
pub fn join(namespace: &str, key: &str) -> String {
    match (namespace.is_empty(), key.is_empty()) {
        (true, _) => key.to_string(),
        (false, true) => namespace.to_string(),
        (false, false) => format!("{namespace}/{key}"),
    }
}

/// Strips a driver's namespace from a stored key; `None` if the key is outside it.
pub fn strip_namespace<'a>(namespace: &str, stored: &'a str) -> Option<&'a str> {
    if namespace.is_empty() {
        return Some(stored);
    }
    let rest = stored.strip_prefix(namespace)?;
    rest.strip_prefix('/')
}

/// Rejects a value larger than `max` bytes, naming both sizes.
pub fn check_value_size(key: &str, value: &[u8], max: usize, backend: &'static str) -> Result<()> {
    if value.len() > max {
        return Err(Error::ValueTooLarge {
            key: key.to_string(),
            size: value.len(),
            max,
            backend,
        });
    }
    Ok(())
}

/// Checks that a compare-and-swap's `previous` pair belongs to normalized `key`.
pub fn check_previous(key: &str, previous: &crate::KvPair) -> Result<()> {
    match normalize_key(&previous.key) {
        Ok(k) if k == key => Ok(()),
        _ => Err(Error::invalid_argument(format!(
            "the previous pair is for key {:?}, not {key:?}",
            previous.key
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-pass check never accepts what the full rules reject: every string over a small
    /// alphabet (slashes, dots, spaces, controls, non-ASCII white space) up to 5 characters.
    #[test]
    fn fast_path_agrees_with_the_full_rules() {
        let alphabet = [
            'a', '/', '.', ' ', '\u{1}', '\u{7f}', '\u{85}', '\u{a0}', 'é',
        ];
        let mut words = vec![String::new()];
        let mut checked = 0;
        for _ in 0..5 {
            let mut next = Vec::new();
            for w in &words {
                for c in alphabet {
                    let mut x = w.clone();
                    x.push(c);
                    next.push(x);
                }
            }
            for w in &next {
                if plainly_valid(w) {
                    checked += 1;
                    let slow = full_rules(w, w);
                    assert!(slow.is_ok(), "fast path accepted {w:?}: {slow:?}");
                }
            }
            words = next;
        }
        assert!(checked > 100, "only {checked} accepted strings compared");
        assert!(!plainly_valid(&"a".repeat(MAX_KEY_LEN + 1)));
        assert!(plainly_valid(&"a".repeat(MAX_KEY_LEN)));
    }

    #[test]
    fn slashes_are_trimmed() {
        for k in ["a/b", "/a/b", "a/b/", "/a/b/", "//a/b//"] {
            assert_eq!(normalize_key(k).unwrap(), "a/b", "{k}");
        }
    }

    #[test]
    fn bad_keys_name_the_reason() {
        let cases = [
            ("", "empty"),
            ("/", "empty"),
            ("a//b", "empty segment"),
            ("a/./b", "\".\""),
            ("a/../b", "\"..\""),
            ("..", "\"..\""),
            ("a\u{0}b", "U+0000"),
            ("a\nb", "U+000A"),
            ("a\u{7f}", "U+007F"),
            ("a/ b", "white space"),
            ("a/b ", "white space"),
        ];
        for (k, why) in cases {
            match normalize_key(k) {
                Err(Error::InvalidKey { key, reason }) => {
                    assert_eq!(key, k);
                    assert!(reason.contains(why), "{k:?}: {reason}");
                }
                other => panic!("{k:?} gave {other:?}"),
            }
        }
        let long = "x".repeat(MAX_KEY_LEN + 1);
        assert!(matches!(
            normalize_key(&long),
            Err(Error::InvalidKey { .. })
        ));
        assert!(normalize_key(&"x".repeat(MAX_KEY_LEN)).is_ok());
    }

    #[test]
    fn unicode_and_punctuation_are_fine() {
        assert_eq!(
            normalize_key("ünï/çødé/a b/x.y/-_:@").unwrap(),
            "ünï/çødé/a b/x.y/-_:@"
        );
    }

    #[test]
    fn prefixes() {
        assert_eq!(normalize_prefix("").unwrap(), "");
        assert_eq!(normalize_prefix("//").unwrap(), "");
        assert_eq!(normalize_prefix("/a/b/").unwrap(), "a/b");
        assert!(normalize_prefix("a//b").is_err());
        assert_eq!(subtree_start(""), "");
        assert_eq!(subtree_start("a"), "a/");
    }

    #[test]
    fn subtree_membership() {
        assert!(in_subtree("a", "a/b"));
        assert!(in_subtree("a", "a/b/c"));
        assert!(!in_subtree("a", "a"));
        assert!(!in_subtree("a", "ab"));
        assert!(!in_subtree("a", "ab/c"));
        assert!(in_subtree("", "a"));
    }

    #[test]
    fn namespaces() {
        assert_eq!(join("", "a"), "a");
        assert_eq!(join("ns", "a"), "ns/a");
        assert_eq!(join("ns", ""), "ns");
        assert_eq!(strip_namespace("ns", "ns/a"), Some("a"));
        assert_eq!(strip_namespace("ns", "nsx/a"), None);
        assert_eq!(strip_namespace("", "a"), Some("a"));
    }

    #[test]
    fn value_size() {
        assert!(check_value_size("k", &[0; 10], 10, "t").is_ok());
        match check_value_size("k", &[0; 11], 10, "t") {
            Err(Error::ValueTooLarge {
                size: 11, max: 10, ..
            }) => {}
            other => panic!("{other:?}"),
        }
    }
}
