//! Differential test: the in-memory matcher (`jsonb_contains`) against PostgreSQL's `jsonb @>`
//! on thousands of random, seeded pairs of JSON values.
//!
//! `DCB_DIFF_SEED` and `DCB_DIFF_CASES` reproduce or extend a run; a disagreement is reported
//! with the seed and the pair.

use crate::common;
use dcbstore::jsonb_contains;
use serde_json::{Map, Value, json};

/// SplitMix64: a small, seedable, reproducible generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const KEYS: &[&str] = &["a", "b", "c", "BookID", ""];
/// Numbers spelled in ways `numeric` finds equal or nearly so.
const NUMBERS: &[&str] = &[
    "1e2",
    "100",
    "1.5e-3",
    "0.0015",
    "18446744073709551615",
    "1.8446744073709552e19",
    "-7",
];

fn scalar(rng: &mut Rng) -> Value {
    match rng.below(12) {
        0 => Value::Null,
        1 => json!(rng.chance(50)),
        2 => json!(rng.below(5) as i64 - 2),
        3 => json!((rng.below(5) as f64 - 2.0) * 0.5),
        4 => json!(rng.below(3) as f64),
        5 => json!(-0.0),
        6 => serde_json::from_str(NUMBERS[rng.below(NUMBERS.len() as u64) as usize]).unwrap(),
        7 => json!(*rng.pick(&["1", "true", "null"])),
        _ => json!(*rng.pick(&["x", "y", "", "X", "ä", "日本"])),
    }
}

fn value(rng: &mut Rng, depth: u32) -> Value {
    if depth == 0 || rng.chance(45) {
        return scalar(rng);
    }
    if rng.chance(50) {
        Value::Array((0..rng.below(4)).map(|_| value(rng, depth - 1)).collect())
    } else {
        let mut m = Map::new();
        for _ in 0..rng.below(4) {
            m.insert(rng.pick(KEYS).to_string(), value(rng, depth - 1));
        }
        Value::Object(m)
    }
}

/// A value likely (but not certain) to be contained in `v`: a random part of it, with
/// numerically equal rewrites and occasional random changes.
fn part_of(rng: &mut Rng, v: &Value, depth: u32) -> Value {
    if rng.chance(10) {
        return value(rng, depth);
    }
    match v {
        Value::Object(m) => {
            let mut part = Map::new();
            for (k, v) in m {
                if rng.chance(60) {
                    part.insert(k.clone(), part_of(rng, v, depth.saturating_sub(1)));
                }
            }
            Value::Object(part)
        }
        Value::Array(items) if !items.is_empty() => Value::Array(
            (0..rng.below(4))
                .map(|_| {
                    let item = rng.pick(items).clone();
                    part_of(rng, &item, depth.saturating_sub(1))
                })
                .collect(),
        ),
        Value::Number(n)
            if n.as_f64()
                .is_some_and(|f| f.fract() == 0.0 && f.abs() < 1e6) =>
        {
            let f = n.as_f64().unwrap();
            if rng.chance(50) {
                json!(f)
            } else {
                json!(f as i64)
            }
        }
        // A top-level scalar taken from an array: PostgreSQL's special case.
        other => other.clone(),
    }
}

fn pair(rng: &mut Rng) -> (Value, Value) {
    let container = match rng.below(10) {
        0..=6 => {
            let mut m = Map::new();
            for _ in 0..1 + rng.below(4) {
                m.insert(rng.pick(KEYS).to_string(), value(rng, 3));
            }
            Value::Object(m)
        }
        7..=8 => Value::Array((0..rng.below(5)).map(|_| value(rng, 3)).collect()),
        _ => scalar(rng),
    };
    let contained = match (&container, rng.below(10)) {
        (Value::Array(items), 0..=1) if !items.is_empty() => rng.pick(items).clone(),
        (_, 0..=7) => part_of(rng, &container, 3),
        _ => value(rng, 3),
    };
    (container, contained)
}

#[tokio::test]
async fn in_memory_containment_agrees_with_postgres() {
    let seed: u64 = std::env::var("DCB_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x0dcb_5702e);
    let cases: usize = std::env::var("DCB_DIFF_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let mut rng = Rng(seed);
    let pairs: Vec<(Value, Value)> = (0..cases).map(|_| pair(&mut rng)).collect();

    let pool = common::pool(1);
    let client = pool.get().await.expect("a connection");
    let mut agreed_true = 0;
    for chunk in pairs.chunks(2_000) {
        let (left, right): (Vec<Value>, Vec<Value>) = chunk.iter().cloned().unzip();
        let rows = client
            .query(
                "SELECT l @> r FROM unnest($1::jsonb[], $2::jsonb[]) WITH ORDINALITY AS t(l, r, i) ORDER BY i",
                &[&left, &right],
            )
            .await
            .expect("PostgreSQL evaluates the pairs");
        for ((l, r), row) in chunk.iter().zip(rows) {
            let postgres: bool = row.get(0);
            let memory = jsonb_contains(l, r);
            assert_eq!(
                memory, postgres,
                "seed {seed}: jsonb_contains({l}, {r}) = {memory}, PostgreSQL says {postgres}"
            );
            agreed_true += usize::from(postgres);
        }
    }
    // Both answers must be well represented for the comparison to mean something.
    assert!(
        agreed_true > cases / 5 && agreed_true < cases * 4 / 5,
        "{agreed_true} of {cases} contained"
    );
    println!("{cases} differential cases (seed {seed}): all agree, {agreed_true} contained");
}
