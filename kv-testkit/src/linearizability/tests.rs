//! Hand-written histories (ones that must pass and ones that must be rejected) and a
//! differential test against a brute-force search on random small histories.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

fn op(client: usize, input: Input, call: u64, ret: u64, output: Output) -> Operation {
    Operation {
        client,
        input,
        call,
        ret: Some(ret),
        output,
    }
}

fn unknown(client: usize, input: Input, call: u64) -> Operation {
    Operation {
        client,
        input,
        call,
        ret: None,
        output: Output::Unknown,
    }
}

fn put(c: usize, v: Value, call: u64, ret: u64) -> Operation {
    op(c, Input::Put(v), call, ret, Output::Written)
}

fn get(c: usize, seen: Option<Value>, call: u64, ret: u64) -> Operation {
    op(c, Input::Get, call, ret, Output::Read(seen))
}

fn cas(c: usize, expect: Option<Value>, new: Value, ok: bool, call: u64, ret: u64) -> Operation {
    op(
        c,
        Input::Cas { expect, new },
        call,
        ret,
        Output::Swapped(ok),
    )
}

fn ok(h: &[Operation]) -> bool {
    check(h) == Verdict::Linearizable
}

#[test]
fn sequential_histories() {
    assert!(ok(&[]));
    assert!(ok(&[
        get(0, None, 0, 1),
        put(0, 1, 2, 3),
        get(1, Some(1), 4, 5)
    ]));
    assert!(ok(&[
        put(0, 1, 0, 1),
        cas(1, Some(1), 2, true, 2, 3),
        cas(0, Some(1), 3, false, 4, 5),
        get(0, Some(2), 6, 7),
    ]));
    assert!(ok(&[
        cas(0, None, 1, true, 0, 1),
        cas(1, None, 2, false, 2, 3)
    ]));
}

#[test]
fn concurrent_reads_may_see_old_or_new() {
    // A put overlapping two reads: each may see either state, in order.
    assert!(ok(&[
        put(0, 1, 0, 10),
        get(1, None, 1, 2),
        get(2, Some(1), 3, 4)
    ]));
    assert!(ok(&[
        put(0, 1, 0, 10),
        get(1, Some(1), 1, 2),
        get(2, Some(1), 3, 4)
    ]));
    // Two overlapping puts: a later read may see either.
    assert!(ok(&[
        put(0, 1, 0, 5),
        put(1, 2, 1, 6),
        get(2, Some(1), 7, 8)
    ]));
    assert!(ok(&[
        put(0, 1, 0, 5),
        put(1, 2, 1, 6),
        get(2, Some(2), 7, 8)
    ]));
}

#[test]
fn stale_read_is_rejected() {
    // The put completed before the read began: the read must see it.
    let h = [put(0, 1, 0, 1), get(1, None, 2, 3)];
    assert_eq!(
        check(&h),
        Verdict::Violation {
            op: 1,
            linearized: 1
        }
    );
    // A read that saw the new value, then a later read that saw the old one.
    let h = [put(0, 1, 0, 10), get(1, Some(1), 1, 2), get(2, None, 3, 4)];
    assert!(matches!(check(&h), Verdict::Violation { .. }));
    // A value nobody wrote.
    assert!(!ok(&[put(0, 1, 0, 1), get(1, Some(7), 2, 3)]));
    // Reading the first of two sequential puts after both completed.
    assert!(!ok(&[
        put(0, 1, 0, 1),
        put(0, 2, 2, 3),
        get(1, Some(1), 4, 5)
    ]));
}

#[test]
fn compare_and_swap_rules() {
    // Two swaps from the same value cannot both succeed.
    assert!(!ok(&[
        put(0, 1, 0, 1),
        cas(1, Some(1), 2, true, 2, 3),
        cas(2, Some(1), 3, true, 4, 5),
    ]));
    // ... not even when they overlap.
    assert!(!ok(&[
        put(0, 1, 0, 1),
        cas(1, Some(1), 2, true, 2, 6),
        cas(2, Some(1), 3, true, 3, 7),
    ]));
    // A refused swap while the value still matched.
    assert!(!ok(&[put(0, 1, 0, 1), cas(1, Some(1), 2, false, 2, 3)]));
    // Create-if-absent twice.
    assert!(!ok(&[
        cas(0, None, 1, true, 0, 1),
        cas(1, None, 2, true, 2, 3)
    ]));
    // A read after a successful swap sees its value.
    assert!(!ok(&[
        put(0, 1, 0, 1),
        cas(1, Some(1), 2, true, 2, 3),
        get(0, Some(1), 4, 5),
    ]));
}

