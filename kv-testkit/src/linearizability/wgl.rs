//! The WGL search: events in time order in a doubly linked list; try to linearize the first
//! call whose effect fits the model, lift it (and its return) out of the list, and backtrack
//! when a return is reached whose call was not linearized. Lowe's cache of (set of linearized
//! operations, state) pairs prunes states already explored.
//!
//! Two reductions keep histories with many unknown-outcome writes (a member down for a while)
//! decidable, both exact (they lose no linearization):
//! - a value no operation ever observed (no read returned it, no compare-and-swap expected it)
//!   behaves like any other such value, so the state holds one placeholder for all of them;
//! - unknown-outcome puts of such values are interchangeable (each may happen at any point
//!   after its call, or never), so the search takes them in call order only: a later one is
//!   linearized only after every earlier one;
//! - an unknown-outcome operation is never placed where it would leave the state as it is
//!   (a compare-and-swap whose expectation fails): not placing it keeps strictly more options.

use std::collections::HashSet;

use super::{step, Input, Operation, Output, Value, Verdict};

/// Search steps [`check`] allows before answering [`Verdict::Undecided`].
pub const DEFAULT_BUDGET: u64 = 20_000_000;

const NIL: usize = usize::MAX;

/// The state standing for every value no operation observes (real values are never this).
const UNOBSERVED: Value = Value::MAX;

struct Event {
    op: usize,
    is_call: bool,
    /// For a call: the index of its return event.
    partner: usize,
    prev: usize,
    next: usize,
}

/// Checks one history with [`DEFAULT_BUDGET`]; the key starts absent.
pub fn check(history: &[Operation]) -> Verdict {
    check_with_budget(history, None, DEFAULT_BUDGET)
}

