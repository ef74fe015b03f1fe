//! Property-based fuzzing of every parser of untrusted input, seeded with the fixtures:
//! Shopify and WooCommerce webhooks, Twilio forms, Segment messages and batches, POS
//! bills and CSV rows. Each case mutates a real payload (values replaced by hostile
//! ones — U+0000, huge and negative numbers, times far outside any calendar, deep
//! nesting, wrong types — keys removed or added, or bytes garbled) and feeds it to the
//! same builder ingest runs. The properties:
//!
//! - no parser panics;
//! - every refusal is a 4xx (400, 401, 413) with a stable code and a reason;
//! - everything accepted is a promise: it survives the trip through `events.raw`
//!   (envelope JSON read back), maps, and — checked against the real Postgres at the
//!   end — its raw row and its normalised rows are written without an error.
//!
//! "Nothing stored for a rejected request" is proven at the HTTP edge, by the ingest
//! service's own fuzz test (`services/ingest/tests/fuzz.rs`).
//!
//! Case counts are bounded (`CASES` per parser) to keep the suite quick.

use std::sync::Mutex;

use chrono::Utc;
use domain::Source;
use domain::api::{CsvImportKind, CsvMapping};
use http::{HeaderMap, HeaderName, HeaderValue};
use ingestion::csv::{ImportOptions, parse_all};
use ingestion::raw_event::{NewRawEvent, RawPayload};
use ingestion::sources::{self, Refusal, WebhookRequest, admission, pos, segment};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value;
use streams::Envelope;
use test_support::fuzz::{apply, edited_bytes, edits, garble};
use uuid::Uuid;

const CASES: u32 = 192;

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{path}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn fixtures(dir: &str) -> Vec<(String, Vec<u8>)> {
    let root = format!("{}/tests/fixtures/{dir}", env!("CARGO_MANIFEST_DIR"));
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            (
                p.file_stem().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Everything accepted during the run, checked against Postgres at the end.
static ACCEPTED: Mutex<Vec<NewRawEvent>> = Mutex::new(Vec::new());

/// The properties of one parser's answer.
fn judge(result: Result<Vec<NewRawEvent>, Refusal>) -> Result<(), TestCaseError> {
    match result {
        Ok(events) => {
            for ev in &events {
                // What the normalizer will read: the envelope, through JSON.
                let json = serde_json::to_string(&ev.envelope_ref()).unwrap();
                let back: Envelope<RawPayload> = serde_json::from_str(&json)
                    .map_err(|e| TestCaseError::fail(format!("envelope unreadable: {e}")))?;
                let n = ingestion::normalize::normalize_envelope(&back, "IN").map_err(|e| {
                    TestCaseError::fail(format!("accepted but unmappable: {e}: {json}"))
                })?;
                if let Some(event) = &n.event {
                    // What the merger will read.
                    let json = serde_json::to_string(event).unwrap();
                    serde_json::from_str::<domain::NormalizedEvent>(&json).map_err(|e| {
                        TestCaseError::fail(format!("normalised event unreadable: {e}"))
                    })?;
                }
                admission::admit(ev, "x")
                    .map_err(|e| TestCaseError::fail(format!("not admitted twice: {e}")))?;
            }
            ACCEPTED.lock().unwrap().extend(events);
            Ok(())
        }
        Err(refusal) => {
            let (code, message) = match &refusal {
                Refusal::Invalid { code, message } | Refusal::Unauthorized { code, message } => {
                    (*code, message.as_str())
                }
                Refusal::TooLarge(message) => ("payload_too_large", message.as_str()),
            };
            prop_assert!(
                !code.is_empty() && !message.trim().is_empty(),
                "{refusal:?}"
            );
            Ok(())
        }
    }
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: test_support::fuzz::cases(CASES),
        failure_persistence: None,
        ..Config::default()
    })
}

fn request<'a>(headers: &'a HeaderMap, body: &'a [u8]) -> WebhookRequest<'a> {
    WebhookRequest {
        headers,
        body,
        public_base_url: "https://in.example",
        path_and_query: "/webhooks/x",
        received_at: Utc::now(),
        max_age: Some(chrono::TimeDelta::days(2)),
    }
}

