//! Jump threading: a jump into a test whose outcome is already known on that path (the same
//! load was compared before: `ldh [12]; jeq #0x800` after it was found equal to 0x86dd) goes
//! straight to the outcome. Unreachable code is then dropped.
//!
//! Safe for frames cut short: a fact about a load exists only where that load already succeeded
//! on every path, so skipping its repetition cannot turn an out-of-bounds rejection into
//! anything else. The code generator never carries the accumulator across a jump, so a threaded
//! target does not miss the value the skipped load would have left.

use std::collections::BTreeMap;

use crate::bpf::BpfInsn;

const CLASS_JMP: u16 = 0x05;
const JA: u16 = 0x05;
const JEQ_K: u16 = 0x15;
const JGT_K: u16 = 0x25;
const JGE_K: u16 = 0x35;
const JSET_K: u16 = 0x45;
const AND_K: u16 = 0x54;

/// What is compared: a load (code, k) and an optional `and #mask` after it.
type Key = (u16, u32, Option<u32>);

/// What is known about one key's value.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
struct Known {
    eq: Option<u32>,
    /// (jump code, k) → outcome.
    outcomes: BTreeMap<(u16, u32), bool>,
}

type Facts = BTreeMap<Key, Known>;

fn is_simple_load(i: &BpfInsn) -> bool {
    // ld [k] (w/h/b, including the kernel's ancillary offsets) and ld len: values that cannot
    // change while the program runs.
    matches!(i.code, 0x20 | 0x28 | 0x30 | 0x80)
}

fn is_cond_k(code: u16) -> bool {
    matches!(code, JEQ_K | JGT_K | JGE_K | JSET_K)
}

fn outcome(known: &Known, code: u16, k: u32) -> Option<bool> {
    if let Some(v) = known.eq {
        return Some(match code {
            JEQ_K => v == k,
            JGT_K => v > k,
            JGE_K => v >= k,
            _ => v & k != 0,
        });
    }
    known.outcomes.get(&(code, k)).copied()
}

fn learn(facts: &mut Facts, key: Key, code: u16, k: u32, result: bool) {
    let known = facts.entry(key).or_default();
    if code == JEQ_K && result {
        known.eq = Some(k);
    }
    known.outcomes.insert((code, k), result);
}

fn intersect(a: &Facts, b: &Facts) -> Facts {
    let mut out = Facts::new();
    for (key, ka) in a {
        if let Some(kb) = b.get(key) {
            let known = Known {
                eq: if ka.eq == kb.eq { ka.eq } else { None },
                outcomes: ka
                    .outcomes
                    .iter()
                    .filter(|(t, r)| kb.outcomes.get(t) == Some(r))
                    .map(|(t, r)| (*t, *r))
                    .collect(),
            };
            if known.eq.is_some() || !known.outcomes.is_empty() {
                out.insert(*key, known);
            }
        }
    }
    out
}

/// Jump targets of instruction `pc` (absolute), fallthrough excluded for conditional jumps.
fn targets(code: &[BpfInsn], pc: usize) -> Vec<usize> {
    let i = &code[pc];
    if i.code & 0x07 != CLASS_JMP {
        return Vec::new();
    }
    if i.code == JA {
        vec![pc + 1 + i.k as usize]
    } else {
        vec![pc + 1 + i.jt as usize, pc + 1 + i.jf as usize]
    }
}

