//! Driver descriptors: what the `kv` facade needs to open a driver by URL.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::error::Result;
use crate::raw::{Checked, Connect};
use crate::store::Store;

/// The future [`DriverDescriptor::open`] returns.
pub type OpenFuture<'a> = Pin<Box<dyn Future<Output = Result<Arc<dyn Store>>> + Send + 'a>>;

/// Where a driver's URL carries the namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NamespaceIn {
    /// The URL path (`etcd://host/app`): network drivers.
    Path,
    /// The `namespace=` option, because the path is a file or a name (`sled:///data?namespace=app`).
    Query,
}

/// One driver, as `kv::open` sees it: each driver crate exports one as `DRIVER`.
#[derive(Clone, Copy, Debug)]
pub struct DriverDescriptor {
    /// Backend name, as [`Store::backend`] reports it.
    pub name: &'static str,
    /// URL schemes it opens (`["zk", "zookeeper"]`).
    pub schemes: &'static [&'static str],
    /// Port used when a host has none.
    pub default_port: Option<u16>,
    /// Where its URL carries the namespace.
    pub namespace_in: NamespaceIn,
    /// Opens a store from a URL of one of `schemes`.
    pub open: fn(&str) -> OpenFuture<'_>,
}

/// The `open` function of a descriptor for driver `D`: parse, connect, wrap in [`Checked`].
pub fn open<D: Connect>(url: &str) -> OpenFuture<'_> {
    Box::pin(async move { Ok(Arc::new(Checked::<D>::from_url(url).await?) as Arc<dyn Store>) })
}

impl DriverDescriptor {
    /// True when this driver opens URLs with `scheme`.
    pub fn handles(&self, scheme: &str) -> bool {
        self.schemes.contains(&scheme)
    }

    /// `url` with `namespace` appended the way this driver's URLs carry it (path segment or
    /// `namespace=` option). `namespace` must be a normalized prefix.
    pub fn with_namespace(&self, url: &str, namespace: &str) -> String {
        if namespace.is_empty() {
            return url.to_string();
        }
        let (base, query) = match url.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (url, None),
        };
        match self.namespace_in {
            NamespaceIn::Path => {
                let sep = if base.ends_with('/') { "" } else { "/" };
                let base = format!("{base}{sep}{namespace}");
                match query {
                    Some(q) => format!("{base}?{q}"),
                    None => base,
                }
            }
            NamespaceIn::Query => match query {
                Some(q) => format!("{base}?{q}&namespace={namespace}"),
                None => format!("{base}?namespace={namespace}"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(namespace_in: NamespaceIn) -> DriverDescriptor {
        DriverDescriptor {
            name: "t",
            schemes: &["t", "test"],
            default_port: None,
            namespace_in,
            open: |_| Box::pin(async { Err(crate::Error::config("test")) }),
        }
    }

    #[test]
    fn namespaced_urls() {
        let p = d(NamespaceIn::Path);
        assert!(p.handles("test") && !p.handles("x"));
        assert_eq!(p.with_namespace("t://h:1", "a/b"), "t://h:1/a/b");
        assert_eq!(p.with_namespace("t://h:1/", "a"), "t://h:1/a");
        assert_eq!(
            p.with_namespace("t://h:1/app?timeout=1s", "a"),
            "t://h:1/app/a?timeout=1s"
        );
        assert_eq!(p.with_namespace("t://h:1?x=1", "a"), "t://h:1/a?x=1");
        assert_eq!(p.with_namespace("t://h:1", ""), "t://h:1");
        let q = d(NamespaceIn::Query);
        assert_eq!(q.with_namespace("t:///data", "a"), "t:///data?namespace=a");
        assert_eq!(
            q.with_namespace("t:///data?flush=false", "a"),
            "t:///data?flush=false&namespace=a"
        );
    }
}
