//! The command line: options and subcommands (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// What `kvctl` prints after every command (`--help` of each command shows examples).
pub const AFTER_HELP: &str = "\
Exit codes: 0 success; 1 not found or compare failed (and other failed operations);
2 usage or configuration error; 3 store unreachable or timed out; 4 lock lost.

Without --url (or KV_URL), kvctl uses an embedded database in $XDG_DATA_HOME/kvctl
(default ~/.local/share/kvctl), so it works with no server.

Examples:
  kvctl put app/port 8080
  kvctl --url etcd://127.0.0.1:2379/myapp get app/port
  kvctl ls app --output json | jq .
  kvctl lock jobs/nightly -- ./backup.sh";

/// A command-line client for any kv store.
#[derive(Debug, Parser)]
#[command(name = "kvctl", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    /// Store URL: sled:///path, etcd://h:2379/ns, zk://h:2181/chroot, consul://h:8500/prefix.
    #[arg(long, env = "KV_URL", global = true)]
    pub url: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Text, global = true)]
    pub output: Output,
    /// Write values as raw bytes (no key, no version, no quoting).
    #[arg(long, global = true)]
    pub raw: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (values as UTF-8 `value`, or `value_base64` when binary).
    Json,
}

/// Where a value comes from.
#[derive(Debug, Args)]
pub struct ValueSource {
    /// The value; `-` reads it from standard input.
    pub value: Option<String>,
    /// Read the value from this file instead.
    #[arg(long, conflicts_with = "value")]
    pub file: Option<PathBuf>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a key's value.
    #[command(
        after_help = "Example: kvctl get app/port\n         kvctl get blob --raw > blob.bin"
    )]
    Get {
        /// The key.
        key: String,
    },
    /// Write a key.
    #[command(
        after_help = "Examples:\n  kvctl put app/port 8080\n  kvctl put session/x token --ttl 30s\n  kvctl put app/port 8081 --if-version 42\n  kvctl put app/init done --create\n  kvctl put blob --file blob.bin\n  echo hello | kvctl put greeting -"
    )]
    Put {
        /// The key.
        key: String,
        #[command(flatten)]
        source: ValueSource,
        /// Expire the key after this long (e.g. 30s, 5m).
        #[arg(long)]
        ttl: Option<String>,
        /// Only create: fail (exit 1) if the key exists.
        #[arg(long, conflicts_with = "if_version")]
        create: bool,
        /// Only overwrite this version: fail (exit 1) if the key changed.
        #[arg(long)]
        if_version: Option<u64>,
    },
    /// Delete a key.
    #[command(after_help = "Example: kvctl delete app/port --if-version 42")]
    Delete {
        /// The key.
        key: String,
        /// Only delete this version: fail (exit 1) if the key changed.
        #[arg(long)]
        if_version: Option<u64>,
    },
    /// List the keys under a prefix (the whole subtree, the prefix itself excluded).
    #[command(after_help = "Example: kvctl ls app --keys-only")]
    Ls {
        /// The prefix (default: everything).
        prefix: Option<String>,
        /// Print keys only.
        #[arg(long)]
        keys_only: bool,
    },
    /// Delete a whole subtree.
    #[command(after_help = "Example: kvctl rm -r app/cache")]
    Rm {
        /// Required: remove recursively.
        #[arg(short = 'r', long = "recursive", required = true)]
        recursive: bool,
        /// The prefix.
        prefix: String,
    },
    /// Stream a key's changes (or a subtree's, with -r) until Ctrl-C.
    #[command(
        after_help = "Examples:\n  kvctl watch app/port\n  kvctl watch -r app --output json"
    )]
    Watch {
        /// Watch the subtree under the key.
        #[arg(short = 'r', long = "recursive")]
        recursive: bool,
        /// The key or prefix.
        key: String,
    },
    /// Stream a subtree's typed changes (put / delete / resync, each with its cursor) until
    /// Ctrl-C; `--from CURSOR` resumes after a cursor printed earlier.
    #[command(
        after_help = "Examples:\n  kvctl events app\n  kvctl events app --from 1234 --output json"
    )]
    Events {
        /// The prefix.
        prefix: String,
        /// Resume after this cursor (from an earlier run's output).
        #[arg(long)]
        from: Option<kv::Cursor>,
    },
    /// Hold a lock while a command runs; exit with its code (4 if the lock was lost).
    #[command(
        after_help = "Example: kvctl lock jobs/nightly --value host-1 -- ./backup.sh --full\n\nThe command is killed (SIGTERM, then SIGKILL after 5 s) if the lock is lost."
    )]
    Lock {
        /// The lock key.
        key: String,
        /// Value stored at the lock key while held (others can read it).
        #[arg(long, default_value = "")]
        value: String,
        /// Lock TTL (e.g. 15s): how long the lock outlives a dead holder.
        #[arg(long)]
        ttl: Option<String>,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Campaign for leadership of KEY as NAME; hold it until Ctrl-C (exit 4 if lost).
    #[command(
        after_help = "Example: kvctl elect scheduler/leader node-1 --ttl 15s\n\nPrints the term (the fencing token) once elected; Ctrl-C resigns."
    )]
    Elect {
        /// The election key.
        key: String,
        /// This candidate's name (stored at the key while it leads).
        name: String,
        /// How long the office outlives a crashed leader (default 10 s, or the backend's minimum).
        #[arg(long)]
        ttl: Option<String>,
    },
    /// Print the current leader of an election (exit 1 if none).
    #[command(
        after_help = "Examples:\n  kvctl leader scheduler/leader\n  kvctl leader scheduler/leader --watch --output json"
    )]
    Leader {
        /// The election key.
        key: String,
        /// Keep printing every change of leader until Ctrl-C.
        #[arg(long)]
        watch: bool,
    },
    /// Run a JSON transaction read from standard input.
    #[command(after_help = TXN_HELP)]
    Txn,
    /// Print what this store supports.
    Capabilities,
    /// A guided tour of the API on the embedded store (or on --url).
    Demo,
    /// Print a shell completion script.
    #[command(after_help = "Example: kvctl completions bash > /etc/bash_completion.d/kvctl")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// The transaction format, shown by `kvctl txn --help`.
pub const TXN_HELP: &str = r#"Input (one JSON object):
  {"compare": [{"key": "a", "version": 42}, {"key": "b", "absent": true}, {"key": "c", "present": true}],
   "ops":     [{"put": "a", "value": "1", "ttl": "30s"}, {"delete": "b"}, {"get": "c"}]}
All compares must hold, then every op applies, all or nothing; a failed compare exits 1.
Example: echo '{"ops":[{"put":"x","value":"1"},{"get":"y"}]}' | kvctl txn --output json"#;
