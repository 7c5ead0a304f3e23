//! The data commands: get, put, delete, ls, rm, watch, capabilities.

use std::io::Read;
use std::sync::Arc;

use futures::StreamExt;
use kv::{Error, PutOptions, Result, Store};
use serde_json::json;

use crate::cli::ValueSource;
use crate::output::Printer;

/// The store every command runs against.
pub type Handle = Arc<dyn Store>;

/// Reads the value of `put`: the argument, standard input for `-`, or `--file`.
pub fn read_value(source: &ValueSource) -> Result<Vec<u8>> {
    match (&source.value, &source.file) {
        (_, Some(path)) => std::fs::read(path)
            .map_err(|e| Error::invalid_argument(format!("cannot read {}: {e}", path.display()))),
        (Some(v), None) if v == "-" => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| Error::invalid_argument(format!("cannot read standard input: {e}")))?;
            Ok(buf)
        }
        (Some(v), None) => Ok(v.clone().into_bytes()),
        (None, None) => Err(Error::invalid_argument(
            "put needs a value: an argument, `-` for standard input, or --file PATH",
        )),
    }
}

/// Parses a `--ttl` duration such as `30s`.
pub fn parse_ttl(ttl: Option<&str>) -> Result<Option<std::time::Duration>> {
    ttl.map(kv::parse_duration).transpose()
}

/// `get KEY`.
pub async fn get(store: &Handle, out: Printer, key: &str) -> Result<()> {
    out.pair(&store.get(key).await?);
    Ok(())
}

/// `put KEY VALUE [--ttl] [--create | --if-version N]`.
pub async fn put(
    store: &Handle,
    out: Printer,
    key: &str,
    value: Vec<u8>,
    ttl: Option<&str>,
    create: bool,
    if_version: Option<u64>,
) -> Result<()> {
    let options = PutOptions {
        ttl: parse_ttl(ttl)?,
    };
    let pair = if create {
        store.atomic_put(key, &value, None, options).await?
    } else if let Some(version) = if_version {
        let previous = kv::KvPair::new(key, Vec::new(), version);
        store
            .atomic_put(key, &value, Some(&previous), options)
            .await?
    } else {
        store.put(key, &value, options).await?
    };
    out.pair(&pair);
    Ok(())
}

/// `delete KEY [--if-version N]`.
pub async fn delete(
    store: &Handle,
    out: Printer,
    key: &str,
    if_version: Option<u64>,
) -> Result<()> {
    match if_version {
        Some(version) => {
            let previous = kv::KvPair::new(key, Vec::new(), version);
            store.atomic_delete(key, &previous).await?
        }
        None => store.delete(key).await?,
    }
    out.done(&format!("deleted {key}"), json!({ "deleted": key }));
    Ok(())
}

/// `ls [PREFIX] [--keys-only]`.
pub async fn ls(store: &Handle, out: Printer, prefix: &str, keys_only: bool) -> Result<()> {
    for p in store.list(prefix).await? {
        if keys_only {
            out.key(&p.key);
        } else {
            out.pair(&p);
        }
    }
    Ok(())
}

/// `rm -r PREFIX`.
pub async fn rm(store: &Handle, out: Printer, prefix: &str) -> Result<()> {
    store.delete_tree(prefix).await?;
    out.done(
        &format!("deleted everything under {prefix}"),
        json!({ "deleted_tree": prefix }),
    );
    Ok(())
}

/// `watch [-r] KEY`: prints every item until Ctrl-C (exit 0) or the stream ends (an error).
pub async fn watch(store: &Handle, out: Printer, key: &str, recursive: bool) -> Result<()> {
    let interrupted = crate::interrupt::ctrl_c();
    tokio::pin!(interrupted);
    if recursive {
        let mut stream = store.watch_tree(key).await?;
        loop {
            tokio::select! {
                _ = &mut interrupted => return Ok(()),
                item = stream.next() => match item {
                    Some(Ok(pairs)) => out.snapshot(key, &pairs),
                    Some(Err(e)) => eprintln!("kvctl: watch: {e} (the watch resumes by itself)"),
                    None => return Err(Error::Closed),
                },
            }
        }
    }
    let mut stream = store.watch(key).await?;
    loop {
        tokio::select! {
            _ = &mut interrupted => return Ok(()),
            item = stream.next() => match item {
                Some(Ok(Some(p))) => out.pair(&p),
                Some(Ok(None)) => out.absent(key),
                Some(Err(e)) => eprintln!("kvctl: watch: {e} (the watch resumes by itself)"),
                None => return Err(Error::Closed),
            },
        }
    }
}

/// `events`: the typed change stream of a subtree until Ctrl-C.
pub async fn events(
    store: &Handle,
    out: Printer,
    prefix: &str,
    from: Option<kv::Cursor>,
) -> Result<()> {
    let interrupted = crate::interrupt::ctrl_c();
    tokio::pin!(interrupted);
    let mut stream = store.watch_events(prefix, from).await?;
    loop {
        tokio::select! {
            _ = &mut interrupted => return Ok(()),
            item = stream.next() => match item {
                Some(Ok(ev)) => out.event(prefix, &ev),
                Some(Err(e)) => eprintln!("kvctl: events: {e} (the stream resumes by itself)"),
                None => return Err(Error::Closed),
            },
        }
    }
}

/// `capabilities`.
pub fn capabilities(store: &Handle, out: Printer) {
    let c = store.capabilities();
    let text = format!(
        "backend {}\nwatch {}\nwatch_tree {}\nwatch_every_change {}\nlock {}\nttl {}\ntxn {}\n\
         max_value_size {}\nmax_txn_ops {}\nmin_ttl {:?}",
        store.backend(),
        c.watch,
        c.watch_tree,
        c.watch_every_change,
        c.lock,
        c.ttl,
        c.txn,
        c.max_value_size,
        c.max_txn_ops,
        c.min_ttl
    );
    out.value(
        text,
        json!({
            "backend": store.backend(),
            "watch": c.watch,
            "watch_tree": c.watch_tree,
            "watch_every_change": c.watch_every_change,
            "lock": c.lock,
            "ttl": c.ttl,
            "txn": c.txn,
            "max_value_size": c.max_value_size,
            "max_txn_ops": c.max_txn_ops,
            "min_ttl_ms": c.min_ttl.as_millis() as u64,
        }),
    );
}
