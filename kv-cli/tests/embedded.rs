//! End-to-end tests of the `kvctl` binary on the embedded store (no server).

mod common;

use common::{kvctl, run, run_with_stdin, wait_bounded};

fn db(tag: &str) -> (tempfile::TempDir, String) {
    let dir = kv_testkit::temp_dir(&format!("kvctl-{tag}"));
    let url = format!("sled://{}", dir.path().join("db").display());
    (dir, url)
}

#[test]
fn put_get_ls_delete_in_text_and_json() {
    let (_d, url) = db("basic");
    let r = run(&url, &["put", "app/port", "8080"]).expect(0);
    assert!(
        r.stdout.starts_with("app/port = \"8080\" (version "),
        "{}",
        r.stdout
    );
    run(&url, &["put", "app/host", "db1"]).expect(0);
    run(&url, &["put", "other", "x"]).expect(0);

    let j = run(&url, &["get", "/app/port/", "--output", "json"])
        .expect(0)
        .json_lines();
    assert_eq!(j.len(), 1);
    assert_eq!(j[0]["key"], "app/port");
    assert_eq!(j[0]["value"], "8080");
    let version = j[0]["version"].as_u64().unwrap();
    assert!(version > 0);

    let listed = run(&url, &["ls", "app", "--output", "json"])
        .expect(0)
        .json_lines();
    let keys: Vec<_> = listed.iter().map(|v| v["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["app/host", "app/port"]);
    let keys_only = run(&url, &["ls", "--keys-only"]).expect(0);
    assert_eq!(keys_only.stdout, "app/host\napp/port\nother\n");

    // Compare-and-swap: a stale version is exit 1 and changes nothing.
    let stale_version = (version + 1).to_string();
    let stale = run(
        &url,
        &["put", "app/port", "9", "--if-version", &stale_version],
    )
    .expect(1);
    assert!(stale.stderr.contains("app/port"), "{}", stale.stderr);
    let v = version.to_string();
    run(&url, &["put", "app/port", "9090", "--if-version", &v]).expect(0);
    assert_eq!(
        run(&url, &["get", "app/port", "--raw"]).expect(0).stdout,
        "9090"
    );
    let exists = run(&url, &["put", "app/port", "1", "--create"]).expect(1);
    assert!(exists.stderr.contains("exists"), "{}", exists.stderr);
    run(&url, &["put", "app/new", "1", "--create"]).expect(0);

    run(&url, &["delete", "other"]).expect(0);
    let missing = run(&url, &["get", "other"]).expect(1);
    assert_eq!(
        missing.stderr.lines().count(),
        1,
        "one line: {}",
        missing.stderr
    );
    assert!(missing.stderr.contains("not found") && missing.stderr.contains("other"));
    run(&url, &["delete", "other"]).expect(1);
    run(&url, &["rm", "-r", "app"]).expect(0);
    assert_eq!(run(&url, &["ls"]).expect(0).stdout, "");
}

#[test]
fn values_from_stdin_files_and_binary_round_trips() {
    let (d, url) = db("values");
    run_with_stdin(&url, &["put", "from/stdin", "-"], b"piped\n").expect(0);
    assert_eq!(
        run(&url, &["get", "from/stdin", "--raw"]).expect(0).stdout,
        "piped\n"
    );
    let bin: Vec<u8> = (0..=255u8).collect();
    let file = d.path().join("blob.bin");
    std::fs::write(&file, &bin).unwrap();
    run(&url, &["put", "blob", "--file", file.to_str().unwrap()]).expect(0);
    let out = wait_bounded(
        kvctl(&url)
            .args(["get", "blob", "--raw"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    assert_eq!(out.stdout, bin, "--raw writes the bytes as they are");
    let j = run(&url, &["get", "blob", "--output", "json"])
        .expect(0)
        .json_lines();
    assert!(j[0].get("value").is_none());
    assert_eq!(j[0]["value_base64"].as_str().unwrap().len(), 344);
    let text = run(&url, &["get", "blob"]).expect(0);
    assert!(
        text.stdout.contains("<256 bytes, binary>"),
        "{}",
        text.stdout
    );
}

#[test]
fn ttl_txn_lock_and_capabilities() {
    let (_d, url) = db("more");
    run(&url, &["put", "session", "t", "--ttl", "300ms"]).expect(0);
    let start = std::time::Instant::now();
    while run(&url, &["get", "session"]).code == 0 {
        assert!(start.elapsed() < common::DEADLINE, "TTL key never expired");
    }
    run(&url, &["get", "session"]).expect(1);

    let txn = r#"{"compare":[{"key":"acct/a","absent":true}],
                  "ops":[{"put":"acct/a","value":"70"},{"put":"acct/b","value":"30"},{"get":"acct/c"}]}"#;
    let r = run_with_stdin(&url, &["txn", "--output", "json"], txn.as_bytes()).expect(0);
    let lines = r.json_lines();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["put"]["key"], "acct/a");
    assert!(lines[2]["get"].is_null());
    // The same transaction again: its compare fails (exit 1) and nothing is applied.
    let again = run_with_stdin(&url, &["txn"], txn.as_bytes()).expect(1);
    assert!(again.stderr.contains("acct/a"), "{}", again.stderr);
    run_with_stdin(&url, &["txn"], b"{not json").expect(2);

    let r = run(
        &url,
        &[
            "lock", "jobs/x", "--value", "me", "--", "sh", "-c", "exit 7",
        ],
    );
    r.expect(7);
    run(&url, &["get", "jobs/x"]).expect(1); // released (and removed) after the command
    run(&url, &["lock", "jobs/x", "--", "/nonexistent/cmd"]).expect(2);

    let caps = run(&url, &["capabilities", "--output", "json"])
        .expect(0)
        .json_lines();
    assert_eq!(caps[0]["backend"], "sled");
    assert_eq!(caps[0]["txn"], true);
}

#[test]
fn bad_input_gives_documented_exit_codes_and_one_line_errors() {
    let (_d, url) = db("bad");
    for (args, code, needle) in [
        (vec!["get", "a//b"], 2, "empty segment"),
        (vec!["put", "k"], 2, "needs a value"),
        (vec!["put", "k", "v", "--ttl", "soon"], 2, "soon"),
        (vec!["frobnicate"], 2, "unrecognized subcommand"),
        (vec!["get", "k", "--bogus"], 2, "--bogus"),
        (vec!["--url", "nope://x", "get", "k"], 2, "not available"),
        (vec!["--url", "not a url", "get", "k"], 2, "not a store URL"),
        (vec!["--url", "sled:///x?bogus=1", "get", "k"], 2, "bogus"),
        (
            vec!["--url", "etcd://127.0.0.1:1/x?timeout=1s", "get", "k"],
            3,
            "127.0.0.1:1",
        ),
    ] {
        let r = run(&url, &args);
        assert_eq!(r.code, code, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(needle), "{args:?}: {}", r.stderr);
        assert!(!r.stderr.contains("panicked"), "{args:?}: {}", r.stderr);
    }
}

#[test]
fn default_database_help_completions_and_demo() {
    let home = kv_testkit::temp_dir("kvctl-home");
    let with_home = |args: &[&str]| {
        let mut c = kvctl("");
        c.env_remove("KV_URL")
            .env("XDG_DATA_HOME", home.path())
            .args(args)
            .stdout(std::process::Stdio::piped());
        wait_bounded(c.spawn().unwrap())
    };
    assert!(with_home(&["put", "k", "v"]).status.success());
    assert!(
        home.path().join("kvctl").join("db").exists(),
        "default database location"
    );
    assert_eq!(with_home(&["get", "k", "--raw"]).stdout, b"v");

    let help = run("", &["put", "--help"]).expect(0);
    assert!(help.stdout.contains("Examples:") && help.stdout.contains("--if-version"));
    let top = run("", &["--help"]).expect(0);
    assert!(top.stdout.contains("Exit codes"), "{}", top.stdout);
    for shell in ["bash", "zsh", "fish"] {
        let c = run("", &["completions", shell]).expect(0);
        assert!(c.stdout.contains("kvctl"), "{shell}");
    }
    let demo = run("", &["demo"]).expect(0);
    assert!(
        demo.stdout.contains("## compare-and-swap") && demo.stdout.trim_end().ends_with("done.")
    );
}
