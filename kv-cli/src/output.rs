//! Printing pairs and events as text, JSON lines or raw bytes.

use std::io::Write;

use base64::Engine;
use kv::{KvPair, WatchEvent};
use serde_json::{json, Map, Value};

use crate::cli::Output;

/// How results are printed (from `--output` and `--raw`).
#[derive(Clone, Copy, Debug)]
pub struct Printer {
    /// Text or JSON lines.
    pub output: Output,
    /// Values as raw bytes.
    pub raw: bool,
}

/// A value for people: the UTF-8 text quoted, or its size when binary.
pub fn show(value: &[u8]) -> String {
    match std::str::from_utf8(value) {
        Ok(s) => format!("{s:?}"),
        Err(_) => format!("<{} bytes, binary>", value.len()),
    }
}

/// The JSON object of a pair: `key`, `value` (UTF-8) or `value_base64`, `version`.
pub fn pair_json(p: &KvPair) -> Value {
    let mut m = Map::new();
    m.insert("key".into(), json!(p.key));
    match std::str::from_utf8(&p.value) {
        Ok(s) => m.insert("value".into(), json!(s)),
        Err(_) => m.insert(
            "value_base64".into(),
            json!(base64::engine::general_purpose::STANDARD.encode(&p.value)),
        ),
    };
    m.insert("version".into(), json!(p.version));
    Value::Object(m)
}

impl Printer {
    /// Prints one line (text) or one JSON value (json) and flushes, so pipes see it at once.
    fn emit(&self, text: String, json: Value) {
        let mut out = std::io::stdout().lock();
        let _ = match self.output {
            Output::Text => writeln!(out, "{text}"),
            Output::Json => writeln!(out, "{json}"),
        };
        let _ = out.flush();
    }

    /// A pair: `key = "value" (version N)`; with `--raw`, the value bytes alone.
    pub fn pair(&self, p: &KvPair) {
        if self.raw {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&p.value);
            let _ = out.flush();
            return;
        }
        self.emit(
            format!("{} = {} (version {})", p.key, show(&p.value), p.version),
            pair_json(p),
        );
    }

    /// A key only.
    pub fn key(&self, key: &str) {
        self.emit(key.to_string(), json!({ "key": key }));
    }

    /// A key that is absent (a watch item, or a delete).
    pub fn absent(&self, key: &str) {
        self.emit(
            format!("{key}: absent"),
            json!({ "key": key, "deleted": true }),
        );
    }

    /// A subtree snapshot of a recursive watch.
    pub fn snapshot(&self, prefix: &str, pairs: &[KvPair]) {
        if self.output == Output::Json {
            let items: Vec<Value> = pairs.iter().map(pair_json).collect();
            self.emit(String::new(), json!({ "prefix": prefix, "pairs": items }));
            return;
        }
        self.emit(
            format!("--- {} keys under {prefix:?}", pairs.len()),
            Value::Null,
        );
        for p in pairs {
            self.pair(p);
        }
    }

    /// A typed event: `put key = "v" (version N) @cursor`, `delete key @cursor`, or a resync
    /// header followed by the pairs; JSON: one object with `event`, `cursor` and the pair(s).
    pub fn event(&self, prefix: &str, ev: &WatchEvent) {
        let cursor = ev.cursor().get();
        match ev {
            WatchEvent::Put { pair, .. } => {
                let mut j = pair_json(pair);
                j["event"] = json!("put");
                j["cursor"] = json!(cursor);
                let text = format!(
                    "put {} = {} (version {}) @{cursor}",
                    pair.key,
                    show(&pair.value),
                    pair.version
                );
                self.emit(text, j);
            }
            WatchEvent::Delete { key, version, .. } => self.emit(
                format!("delete {key} @{cursor}"),
                json!({ "event": "delete", "key": key, "version": version, "cursor": cursor }),
            ),
            WatchEvent::Resync { pairs, .. } => {
                let items: Vec<Value> = pairs.iter().map(pair_json).collect();
                if self.output == Output::Json {
                    let j = json!({ "event": "resync", "prefix": prefix, "pairs": items, "cursor": cursor });
                    self.emit(String::new(), j);
                    return;
                }
                self.emit(
                    format!(
                        "--- resync: {} keys under {prefix:?} @{cursor}",
                        pairs.len()
                    ),
                    Value::Null,
                );
                for p in pairs {
                    self.pair(p);
                }
            }
            _ => self.emit(
                format!("{ev:?}"),
                json!({ "event": "other", "cursor": cursor }),
            ),
        }
    }

    /// A status message: text as is, JSON as `{"ok": message, ...fields}`.
    pub fn done(&self, message: &str, fields: Value) {
        let mut obj = match fields {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        obj.insert("ok".into(), json!(message));
        self.emit(message.to_string(), Value::Object(obj));
    }

    /// Any JSON value (text: pretty-printed).
    pub fn value(&self, text: String, json: Value) {
        self.emit(text, json);
    }
}
