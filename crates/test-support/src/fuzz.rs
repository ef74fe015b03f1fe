//! Mutations of real payloads for property-based fuzzing of untrusted input: hostile
//! JSON values (U+0000, huge and negative numbers, times outside any calendar, deep
//! nesting, wrong types) and edits that replace, remove or add a node of a document.
//! Shared by the parsers' fuzz tests (`crates/ingestion/tests/fuzz.rs`) and the ingest
//! service's (`services/ingest/tests/fuzz.rs`), which start from the fixtures.

use proptest::prelude::*;

/// Cases per property: `default`, or `FUZZ_CASES` for a deeper run
/// (`FUZZ_CASES=5000 cargo test -p ingestion --test fuzz`).
pub fn cases(default: u32) -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
use serde_json::{Value, json};

/// A hostile JSON value.
pub fn hostile() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        prop_oneof![
            Just("10000000000000000".to_owned()),
            Just("1e40".to_owned()),
            Just("-5".to_owned()),
            Just("+200000-01-01T00:00:00Z".to_owned()),
            Just("0000-01-01T00:00:00Z".to_owned()),
            Just("9999-12-31T23:59:59Z".to_owned()),
            Just("2026-02-30".to_owned()),
            Just("a\u{0}b".to_owned()),
            Just("   ".to_owned()),
            "\\PC{0,40}",
            "[0-9]{1,40}",
            "[a-z0-9:_-]{200,300}",
        ]
        .prop_map(Value::String),
        prop_oneof![
            Just(-300_000_000_000_i64),
            Just(8_200_000_000_000),
            Just(-8_200_000_000_000),
            Just(i64::MAX),
            Just(i64::MIN),
        ]
        .prop_map(|n| json!(n)),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
    .prop_union(
        (60usize..140)
            .prop_map(|depth| {
                let mut v = json!("deep");
                for _ in 0..depth {
                    v = json!({ "d": v });
                }
                v
            })
            .boxed(),
    )
}

/// One edit of a JSON document: the node at `at` (an index into its nodes) is replaced,
/// removed or given a new key.
#[derive(Debug, Clone)]
pub struct Edit {
    /// Which node (an index into the document's nodes, wrapped).
    pub at: usize,
    /// 0 replace, 1 remove, 2 add a key.
    pub op: u8,
    /// The key an added member gets.
    pub key: String,
    /// The value put in.
    pub value: Value,
}

/// One to three edits.
pub fn edits() -> impl Strategy<Value = Vec<Edit>> {
    prop::collection::vec(
        (
            any::<usize>(),
            0u8..3,
            prop_oneof![
                Just("timestamp".to_owned()),
                Just("total".to_owned()),
                Just("price".to_owned()),
                Just("currency".to_owned()),
                Just("sentAt".to_owned()),
                "[a-z_]{1,10}",
            ],
            hostile(),
        )
            .prop_map(|(at, op, key, value)| Edit { at, op, key, value }),
        1..4,
    )
}

fn pointers(v: &Value, here: String, out: &mut Vec<String>) {
    out.push(here.clone());
    match v {
        Value::Object(o) => {
            for (k, c) in o {
                let k = k.replace('~', "~0").replace('/', "~1");
                pointers(c, format!("{here}/{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                pointers(c, format!("{here}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// Applies `edits` to `doc` in order.
pub fn apply(doc: &mut Value, edits: &[Edit]) {
    for e in edits {
        let mut all = Vec::new();
        pointers(doc, String::new(), &mut all);
        let at = all[e.at % all.len()].clone();
        match e.op {
            0 if !at.is_empty() => {
                if let Some(node) = doc.pointer_mut(&at) {
                    *node = e.value.clone();
                }
            }
            1 if !at.is_empty() => {
                let (parent, last) = at.rsplit_once('/').unwrap();
                match doc.pointer_mut(parent) {
                    Some(Value::Object(o)) => {
                        o.remove(&last.replace("~1", "/").replace("~0", "~"));
                    }
                    Some(Value::Array(a)) => {
                        if let Ok(i) = last.parse::<usize>()
                            && i < a.len()
                        {
                            a.remove(i);
                        }
                    }
                    _ => {}
                }
            }
            _ => {
                if let Some(Value::Object(o)) = doc.pointer_mut(&at) {
                    o.insert(e.key.clone(), e.value.clone());
                }
            }
        }
    }
}

/// A document, edited, as bytes; sometimes garbled at the byte level instead.
pub fn edited_bytes(seed: &[u8], edits: &[Edit], garble: Option<(usize, u8)>) -> Vec<u8> {
    let mut doc: Value = serde_json::from_slice(seed).unwrap();
    apply(&mut doc, edits);
    let mut bytes = serde_json::to_vec(&doc).unwrap();
    if let Some((at, byte)) = garble
        && !bytes.is_empty()
    {
        let i = at % bytes.len();
        bytes[i] = byte;
    }
    bytes
}

/// Byte garbling for one case in ten.
pub fn garble() -> impl Strategy<Value = Option<(usize, u8)>> {
    prop::option::weighted(0.1, (any::<usize>(), any::<u8>()))
}