/// Threads jumps through tests with known outcomes and removes what became unreachable.
pub(crate) fn thread_jumps(mut code: Vec<BpfInsn>) -> Vec<BpfInsn> {
    let n = code.len();
    let mut is_target = vec![false; n + 1];
    for pc in 0..n {
        for t in targets(&code, pc) {
            is_target[t.min(n)] = true;
        }
    }
    // unit[pc] = (key, index of its conditional jump) when a test starts at pc.
    let mut unit: Vec<Option<(Key, usize)>> = vec![None; n];
    for pc in 0..n {
        if !is_simple_load(&code[pc]) {
            continue;
        }
        let (mask, j) = match code.get(pc + 1) {
            Some(a) if a.code == AND_K && !is_target[pc + 1] => (Some(a.k), pc + 2),
            _ => (None, pc + 1),
        };
        if j < n && is_cond_k(code[j].code) && !is_target[j] {
            unit[pc] = Some(((code[pc].code, code[pc].k, mask), j));
        }
    }
    // The key a conditional jump compares, if it ends a unit.
    let mut jump_key: Vec<Option<Key>> = vec![None; n];
    for (pc, u) in unit.iter().enumerate() {
        if let Some((key, j)) = u {
            debug_assert!(*j > pc);
            jump_key[*j] = Some(*key);
        }
    }

    let mut facts_in: Vec<Option<Facts>> = vec![None; n];
    facts_in[0] = Some(Facts::new());
    let add_edge = |facts_in: &mut Vec<Option<Facts>>, t: usize, f: Facts| {
        if t < facts_in.len() {
            facts_in[t] = Some(match facts_in[t].take() {
                None => f,
                Some(old) => intersect(&old, &f),
            });
        }
    };
    for pc in 0..n {
        let Some(here) = facts_in[pc].clone() else {
            continue; // unreachable so far (all edges come from earlier instructions)
        };
        let i = code[pc];
        if i.code & 0x07 != CLASS_JMP {
            if i.code & 0x07 != 0x06 && pc + 1 < n {
                add_edge(&mut facts_in, pc + 1, here);
            }
            continue;
        }
        // Each branch: its facts, and the target threaded as far as they decide.
        let branches: Vec<(usize, Facts)> = if i.code == JA {
            vec![(pc + 1 + i.k as usize, here)]
        } else {
            let mut t_facts = here.clone();
            let mut f_facts = here;
            if let Some(key) = jump_key[pc] {
                learn(&mut t_facts, key, i.code, i.k, true);
                learn(&mut f_facts, key, i.code, i.k, false);
            }
            vec![
                (pc + 1 + i.jt as usize, t_facts),
                (pc + 1 + i.jf as usize, f_facts),
            ]
        };
        let mut new_targets = Vec::new();
        for (mut t, facts) in branches {
            loop {
                let next = if t >= n {
                    None
                } else if code[t].code == JA {
                    Some(t + 1 + code[t].k as usize)
                } else if let Some((key, j)) = unit[t] {
                    facts
                        .get(&key)
                        .and_then(|k| outcome(k, code[j].code, code[j].k))
                        .map(|taken| {
                            if taken {
                                j + 1 + code[j].jt as usize
                            } else {
                                j + 1 + code[j].jf as usize
                            }
                        })
                } else {
                    None
                };
                match next {
                    Some(nt) if i.code == JA || nt - pc - 1 <= 255 => t = nt,
                    _ => break,
                }
            }
            add_edge(&mut facts_in, t, facts);
            new_targets.push(t);
        }
        if i.code == JA {
            code[pc].k = (new_targets[0] - pc - 1) as u32;
        } else {
            code[pc].jt = (new_targets[0] - pc - 1) as u8;
            code[pc].jf = (new_targets[1] - pc - 1) as u8;
        }
    }

    // Drop what no path reaches; distances only shrink, so every offset still fits.
    let mut reach = vec![false; n];
    reach[0] = true;
    for pc in 0..n {
        if !reach[pc] {
            continue;
        }
        let i = code[pc];
        match i.code & 0x07 {
            0x06 => {}
            CLASS_JMP => {
                for t in targets(&code, pc) {
                    reach[t] = true;
                }
            }
            _ => reach[pc + 1] = true,
        }
    }
    let mut new_index = vec![0usize; n];
    let mut m = 0;
    for pc in 0..n {
        new_index[pc] = m;
        m += reach[pc] as usize;
    }
    let mut out = Vec::with_capacity(m);
    for pc in (0..n).filter(|&pc| reach[pc]) {
        let mut i = code[pc];
        let at = new_index[pc];
        if i.code == JA {
            i.k = (new_index[pc + 1 + i.k as usize] - at - 1) as u32;
        } else if i.code & 0x07 == CLASS_JMP {
            i.jt = (new_index[pc + 1 + i.jt as usize] - at - 1) as u8;
            i.jf = (new_index[pc + 1 + i.jf as usize] - at - 1) as u8;
        }
        out.push(i);
    }
    // A leading `ja` to the next instruction (left by threading) is harmless; keep it simple.
    out
}
