use super::*;

fn acq(client: usize, asked: u64, granted: u64, token: u64, writes: &[u64]) -> Acquisition {
    Acquisition {
        client,
        asked,
        granted,
        token,
        accepted: writes
            .iter()
            .map(|&version| Accepted { version, token })
            .collect(),
        fenced: 0,
        failed: 0,
    }
}

fn violations(acqs: &[Acquisition]) -> Vec<String> {
    check(acqs, Tally::default()).violations
}

#[test]
fn a_clean_history_passes() {
    let h = [
        acq(0, 0, 10, 1, &[11, 12]),
        acq(1, 5, 20, 2, &[21]),
        acq(0, 25, 30, 3, &[31, 32, 33]),
    ];
    assert_eq!(violations(&h), Vec::<String>::new());
    let tally = Tally {
        not_granted: 4,
        unlock_failed: 2,
    };
    let s = check(&h, tally);
    assert_eq!(
        (s.acquisitions, s.accepted, s.not_granted, s.failed),
        (3, 6, 4, 2)
    );
}

#[test]
fn a_repeated_token_is_caught() {
    let h = [acq(0, 0, 10, 1, &[11]), acq(1, 20, 30, 1, &[31])];
    let v = violations(&h);
    assert!(v.iter().any(|m| m.contains("granted twice")), "{v:?}");
}

#[test]
fn tokens_against_real_time_are_caught() {
    // Client 0 was granted token 5 before client 1 asked; client 1 got 4.
    let h = [acq(0, 0, 10, 5, &[]), acq(1, 20, 30, 4, &[])];
    let v = violations(&h);
    assert!(v.iter().any(|m| m.contains("token order")), "{v:?}");
    // Overlapping requests may be granted in either order.
    let h = [acq(0, 0, 10, 5, &[]), acq(1, 5, 30, 4, &[])];
    assert_eq!(violations(&h), Vec::<String>::new());
}

#[test]
fn interleaved_holders_are_caught() {
    let h = [acq(0, 0, 10, 1, &[11, 13]), acq(1, 0, 10, 2, &[12])];
    let v = violations(&h);
    assert!(v.iter().any(|m| m.contains("exclusion")), "{v:?}");
}

#[test]
fn a_stale_holder_writing_after_its_successor_is_caught() {
    let h = [acq(0, 0, 10, 1, &[21]), acq(1, 12, 15, 2, &[20])];
    let v = violations(&h);
    assert!(v.iter().any(|m| m.contains("fencing")), "{v:?}");
    assert!(!v.iter().any(|m| m.contains("exclusion")), "{v:?}");
}

#[test]
fn two_writes_with_one_version_are_caught() {
    let h = [acq(0, 0, 10, 1, &[11]), acq(1, 12, 15, 2, &[11])];
    let v = violations(&h);
    assert!(v.iter().any(|m| m.contains("version 11")), "{v:?}");
}