#[test]
fn unknown_outcomes_may_or_may_not_happen() {
    // A timed-out put seen later: it happened.
    assert!(ok(&[unknown(0, Input::Put(1), 0), get(1, Some(1), 5, 6)]));
    // Never seen: it did not happen (or not yet).
    assert!(ok(&[unknown(0, Input::Put(1), 0), get(1, None, 5, 6)]));
    // Seen, then not seen: a write cannot be undone.
    assert!(!ok(&[
        unknown(0, Input::Put(1), 0),
        get(1, Some(1), 5, 6),
        get(1, None, 7, 8),
    ]));
    // It cannot take effect before it was invoked.
    assert!(!ok(&[get(1, Some(1), 0, 1), unknown(0, Input::Put(1), 2)]));
    // A timed-out swap: either outcome, but only after its invocation.
    let base = [
        put(0, 1, 0, 1),
        unknown(
            1,
            Input::Cas {
                expect: Some(1),
                new: 2,
            },
            2,
        ),
    ];
    let mut h = base.to_vec();
    h.push(get(0, Some(2), 3, 4));
    assert!(ok(&h));
    let mut h = base.to_vec();
    h.push(get(0, Some(1), 3, 4));
    assert!(ok(&h));
    // A read with an unknown outcome constrains nothing.
    assert!(ok(&[put(0, 1, 0, 1), unknown(1, Input::Get, 2)]));
}

#[test]
fn verdicts_add_up() {
    let good = vec![put(0, 1, 0, 1), get(1, Some(1), 2, 3)];
    let bad = vec![put(0, 1, 0, 1), get(1, None, 2, 3)];
    let mut seen = Vec::new();
    let s = Summary::check_all(
        &[good, bad.clone(), vec![unknown(0, Input::Put(3), 0)]],
        |i, h, v| seen.push((i, h.len(), v.clone())),
    );
    assert_eq!(
        s,
        Summary {
            histories: 3,
            operations: 5,
            unknown: 1,
            violations: 1,
            undecided: 0
        }
    );
    assert_eq!(
        seen,
        vec![(
            1,
            2,
            Verdict::Violation {
                op: 1,
                linearized: 1
            }
        )]
    );
    assert_eq!(check_with_budget(&bad, None, 1), Verdict::Undecided);
}

/// Exhaustive search: some order of a subset containing every known operation, respecting
/// real time, fits the model.
fn brute_force(h: &[Operation]) -> bool {
    fn rec(h: &[Operation], done: &mut Vec<bool>, state: Option<Value>) -> bool {
        if (0..h.len()).all(|i| done[i] || h[i].is_unknown()) {
            return true;
        }
        for i in 0..h.len() {
            if done[i] {
                continue;
            }
            // i may go next only if no other pending known operation completed before i began.
            let blocked = (0..h.len())
                .any(|j| j != i && !done[j] && !h[j].is_unknown() && h[j].ret.unwrap() < h[i].call);
            if blocked {
                continue;
            }
            let out = if h[i].is_unknown() {
                Output::Unknown
            } else {
                h[i].output
            };
            if let Some(next) = step(state, h[i].input, out) {
                done[i] = true;
                if rec(h, done, next) {
                    return true;
                }
                done[i] = false;
            }
        }
        false
    }
    rec(h, &mut vec![false; h.len()], None)
}

/// A random history of a real register (each operation takes effect at a random instant
/// inside its interval), then possibly corrupted (a read's answer or a swap's result
/// changed), so that both verdicts occur.
fn random_history(rng: &mut StdRng, n: usize, lost_p: f64) -> Vec<Operation> {
    let mut ops = Vec::new();
    let mut next_value = 1;
    for c in 0..n {
        let call = rng.gen_range(0..40u64);
        let len = rng.gen_range(1..15u64);
        let at = call + rng.gen_range(0..len);
        let input = match rng.gen_range(0..3) {
            0 => {
                next_value += 1;
                Input::Put(next_value)
            }
            1 => Input::Get,
            _ => {
                next_value += 1;
                let expect = if rng.gen_bool(0.3) {
                    None
                } else {
                    Some(rng.gen_range(1..next_value))
                };
                Input::Cas {
                    expect,
                    new: next_value,
                }
            }
        };
        ops.push((at, c, input, call, call + len));
    }
    ops.sort_by_key(|o| o.0);
    let mut state = None;
    let mut out = Vec::new();
    for (_, c, input, call, ret) in ops {
        let output = match input {
            Input::Put(v) => {
                state = Some(v);
                Output::Written
            }
            Input::Get => Output::Read(state),
            Input::Cas { expect, new } => {
                let ok = state == expect;
                if ok {
                    state = Some(new);
                }
                Output::Swapped(ok)
            }
        };
        let lost = rng.gen_bool(lost_p);
        out.push(Operation {
            client: c,
            input,
            call,
            ret: if lost { None } else { Some(ret) },
            output: if lost { Output::Unknown } else { output },
        });
    }
    if rng.gen_bool(0.5) {
        let i = rng.gen_range(0..out.len());
        out[i].output = match out[i].output {
            Output::Read(Some(v)) if rng.gen_bool(0.5) => Output::Read(Some(v + 1)),
            Output::Read(_) => Output::Read(None),
            Output::Swapped(b) => Output::Swapped(!b),
            o => o,
        };
    }
    out
}

