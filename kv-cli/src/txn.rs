//! `txn`: a JSON transaction on standard input (format in `kvctl txn --help`).

use std::io::Read;

use kv::{Error, PutOptions, Result, Txn, TxnResult};
use serde_json::{json, Value};

use crate::commands::{parse_ttl, Handle};
use crate::output::{pair_json, show, Printer};

fn bad(what: impl std::fmt::Display) -> Error {
    Error::invalid_argument(format!("txn input: {what} (see kvctl txn --help)"))
}

fn str_field<'a>(obj: &'a Value, name: &str) -> Option<&'a str> {
    obj.get(name).and_then(Value::as_str)
}

/// Builds a [`Txn`] from the JSON document `input`.
pub fn parse(input: &str) -> Result<Txn> {
    let doc: Value = serde_json::from_str(input).map_err(|e| bad(format!("not JSON: {e}")))?;
    let doc = doc
        .as_object()
        .ok_or_else(|| bad("expected a JSON object"))?;
    if let Some(k) = doc.keys().find(|k| *k != "compare" && *k != "ops") {
        return Err(bad(format!(
            "unknown field {k:?} (expected \"compare\" and \"ops\")"
        )));
    }
    let list = |name: &str| -> Result<Vec<Value>> {
        match doc.get(name) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => Ok(items.clone()),
            Some(_) => Err(bad(format!("\"{name}\" must be an array"))),
        }
    };
    let mut txn = Txn::new();
    for (i, c) in list("compare")?.iter().enumerate() {
        let key = str_field(c, "key").ok_or_else(|| bad(format!("compare {i} has no \"key\"")))?;
        txn = if let Some(v) = c.get("version") {
            let v = v
                .as_u64()
                .ok_or_else(|| bad(format!("compare {i}: \"version\" must be a number")))?;
            txn.when_version(key, v)
        } else if c.get("absent") == Some(&Value::Bool(true)) {
            txn.when_absent(key)
        } else if c.get("present") == Some(&Value::Bool(true)) {
            txn.when_present(key)
        } else {
            return Err(bad(format!(
                "compare {i} needs \"version\": N, \"absent\": true or \"present\": true"
            )));
        };
    }
    for (i, op) in list("ops")?.iter().enumerate() {
        txn = if let Some(key) = str_field(op, "put") {
            let value = str_field(op, "value")
                .ok_or_else(|| bad(format!("op {i}: a put needs a string \"value\"")))?;
            match parse_ttl(str_field(op, "ttl"))? {
                Some(ttl) => txn.put_with(key, value, PutOptions::with_ttl(ttl)),
                None => txn.put(key, value),
            }
        } else if let Some(key) = str_field(op, "delete") {
            txn.delete(key)
        } else if let Some(key) = str_field(op, "get") {
            txn.get(key)
        } else {
            return Err(bad(format!(
                "op {i} needs \"put\": KEY (with \"value\"), \"delete\": KEY or \"get\": KEY"
            )));
        };
    }
    Ok(txn)
}

/// Reads the transaction from standard input, runs it and prints one line per op.
pub async fn run(store: &Handle, out: Printer) -> Result<()> {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .map_err(|e| bad(format!("cannot read standard input: {e}")))?;
    for result in store.txn(parse(&input)?).await? {
        match result {
            TxnResult::Put(p) => out.value(
                format!("put {} = {} (version {})", p.key, show(&p.value), p.version),
                json!({ "put": pair_json(&p) }),
            ),
            TxnResult::Get(Some(p)) => out.value(
                format!("get {} = {} (version {})", p.key, show(&p.value), p.version),
                json!({ "get": pair_json(&p) }),
            ),
            TxnResult::Get(None) => out.value("get: not found".into(), json!({ "get": null })),
            TxnResult::Delete => out.value("delete: done".into(), json!({ "delete": true })),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form_and_rejects_bad_input() {
        let t = parse(
            r#"{"compare":[{"key":"a","version":4},{"key":"b","absent":true},{"key":"c","present":true}],
                "ops":[{"put":"a","value":"1","ttl":"30s"},{"delete":"b"},{"get":"c"}]}"#,
        )
        .unwrap();
        assert_eq!(t.compares.len(), 3);
        assert_eq!(t.ops.len(), 3);
        for (input, needle) in [
            ("nope", "not JSON"),
            ("[]", "JSON object"),
            (r#"{"ops":[{"put":"a"}]}"#, "needs a string \"value\""),
            (r#"{"ops":[{"frob":"a"}]}"#, "op 0 needs"),
            (r#"{"compare":[{"key":"a"}]}"#, "compare 0 needs"),
            (r#"{"compare":[{"version":1}]}"#, "no \"key\""),
            (r#"{"extra":1}"#, "unknown field"),
            (r#"{"ops":[{"put":"a","value":"1","ttl":"soon"}]}"#, "soon"),
        ] {
            let e = parse(input).unwrap_err().to_string();
            assert!(e.contains(needle), "{input}: {e}");
        }
    }
}