fn headers(pairs: &[(&str, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        if let Ok(v) = HeaderValue::from_str(v) {
            map.insert(HeaderName::from_bytes(k.as_bytes()).unwrap(), v);
        }
    }
    map
}

fn fuzz_webhooks(source: Source, dir: &str, topic_header: &'static str, topics: &'static [&str]) {
    let seeds = fixtures(dir);
    let mut runner = runner();
    let strategy = (
        0..seeds.len(),
        edits(),
        garble(),
        prop::option::of(prop::sample::select(topics)),
    );
    runner
        .run(&strategy, |(seed, edits, garble, topic)| {
            let (stem, bytes) = &seeds[seed];
            let body = edited_bytes(bytes, &edits, garble);
            let own_topic = match source {
                Source::Shopify => stem.replacen('_', "/", 1),
                _ => stem.clone(),
            };
            let h = headers(&[
                (topic_header, topic.map_or(own_topic, str::to_owned)),
                ("x-shopify-webhook-id", "wh-1".into()),
                ("x-shopify-triggered-at", Utc::now().to_rfc3339()),
            ]);
            let result =
                sources::webhook_raw_event(source, "", Uuid::nil(), None, &request(&h, &body));
            judge(result.map(|e| vec![e]))
        })
        .unwrap();
}

#[test]
fn shopify_webhooks() {
    fuzz_webhooks(
        Source::Shopify,
        "shopify",
        "x-shopify-topic",
        &sources::shopify::TOPICS,
    );
}

#[test]
fn woocommerce_webhooks() {
    fuzz_webhooks(
        Source::Woocommerce,
        "woocommerce",
        "x-wc-webhook-topic",
        &sources::woocommerce::TOPICS,
    );
}

#[test]
fn twilio_forms() {
    let seeds = fixtures("twilio");
    let value = prop_oneof![
        Just("a\u{0}b".to_owned()),
        Just("whatsapp:+919845012345".to_owned()),
        Just("delivered".to_owned()),
        "\\PC{0,60}",
    ];
    let strategy = (
        0..seeds.len(),
        prop::collection::vec((any::<usize>(), 0u8..3, "[A-Za-z]{1,12}", value), 1..4),
        any::<bool>(),
    );
    runner()
        .run(&strategy, |(seed, edits, status)| {
            let (_, bytes) = &seeds[seed];
            let mut params: Vec<(String, String)> = serde_urlencoded::from_bytes(bytes).unwrap();
            for (at, op, key, value) in edits {
                let i = at % params.len().max(1);
                match op {
                    0 if !params.is_empty() => params[i].1 = value,
                    1 if !params.is_empty() => {
                        params.remove(i);
                    }
                    _ => params.push((key, value)),
                }
            }
            let body = serde_urlencoded::to_string(&params).unwrap().into_bytes();
            let suffix = if status { "/status" } else { "" };
            let h = HeaderMap::new();
            let result = sources::webhook_raw_event(
                Source::Twilio,
                suffix,
                Uuid::nil(),
                None,
                &request(&h, &body),
            );
            judge(result.map(|e| vec![e]))
        })
        .unwrap();
}

#[test]
fn segment_messages_and_batches() {
    let seeds = fixtures("segment");
    let strategy = (0..seeds.len(), edits(), prop::option::of("[A-Z]{3}"));
    runner()
        .run(&strategy, |(seed, edits, currency)| {
            let (_, bytes) = &seeds[seed];
            let mut doc: Value = serde_json::from_slice(bytes).unwrap();
            apply(&mut doc, &edits);
            let len = serde_json::to_vec(&doc).unwrap().len();
            let endpoint = match doc.get("type").and_then(Value::as_str) {
                Some(call) => {
                    segment::Endpoint::from_path(call).unwrap_or(segment::Endpoint::Batch)
                }
                None => segment::Endpoint::Batch,
            };
            if len > endpoint.max_bytes() {
                return Ok(());
            }
            let receipt = segment::Receipt {
                integration_id: Uuid::nil(),
                received_at: Utc::now(),
                default_currency: currency.as_deref(),
            };
            judge(segment::raw_events(receipt, endpoint, doc, len))
        })
        .unwrap();
}

#[test]
fn pos_bills() {
    let seeds = fixtures("pos");
    runner()
        .run(&(0..seeds.len(), edits()), |(seed, edits)| {
            let (_, bytes) = &seeds[seed];
            let mut doc: Value = serde_json::from_slice(bytes).unwrap();
            apply(&mut doc, &edits);
            judge(pos::raw_events(Uuid::nil(), doc))
        })
        .unwrap();
}

#[test]
fn csv_rows() {
    let cell = prop_oneof![
        Just("a\u{0}b".to_owned()),
        Just("10000000000000000".to_owned()),
        Just("+200000-01-01".to_owned()),
        Just("\"".to_owned()),
        Just("x\ny".to_owned()),
        "\\PC{0,20}",
    ];
    let seeds = [
        (
            "loyalty_id=Loyalty Card",
            fixture("csv/customers.csv"),
            CsvImportKind::Customers,
        ),
        (
            "order_id=Name,placed_at=Paid at,status=Financial Status,qty=Lineitem quantity,\
             name=Lineitem name,price=Lineitem price,sku=Lineitem sku",
            fixture("csv/orders.csv"),
            CsvImportKind::Orders,
        ),
    ];
    let strategy = (
        0..seeds.len(),
        prop::collection::vec((any::<usize>(), any::<usize>(), cell), 1..5),
    );
    let opts = ImportOptions {
        region: "IN".into(),
        max_bytes: 1 << 20,
        batch_rows: 100,
    };
    runner()
        .run(&strategy, |(seed, edits)| {
            let (mapping, bytes, kind) = &seeds[seed];
            let mut reader = csv::ReaderBuilder::new()
                .flexible(true)
                .from_reader(bytes.as_slice());
            let header = reader.headers().unwrap().clone();
            let mut rows: Vec<Vec<String>> = reader
                .records()
                .map(|r| r.unwrap().iter().map(str::to_owned).collect())
                .collect();
            for (row, col, value) in edits {
                let r = row % rows.len();
                let c = col % rows[r].len();
                rows[r][c] = value;
            }
            let mut out = csv::Writer::from_writer(Vec::new());
            out.write_record(&header).unwrap();
            for r in &rows {
                out.write_record(r).unwrap();
            }
            let text = out.into_inner().unwrap();
            let mapping = CsvMapping::parse_pairs(mapping).unwrap();
            match parse_all(text.as_slice(), *kind, &mapping, &opts, Uuid::nil(), "sha") {
                Ok((events, errors)) => {
                    for e in &errors {
                        prop_assert!(e.line > 0 && !e.reason.trim().is_empty(), "{e:?}");
                    }
                    judge(Ok(events))
                }
                Err(e) => {
                    prop_assert!(!e.to_string().is_empty());
                    Ok(())
                }
            }
        })
        .unwrap();
}

/// Everything the other tests accepted can really be stored: its raw row, and the
/// rows the normalizer writes for it. Runs the parsers itself first so it does not
/// depend on test order.
#[tokio::test]
async fn everything_accepted_is_stored_by_postgres() {
    shopify_webhooks();
    woocommerce_webhooks();
    twilio_forms();
    segment_messages_and_batches();
    pos_bills();
    csv_rows();
    let mut accepted = std::mem::take(&mut *ACCEPTED.lock().unwrap());
    // Distinct keys and ids: the cases reuse seeds, and duplicates are not the point.
    let mut seen = std::collections::HashSet::new();
    accepted.retain(|e| seen.insert((e.source, e.source_event_id.clone())));
    for e in &mut accepted {
        e.id = Uuid::now_v7();
        // The parsers ran for the nil integration, which this database does not have.
        e.integration_id = None;
    }
    assert!(
        accepted.len() > 100,
        "the fuzzing accepted {} events",
        accepted.len()
    );
    let env = test_support::TestEnv::new().await;
    for chunk in accepted.chunks(200) {
        if let Err(e) = ingestion::raw::insert_batch(&env.db, chunk).await {
            for ev in chunk {
                if let Err(one) =
                    ingestion::raw::insert_batch(&env.db, std::slice::from_ref(ev)).await
                {
                    panic!("accepted but not storable ({one}): {:?}", ev.body);
                }
            }
            panic!("a batch failed although each event stores alone: {e}");
        }
    }
    for ev in &accepted {
        let n = ingestion::normalize::normalize(&ev.record(), "IN").unwrap();
        let mut write = [storage::normalized::EventWrite {
            event_id: ev.id,
            source: ev.source,
            occurred_at: n.event.as_ref().map_or(ev.received_at, |e| e.occurred_at),
            event: n.event,
            order: n.order,
            products: n.products,
        }];
        storage::normalized::write_batch(&env.db, &mut write)
            .await
            .unwrap_or_else(|e| {
                panic!("accepted but its normalised rows fail ({e}): {:?}", ev.body)
            });
    }
}