#[test]
fn agrees_with_brute_force_on_random_histories() {
    let mut rng = StdRng::seed_from_u64(13);
    let (mut yes, mut no) = (0, 0);
    for _ in 0..3000 {
        let n = rng.gen_range(1..=7);
        let h = random_history(&mut rng, n, 0.1);
        let expected = brute_force(&h);
        let got = check(&h);
        assert_eq!(got == Verdict::Linearizable, expected, "{h:#?}\n{got:?}");
        if expected {
            yes += 1;
        } else {
            no += 1;
        }
    }
    // Both verdicts were exercised.
    assert!(yes > 500 && no > 300, "linearizable {yes}, not {no}");
}

#[test]
fn long_histories_finish() {
    // 3 clients, 600 operations of a real register: decided quickly and linearizable.
    let mut rng = StdRng::seed_from_u64(7);
    let mut ops = Vec::new();
    let mut state = None;
    let mut t = 0u64;
    for k in 0..600u64 {
        t += rng.gen_range(1..5);
        let input = if k % 3 == 0 {
            Input::Put(k + 1)
        } else {
            Input::Get
        };
        let output = match input {
            Input::Put(v) => {
                state = Some(v);
                Output::Written
            }
            _ => Output::Read(state),
        };
        // Each operation's interval overlaps its neighbours'.
        ops.push(op(
            (k % 3) as usize,
            input,
            t.saturating_sub(3),
            t + 3,
            output,
        ));
    }
    assert_eq!(check(&ops), Verdict::Linearizable);
    let mut bad = ops.clone();
    bad[300].output = Output::Read(Some(9999));
    assert!(matches!(check(&bad), Verdict::Violation { .. }));
}

#[test]
fn agrees_with_brute_force_when_many_outcomes_are_unknown() {
    // The unobserved-value reductions must not change any verdict.
    let mut rng = StdRng::seed_from_u64(29);
    let (mut yes, mut no) = (0, 0);
    for _ in 0..3000 {
        let n = rng.gen_range(2..=8);
        let h = random_history(&mut rng, n, 0.45);
        let expected = brute_force(&h);
        let got = check(&h);
        assert_eq!(got == Verdict::Linearizable, expected, "{h:#?}\n{got:?}");
        if expected {
            yes += 1;
        } else {
            no += 1;
        }
    }
    assert!(yes > 500 && no > 200, "linearizable {yes}, not {no}");
}

#[test]
fn hundreds_of_unknown_writes_stay_decidable() {
    // 4 clients, 4,000 operations; every 10th write's outcome is unknown (it timed out during
    // an outage and was applied or not): 300 open-ended writes on one key.
    let mut rng = StdRng::seed_from_u64(41);
    let mut ops = Vec::new();
    let mut state: Option<Value> = None;
    let mut t = 0u64;
    let mut next = 1;
    for k in 0..4000u64 {
        t += rng.gen_range(2..6);
        let c = (k % 4) as usize;
        let roll = rng.gen_range(0..3);
        let (input, output) = if roll == 0 {
            (Input::Get, Output::Read(state))
        } else {
            next += 1;
            let input = if roll == 1 {
                Input::Put(next)
            } else {
                Input::Cas {
                    expect: state,
                    new: next,
                }
            };
            if k % 10 == 1 {
                // Applied or not at random; nobody reads it before it is overwritten.
                let applied = rng.gen_bool(0.5);
                let o = unknown(c, input, t.saturating_sub(1));
                if applied {
                    // It took effect and was overwritten at once, so no read observes it.
                    next += 1;
                    ops.push(o);
                    ops.push(put(c, next, t, t + 1));
                    state = Some(next);
                } else {
                    ops.push(o);
                }
                continue;
            }
            let output = match input {
                Input::Put(v) => {
                    state = Some(v);
                    Output::Written
                }
                _ => {
                    state = Some(next);
                    Output::Swapped(true)
                }
            };
            (input, output)
        };
        ops.push(op(c, input, t.saturating_sub(2), t + 2, output));
    }
    let unknowns = ops.iter().filter(|o| o.is_unknown()).count();
    assert!(unknowns >= 250, "{unknowns}");
    assert_eq!(check(&ops), Verdict::Linearizable);
    // A read of a value overwritten long before is caught (refuting needs the whole search:
    // a shorter history, still with 20 open-ended writes).
    let mut bad = ops[..200].to_vec();
    let i = bad.len() - 5;
    let first = bad
        .iter()
        .find_map(|o| match o.input {
            Input::Put(v) if !o.is_unknown() => Some(v),
            _ => None,
        })
        .unwrap();
    bad[i] = get(9, Some(first), bad[i].call, bad[i].call + 1);
    let v = check(&bad);
    assert!(matches!(v, Verdict::Violation { .. }), "{v:?}");
}