/// Checks one history whose key starts in state `init`, giving up after `budget` steps.
pub fn check_with_budget(history: &[Operation], init: Option<Value>, budget: u64) -> Verdict {
    // A read with an unknown outcome constrains nothing: leave it out.
    let ops: Vec<(usize, &Operation)> = history
        .iter()
        .enumerate()
        .filter(|(_, o)| !(o.input == Input::Get && o.is_unknown()))
        .collect();
    let n = ops.len();
    if n == 0 {
        return Verdict::Linearizable;
    }
    // Event times: calls before returns at equal times (such operations overlap).
    let mut order: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, (_, o)) in ops.iter().enumerate() {
        order.push((o.call, false, i));
        let ret = if o.is_unknown() {
            u64::MAX
        } else {
            o.ret.unwrap_or(u64::MAX)
        };
        order.push((ret.max(o.call), true, i));
    }
    order.sort_unstable();
    // Event 0 is the head sentinel.
    let mut ev: Vec<Event> = Vec::with_capacity(2 * n + 1);
    ev.push(Event {
        op: NIL,
        is_call: false,
        partner: NIL,
        prev: NIL,
        next: NIL,
    });
    let mut ret_of = vec![NIL; n];
    let mut call_of = vec![NIL; n];
    for (k, &(_, is_ret, i)) in order.iter().enumerate() {
        let idx = k + 1;
        ev.push(Event {
            op: i,
            is_call: !is_ret,
            partner: NIL,
            prev: idx - 1,
            next: NIL,
        });
        ev[idx - 1].next = idx;
        if is_ret {
            ret_of[i] = idx;
        } else {
            call_of[i] = idx;
        }
    }
    for i in 0..n {
        ev[call_of[i]].partner = ret_of[i];
    }
    // Values some operation observes; every other value is the same to the model.
    let mut observed: HashSet<Value> = HashSet::new();
    for (_, o) in &ops {
        match (o.input, o.output) {
            (Input::Get, Output::Read(Some(v))) if !o.is_unknown() => {
                observed.insert(v);
            }
            (
                Input::Cas {
                    expect: Some(v), ..
                },
                _,
            ) => {
                observed.insert(v);
            }
            _ => {}
        }
    }
    let canon = |s: Option<Value>| match s {
        Some(v) if !observed.contains(&v) => Some(UNOBSERVED),
        s => s,
    };
    // Rank (in call order) of each unknown-outcome put of an unobserved value.
    let mut rank = vec![NIL; n];
    let mut ranked = 0usize;
    for e in ev.iter().skip(1) {
        let o = ops[e.op].1;
        if let (true, Input::Put(v)) = (e.is_call, o.input) {
            if o.is_unknown() && !observed.contains(&v) {
                rank[e.op] = ranked;
                ranked += 1;
            }
        }
    }
    let mut spare_taken = 0usize; // such puts linearized so far (always the first ones)
    let output = |i: usize| {
        let o = ops[i].1;
        if o.is_unknown() {
            Output::Unknown
        } else {
            o.output
        }
    };

    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut count = 0usize;
    let mut cache: HashSet<(Vec<u64>, Option<Value>)> = HashSet::new();
    let mut stack: Vec<(usize, Option<Value>)> = Vec::new();
    let mut state = canon(init);
    let mut entry = ev[0].next;
    let mut steps = 0u64;
    let mut deepest = (0usize, NIL);
    while ev[0].next != NIL {
        steps += 1;
        if steps > budget {
            return Verdict::Undecided;
        }
        if entry == NIL {
            // Only unknown-outcome operations are left (their returns are at the end); each
            // may be taken as never having happened.
            if ops_left_unknown(&ev, &ops) {
                return Verdict::Linearizable;
            }
            break;
        }
        let e = &ev[entry];
        if e.is_call {
            let i = e.op;
            let in_turn = rank[i] == NIL || rank[i] == spare_taken;
            // An unknown-outcome operation that would not change the state is better left
            // for later (or never): taking it now only removes options.
            let useful = |next: &Option<Value>| !ops[i].1.is_unknown() || *next != state;
            let next = step(state, ops[i].1.input, output(i)).map(canon);
            if let Some(next_state) = next.filter(|n| in_turn && useful(n)) {
                linearized[i / 64] |= 1 << (i % 64);
                if cache.insert((linearized.clone(), next_state)) {
                    stack.push((entry, state));
                    state = next_state;
                    count += 1;
                    if rank[i] != NIL {
                        spare_taken += 1;
                    }
                    lift(&mut ev, entry);
                    entry = ev[0].next;
                    continue;
                }
                linearized[i / 64] &= !(1 << (i % 64));
            }
            entry = ev[entry].next;
        } else {
            // A return whose call is not linearized: this branch fails.
            if ops[e.op].1.is_unknown() && ops_left_unknown(&ev, &ops) {
                return Verdict::Linearizable;
            }
            if count >= deepest.0 {
                deepest = (count, e.op);
            }
            let Some((call, prev_state)) = stack.pop() else {
                break;
            };
            state = prev_state;
            count -= 1;
            let i = ev[call].op;
            if rank[i] != NIL {
                spare_taken -= 1;
            }
            linearized[i / 64] &= !(1 << (i % 64));
            unlift(&mut ev, call);
            entry = ev[call].next;
        }
    }
    if ev[0].next == NIL {
        return Verdict::Linearizable;
    }
    Verdict::Violation {
        op: ops[if deepest.1 == NIL { 0 } else { deepest.1 }].0,
        linearized: deepest.0,
    }
}

/// True when every event still in the list belongs to an unknown-outcome operation.
fn ops_left_unknown(ev: &[Event], ops: &[(usize, &Operation)]) -> bool {
    let mut e = ev[0].next;
    while e != NIL {
        if !ops[ev[e].op].1.is_unknown() {
            return false;
        }
        e = ev[e].next;
    }
    true
}

/// Removes a call and its return from the list (they keep their own links for `unlift`).
fn lift(ev: &mut [Event], call: usize) {
    let ret = ev[call].partner;
    let (p, n) = (ev[call].prev, ev[call].next);
    ev[p].next = n;
    if n != NIL {
        ev[n].prev = p;
    }
    let (p, n) = (ev[ret].prev, ev[ret].next);
    ev[p].next = n;
    if n != NIL {
        ev[n].prev = p;
    }
}

/// Puts back what the matching `lift` removed (undone in reverse order).
fn unlift(ev: &mut [Event], call: usize) {
    let ret = ev[call].partner;
    let (p, n) = (ev[ret].prev, ev[ret].next);
    if n != NIL {
        ev[n].prev = ret;
    }
    ev[p].next = ret;
    let (p, n) = (ev[call].prev, ev[call].next);
    if n != NIL {
        ev[n].prev = call;
    }
    ev[p].next = call;
}
