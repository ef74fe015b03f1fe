//! Golden snapshots of the normalised form of every fixture: each realistic payload goes
//! through the same path as in production (the edge's raw-event builder, then the
//! mapping) and the result is compared with the committed `.snap` file. A change to any
//! mapping shows up as a reviewed snapshot diff.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use domain::Source;
use domain::api::{CsvImportKind, CsvMapping};
use http::{HeaderMap, HeaderName, HeaderValue};
use ingestion::csv::{ImportOptions, parse_all};
use ingestion::normalize::normalize;
use ingestion::raw_event::NewRawEvent;
use ingestion::sources::{self, Normalized, WebhookRequest, pos, segment, twilio};
use serde_json::Value;
use uuid::Uuid;

const REGION: &str = "IN";

fn fixtures(dir: &str) -> Vec<(String, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir);
    let mut files: Vec<(String, PathBuf)> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.file_stem().unwrap().to_string_lossy().into_owned(), p))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", root.display());
    files
}

fn received_at() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-25T06:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// Gives an event the fixed id and receipt time snapshots need, then maps it.
fn normalized(mut ev: NewRawEvent, n: u128) -> Normalized {
    ev.id = Uuid::from_u128(n);
    ev.received_at = received_at();
    normalize(&ev.record(), REGION).unwrap_or_else(|e| panic!("{} {}: {e}", ev.source, ev.kind))
}

/// The raw event ingest's signed-webhook handler builds for a delivery of `body` with
/// `headers` to the route of `source` ending in `suffix` (signatures are tested in the
/// ingest service).
fn webhook_event(
    source: Source,
    suffix: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> NewRawEvent {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.insert(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let request = WebhookRequest {
        headers: &map,
        body,
        public_base_url: "https://in.example",
        path_and_query: "",
        received_at: received_at(),
        max_age: None,
    };
    sources::webhook_raw_event(source, suffix, Uuid::nil(), None, &request)
        .unwrap_or_else(|e| panic!("{source}: {e}"))
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn shopify() {
    for (stem, path) in fixtures("shopify") {
        let topic = stem.replacen('_', "/", 1);
        let ev = webhook_event(
            Source::Shopify,
            "",
            &[
                ("x-shopify-topic", &topic),
                ("x-shopify-shop-domain", "loom-and-co.myshopify.com"),
                ("x-shopify-webhook-id", &format!("wh-{stem}")),
            ],
            &std::fs::read(&path).unwrap(),
        );
        insta::assert_json_snapshot!(format!("shopify__{stem}"), normalized(ev, 1));
    }
}

#[test]
fn woocommerce() {
    for (stem, path) in fixtures("woocommerce") {
        let ev = webhook_event(
            Source::Woocommerce,
            "",
            &[
                ("x-wc-webhook-topic", &stem),
                ("x-wc-webhook-source", "https://shop.example.com/"),
            ],
            &std::fs::read(&path).unwrap(),
        );
        insta::assert_json_snapshot!(format!("woocommerce__{stem}"), normalized(ev, 2));
    }
}

#[test]
fn twilio() {
    for (stem, path) in fixtures("twilio") {
        let suffix = if stem.starts_with("status") {
            "/status"
        } else {
            ""
        };
        let ev = webhook_event(Source::Twilio, suffix, &[], &std::fs::read(&path).unwrap());
        let kind = if suffix.is_empty() {
            twilio::KIND_MESSAGE
        } else {
            twilio::KIND_STATUS
        };
        assert_eq!(ev.kind, kind);
        insta::assert_json_snapshot!(format!("twilio__{stem}"), normalized(ev, 3));
    }
}

#[test]
fn segment() {
    for (stem, path) in fixtures("segment") {
        let body = json(&path);
        let len = std::fs::metadata(&path).unwrap().len() as usize;
        let endpoint = match body.get("type").and_then(Value::as_str) {
            Some(call) => segment::Endpoint::from_path(call).unwrap(),
            None => segment::Endpoint::Batch,
        };
        let receipt = segment::Receipt {
            integration_id: Uuid::nil(),
            received_at: received_at(),
            default_currency: None,
        };
        let events = segment::raw_events(receipt, endpoint, body, len).unwrap();
        let out: Vec<Normalized> = events
            .into_iter()
            .enumerate()
            .map(|(i, ev)| normalized(ev, 400 + i as u128))
            .collect();
        insta::assert_json_snapshot!(format!("segment__{stem}"), out);
    }
}

#[test]
fn pos() {
    for (stem, path) in fixtures("pos") {
        let events = pos::raw_events(Uuid::nil(), json(&path)).unwrap();
        let out: Vec<Normalized> = events
            .into_iter()
            .enumerate()
            .map(|(i, ev)| normalized(ev, 500 + i as u128))
            .collect();
        insta::assert_json_snapshot!(format!("pos__{stem}"), out);
    }
}

#[test]
fn csv() {
    let opts = ImportOptions {
        region: REGION.into(),
        max_bytes: u64::MAX,
        batch_rows: 100,
    };
    let cases = [
        (
            "customers",
            CsvImportKind::Customers,
            "loyalty_id=Loyalty Card",
        ),
        (
            "customers_consent",
            CsvImportKind::Customers,
            "sms_consent=SMS opt-in",
        ),
        (
            "orders",
            CsvImportKind::Orders,
            "order_id=Name,placed_at=Paid at,status=Financial Status,qty=Lineitem quantity,\
             name=Lineitem name,price=Lineitem price,sku=Lineitem sku",
        ),
    ];
    for (stem, kind, mapping) in cases {
        let file = std::fs::File::open(
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/csv/{stem}.csv")),
        )
        .unwrap();
        let mapping = CsvMapping::parse_pairs(mapping).unwrap();
        let (events, errors) =
            parse_all(file, kind, &mapping, &opts, Uuid::nil(), "filehash").unwrap();
        let out: Vec<(String, Normalized)> = events
            .into_iter()
            .enumerate()
            .map(|(i, ev)| (ev.source_event_id.clone(), normalized(ev, 600 + i as u128)))
            .collect();
        insta::assert_json_snapshot!(format!("csv__{stem}"), out);
        insta::assert_json_snapshot!(format!("csv__{stem}_errors"), errors);
    }
}
