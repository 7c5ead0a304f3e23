//! Reading `strace -f -y` logs: which calls ran, and which returned 0.

/// Completed `fdatasync` calls on sled's log file `db` in `lines`. A call interrupted by
/// another thread's syscall is split by strace into `fdatasync(fd</path> <unfinished ...>` and
/// a later `<... fdatasync resumed>) = 0` line of the same pid: both forms count once.
pub fn log_fdatasyncs(lines: &[String]) -> usize {
    let mut pending = std::collections::HashSet::new();
    let mut n = 0;
    for l in lines {
        if !is_call(l, "fdatasync") {
            continue;
        }
        let pid = l.split_whitespace().next().unwrap_or_default().to_string();
        if l.contains("<unfinished ...>") {
            if l.contains("/db>") {
                pending.insert(pid);
            }
        } else if l.contains("resumed>") {
            if pending.remove(&pid) && returned_zero(l) {
                n += 1;
            }
        } else if l.contains("/db>") && returned_zero(l) {
            n += 1;
        }
    }
    n
}

/// True if strace line `l` shows a call that returned 0 (`) = 0`, where strace pads the
/// space before `=` when it aligns the results of resumed calls).
pub fn returned_zero(l: &str) -> bool {
    match l.rsplit_once('=') {
        Some((before, after)) => after.trim() == "0" && before.trim_end().ends_with(')'),
        None => false,
    }
}

/// True if strace line `l` is (the start or the whole of) a call of `name`.
pub fn is_call(l: &str, name: &str) -> bool {
    let body = l.split_once(' ').map(|(_, b)| b.trim_start()).unwrap_or(l);
    body.starts_with(&format!("{name}(")) || body.starts_with(&format!("<... {name} resumed>"))
}

/// The strace parsing on the interleaving that once made the check below fail spuriously: the
/// flusher's fdatasync interrupted by another thread's fsync, its result padded.
#[test]
fn strace_parsing_handles_unfinished_and_padded_results() {
    let trace = [
        "990   write(1<pipe:[1]>, \"begin 0\\n\", 8) = 8",
        "994   fsync(9</d/db> <unfinished ...>",
        "997   fdatasync(11</d/db> <unfinished ...>",
        "994   <... fsync resumed>)              = 0",
        "997   <... fdatasync resumed>)          = 0",
        "997   fdatasync(11</d/db>) = 0",
        "997   fdatasync(11</d/db>) = -1 EIO (Input/output error)",
        "990   write(1<pipe:[1]>, \"ack 0\\n\", 6) = 6",
    ]
    .map(String::from);
    assert_eq!(log_fdatasyncs(&trace), 2);
    assert!(returned_zero(&trace[4]) && returned_zero(&trace[5]));
    assert!(!returned_zero(&trace[6]) && !returned_zero(&trace[0]));
}
