//! Sends rendered deliveries to ingest over HTTP, with bounded concurrency.
//!
//! Each person's deliveries go out in the order they happened: people are spread over
//! `concurrency` lanes, and each lane sends its people's deliveries one request after
//! the other, folding consecutive tracking messages into one `POST /v1/batch` and
//! consecutive bills into one POS request. Platforms deliver a person's events roughly
//! in order too, and the identity merger then resolves them as they come instead of
//! replaying a person's history for every late arrival. Twilio callbacks carry no
//! timestamp (ingest stamps them on arrival), so they go last, as the live tail they
//! are: sent in the middle of the history they would sit "in the future" of every
//! later historical event of the same person.
//!
//! The lanes also keep together in time ([`Watermark`]): a lane sends a request only
//! while its first delivery happened at most `--lane-skew-mins` after the earliest
//! delivery any lane still has to send (in flight included). A live brand's platforms
//! deliver each event within moments of it happening, so deliveries of different people
//! arrive roughly in time order too, late by a delivery's delay or a retry, never by
//! months; lanes left to run freely drift apart by months of history (one lane's people
//! have more webhooks, sent one request each, than another's), and every event linked
//! to a person of a lane that ran ahead (a household's phone, a store's counter phone)
//! arrives after later events of its region, which the identity merger must then
//! replay.
//!
//! With a rate (`ctl demo --rate`), every request first reserves its deliveries' share
//! of time on one shared schedule ([`Pacer`]), so the load is steady whatever the
//! lanes do: a fault drill sees the same arrival rate before, during and after a fault.
//!
//! A request that fails in transit or gets a 5xx or 429 is retried with a growing
//! pause: every delivery carries its deduplication key, so a retry of something already
//! stored is answered as a duplicate and stores nothing. A 4xx other than 429 is a
//! refusal: the delivery is counted as rejected, its reason kept, and it is left out of
//! the ground truth.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use chrono::{DateTime, TimeDelta, Utc};
use domain::Source;
use serde_json::{Value, json};
use uuid::Uuid;

use super::render::{Delivery, Endpoints, Payload};

/// How to send.
#[derive(Debug, Clone)]
pub struct SendOptions {
    /// Where ingest listens (`http://127.0.0.1:8081`).
    pub ingest_url: String,
    /// Lanes, and so requests in flight at once.
    pub concurrency: usize,
    /// Tracking messages per `/v1/batch` request.
    pub segment_batch: usize,
    /// Bills per POS request.
    pub bill_batch: usize,
    /// Attempts per request before giving up on it.
    pub attempts: u32,
    /// Deliveries per second over every lane, or as fast as ingest answers.
    pub rate: Option<f64>,
    /// How far in event time a lane may run ahead of the earliest delivery any lane
    /// still has to send ([`Watermark`]).
    pub lane_skew: TimeDelta,
}

impl Default for SendOptions {
    fn default() -> Self {
        Self {
            ingest_url: "http://127.0.0.1:8081".into(),
            concurrency: 16,
            segment_batch: 100,
            bill_batch: 50,
            attempts: 8,
            rate: None,
            lane_skew: TimeDelta::minutes(DEFAULT_LANE_SKEW_MINS.into()),
        }
    }
}

/// What sending did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SendReport {
    /// HTTP requests that got an answer in the end.
    pub requests: u64,
    /// Deliveries ingest accepted (2xx), duplicates included.
    pub accepted: u64,
    /// Accepted deliveries ingest said it already had.
    pub duplicates: u64,
    /// Deliveries refused with a 4xx, or given up on after every attempt.
    pub rejected: u64,
    /// Requests sent again after a transient failure.
    pub retries: u64,
    /// Accepted deliveries per source.
    pub by_source: BTreeMap<&'static str, u64>,
    /// The first few refusals: `source key: status reason`.
    pub errors: Vec<String>,
}

/// The shared schedule of a rate-limited load: the instant the next request may go.
#[derive(Debug)]
pub struct Pacer {
    per_delivery: Duration,
    next: Mutex<Option<Instant>>,
}

impl Pacer {
    /// A schedule of `rate` deliveries per second.
    pub fn new(rate: f64) -> Self {
        Self {
            per_delivery: Duration::from_secs_f64(1.0 / rate),
            next: Mutex::new(None),
        }
    }

    /// Reserves the slot of a request carrying `deliveries` at `now`: it may go at the
    /// returned instant, and the next request not before its deliveries' share of time
    /// after that. A schedule that fell behind (slow answers) restarts from `now`
    /// rather than sending a burst to catch up.
    pub fn reserve(&self, now: Instant, deliveries: usize) -> Instant {
        let mut next = self.next.lock().expect("no lane panics holding the pacer");
        let slot = next.map_or(now, |n| n.max(now));
        let share = self
            .per_delivery
            .saturating_mul(u32::try_from(deliveries).unwrap_or(u32::MAX));
        *next = Some(slot + share);
        slot
    }

    /// Waits for the slot of a request carrying `deliveries`.
    async fn wait(&self, deliveries: usize) {
        let slot = self.reserve(Instant::now(), deliveries);
        tokio::time::sleep_until(slot.into()).await;
    }
}

/// How far in event time, in minutes, a lane may run ahead of the others by default
/// (`ctl demo --lane-skew-mins`): a delivery arrives at most a day after later ones of
/// other people.
pub const DEFAULT_LANE_SKEW_MINS: u32 = 24 * 60;

/// Where each lane is in event time: the time of the first delivery of the request it
/// sends next (or has in flight), `None` once it has sent everything. A lane may send a
/// request whose first delivery happened at most `skew` after the earliest of them, so
/// the lane at the earliest time always may and the others wait for it at most `skew`
/// ahead: of two requests, the one that arrives later happened at most `skew` before
/// the other's first delivery.
#[derive(Debug)]
pub struct Watermark {
    skew: TimeDelta,
    lanes: Mutex<Vec<Option<DateTime<Utc>>>>,
    moved: tokio::sync::Notify,
}

impl Watermark {
    /// Lanes starting at the given times (`None`: a lane with nothing to send).
    pub fn new(starts: Vec<Option<DateTime<Utc>>>, skew: TimeDelta) -> Self {
        Self {
            skew,
            lanes: Mutex::new(starts),
            moved: tokio::sync::Notify::new(),
        }
    }

    /// Moves `lane` to `at` (`None`: it is done) and says whether it may send a request
    /// that starts there.
    pub fn advance(&self, lane: usize, at: Option<DateTime<Utc>>) -> bool {
        let mut lanes = self
            .lanes
            .lock()
            .expect("no lane panics holding the watermark");
        if lanes[lane] != at {
            lanes[lane] = at;
            // The earliest time may have moved: waiting lanes look again.
            self.moved.notify_waiters();
        }
        let Some(at) = at else { return true };
        let earliest = lanes.iter().flatten().min().copied().unwrap_or(at);
        at <= earliest + self.skew
    }

    /// Moves `lane` to `at` and waits until it may send a request that starts there.
    async fn wait(&self, lane: usize, at: DateTime<Utc>) {
        loop {
            // Registered before looking: a lane that moves after the look wakes this one.
            let moved = self.moved.notified();
            tokio::pin!(moved);
            moved.as_mut().enable();
            if self.advance(lane, Some(at)) {
                return;
            }
            moved.await;
        }
    }
}

/// One HTTP request carrying one or more deliveries.
struct Request {
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    members: Vec<usize>,
    /// How the answer says how many were duplicates.
    kind: Kind,
}

impl Request {
    /// When its first delivery happened (a lane's deliveries are in time order).
    fn at(&self, deliveries: &[Delivery]) -> DateTime<Utc> {
        deliveries[self.members[0]].at
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Webhook,
    Twilio,
    Segment,
    Bills,
}

enum Outcome {
    Accepted { duplicates: u64 },
    Refused(String),
}

/// The shared tally of every lane.
struct Tally {
    report: SendReport,
    accepted: Vec<bool>,
    done: usize,
    last_print: Instant,
}

/// Sends every delivery; returns the report and, per delivery, whether it was accepted.
pub async fn send(
    client: &reqwest::Client,
    opts: &SendOptions,
    ep: &Endpoints,
    deliveries: &[Delivery],
) -> (SendReport, Vec<bool>) {
    let started = Instant::now();
    let tally = Mutex::new(Tally {
        report: SendReport::default(),
        accepted: vec![false; deliveries.len()],
        done: 0,
        last_print: Instant::now(),
    });
    let base = opts.ingest_url.trim_end_matches('/').to_owned();
    let lanes = opts.concurrency.max(1);
    let pacer = opts.rate.map(Pacer::new);
    let (live, history): (Vec<usize>, Vec<usize>) =
        (0..deliveries.len()).partition(|&i| deliveries[i].source == Source::Twilio);
    for phase in [history, live] {
        let mut per_lane: Vec<Vec<usize>> = vec![Vec::new(); lanes];
        for i in phase {
            per_lane[deliveries[i].person as usize % lanes].push(i);
        }
        let per_lane: Vec<Vec<Request>> = per_lane
            .iter()
            .map(|members| requests(opts, ep, deliveries, members))
            .collect();
        let watermark = Watermark::new(
            per_lane
                .iter()
                .map(|rs| rs.first().map(|r| r.at(deliveries)))
                .collect(),
            opts.lane_skew,
        );
        let lanes = per_lane
            .into_iter()
            .enumerate()
            .map(|(lane, lane_requests)| {
                let (base, tally, pacer, watermark) = (&base, &tally, &pacer, &watermark);
                async move {
                    for r in lane_requests {
                        watermark.wait(lane, r.at(deliveries)).await;
                        if let Some(pacer) = pacer {
                            pacer.wait(r.members.len()).await;
                        }
                        let (outcome, retries) = post(client, base, &r, opts.attempts).await;
                        record(
                            &mut tally.lock().expect("no lane panics holding the tally"),
                            deliveries,
                            &r,
                            outcome,
                            retries,
                            started,
                        );
                    }
                    watermark.advance(lane, None);
                }
            });
        futures::future::join_all(lanes).await;
    }
    let tally = tally
        .into_inner()
        .expect("no lane panics holding the tally");
    (tally.report, tally.accepted)
}

fn record(
    t: &mut Tally,
    deliveries: &[Delivery],
    r: &Request,
    outcome: Outcome,
    retries: u64,
    started: Instant,
) {
    t.report.retries += retries;
    match outcome {
        Outcome::Accepted { duplicates } => {
            t.report.requests += 1;
            t.report.accepted += r.members.len() as u64;
            t.report.duplicates += duplicates;
            for &i in &r.members {
                t.accepted[i] = true;
                *t.report
                    .by_source
                    .entry(deliveries[i].source.as_str())
                    .or_default() += 1;
            }
        }
        Outcome::Refused(why) => {
            t.report.rejected += r.members.len() as u64;
            if t.report.errors.len() < 10 {
                let d = &deliveries[r.members[0]];
                t.report
                    .errors
                    .push(format!("{} {}: {why}", d.source, d.key));
            }
        }
    }
    t.done += r.members.len();
    if t.last_print.elapsed() >= Duration::from_secs(5) || t.done == deliveries.len() {
        t.last_print = Instant::now();
        let secs = started.elapsed().as_secs_f64().max(0.001);
        eprintln!(
            "demo: sent {}/{} deliveries ({:.0}/s), {} refused",
            t.done,
            deliveries.len(),
            t.done as f64 / secs,
            t.report.rejected
        );
    }
}

/// The requests of one lane, in order: runs of consecutive tracking messages (or bills)
/// share a request, everything else goes alone.
fn requests(
    opts: &SendOptions,
    ep: &Endpoints,
    deliveries: &[Delivery],
    members: &[usize],
) -> Vec<Request> {
    let write_key =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:", ep.segment.secret));
    let mut out: Vec<Request> = Vec::new();
    let mut run: Vec<usize> = Vec::new();
    let mut run_kind = Kind::Webhook;
    let flush = |run: &mut Vec<usize>, kind: Kind, out: &mut Vec<Request>| {
        if run.is_empty() {
            return;
        }
        let items: Vec<&Value> = run
            .iter()
            .map(|&i| match &deliveries[i].payload {
                Payload::Segment(v) | Payload::Bill(v) => v,
                Payload::Single { .. } => unreachable!("only messages and bills are batched"),
            })
            .collect();
        // Paths from the source registry, as ingest mounts them.
        let path_of = |source: Source, id: Uuid| {
            ingestion::sources::of(source)
                .webhook_url("", id)
                .expect("segment and POS deliver to ingest")
        };
        let (path, auth, body) = match kind {
            Kind::Segment => (
                format!("{}/batch", path_of(Source::Segment, ep.segment.id)),
                format!("Basic {write_key}"),
                json!({"batch": items}),
            ),
            _ => (
                path_of(Source::Pos, ep.pos.id),
                format!("Bearer {}", ep.pos.secret),
                json!({"bills": items}),
            ),
        };
        out.push(Request {
            path,
            headers: vec![
                ("content-type", "application/json".into()),
                ("authorization", auth),
            ],
            body: serde_json::to_vec(&body).expect("JSON serialises"),
            members: std::mem::take(run),
            kind,
        });
    };
    for &i in members {
        let d = &deliveries[i];
        let (kind, limit) = match &d.payload {
            Payload::Segment(_) => (Kind::Segment, opts.segment_batch.max(1)),
            Payload::Bill(_) => (Kind::Bills, opts.bill_batch.max(1)),
            Payload::Single {
                path,
                headers,
                body,
            } => {
                flush(&mut run, run_kind, &mut out);
                out.push(Request {
                    path: path.clone(),
                    headers: headers.clone(),
                    body: body.clone(),
                    members: vec![i],
                    kind: if d.source == Source::Twilio {
                        Kind::Twilio
                    } else {
                        Kind::Webhook
                    },
                });
                continue;
            }
        };
        if kind != run_kind || run.len() >= limit {
            flush(&mut run, run_kind, &mut out);
            run_kind = kind;
        }
        run.push(i);
    }
    flush(&mut run, run_kind, &mut out);
    out
}

/// Posts one request, retrying transient failures. Returns the outcome and how many
/// retries it took.
async fn post(client: &reqwest::Client, base: &str, r: &Request, attempts: u32) -> (Outcome, u64) {
    let mut pause = Duration::from_millis(200);
    let mut last = String::new();
    for attempt in 0..attempts.max(1) {
        if attempt > 0 {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
        let mut req = client
            .post(format!("{base}{}", r.path))
            .body(r.body.clone());
        for (k, v) in &r.headers {
            req = req.header(*k, v);
        }
        if r.path.starts_with("/webhooks/shopify/") {
            // Shopify stamps each delivery with when it was triggered; rendered
            // deliveries carry historic event times, so the stamp is the send time.
            req = req.header(
                "x-shopify-triggered-at",
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            );
        }
        match req.send().await {
            Err(e) => last = format!("transport: {e}"),
            Ok(resp) => {
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                if status.is_success() {
                    return (
                        Outcome::Accepted {
                            duplicates: duplicates(r.kind, &text),
                        },
                        u64::from(attempt),
                    );
                }
                let reason = format!("{} {}", status.as_u16(), text.trim());
                if status.is_server_error() || status.as_u16() == 429 {
                    last = reason;
                } else {
                    return (Outcome::Refused(reason), u64::from(attempt));
                }
            }
        }
    }
    (
        Outcome::Refused(format!("gave up after {attempts} attempts: {last}")),
        u64::from(attempts.saturating_sub(1)),
    )
}

/// How many of a request's deliveries ingest said it already had.
fn duplicates(kind: Kind, body: &str) -> u64 {
    let json: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    match kind {
        Kind::Webhook => u64::from(json["duplicate"].as_bool().unwrap_or(false)),
        Kind::Bills => json["duplicates"].as_u64().unwrap_or(0),
        // Twilio answers TwiML and the tracking API `{"success": true}`: neither says.
        Kind::Twilio | Kind::Segment => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::render::Endpoint;

    fn delivery(source: Source, payload: Payload) -> Delivery {
        Delivery {
            source,
            key: Uuid::new_v4().to_string(),
            person: 1,
            at: Utc::now(),
            payload,
        }
    }

    #[test]
    fn the_pacer_spreads_deliveries_evenly_and_never_bursts_to_catch_up() {
        let pacer = Pacer::new(10.0);
        let t0 = Instant::now();
        assert_eq!(pacer.reserve(t0, 1), t0);
        // The first delivery took 100 ms of the schedule; a batch of 5 goes after it
        // and holds the next request back by 500 ms.
        assert_eq!(pacer.reserve(t0, 5), t0 + Duration::from_millis(100));
        assert_eq!(pacer.reserve(t0, 1), t0 + Duration::from_millis(600));
        // A lane that comes back late (a slow answer) is not owed the time it lost.
        let late = t0 + Duration::from_secs(10);
        assert_eq!(pacer.reserve(late, 1), late);
        assert_eq!(pacer.reserve(late, 1), late + Duration::from_millis(100));
    }

    #[test]
    fn a_lane_may_run_ahead_of_the_earliest_lane_by_the_skew_and_no_further() {
        let t0 = Utc::now();
        let hours = |h| t0 + TimeDelta::hours(h);
        let w = Watermark::new(
            vec![Some(hours(0)), Some(hours(5)), None],
            TimeDelta::hours(2),
        );
        // Lane 1 is 5 h ahead of lane 0: it waits; lane 0, the earliest, may always go.
        assert!(!w.advance(1, Some(hours(5))));
        assert!(w.advance(0, Some(hours(0))));
        // Lane 0 moves on: lane 1 may go once it is within 2 h of it, exactly at the edge.
        assert!(w.advance(0, Some(hours(3))));
        assert!(w.advance(1, Some(hours(5))));
        assert!(!w.advance(1, Some(hours(6))));
        // Lane 0 is done: the earliest is lane 1's own time, and it goes on alone.
        assert!(w.advance(0, None));
        assert!(w.advance(1, Some(hours(100))));
        // A lane that starts with nothing to send holds nobody back.
        assert!(w.advance(2, None));
    }

    /// Deliveries of two people, one an hour apart each, to a server that answers the
    /// first person's requests slowly: without the watermark the second person's lane
    /// would send its whole day before the first one's second hour.
    #[tokio::test]
    async fn a_slow_lane_holds_the_others_back_by_the_skew_in_event_time() {
        use axum::extract::{Path, State};

        type Arrivals = std::sync::Arc<Mutex<Vec<(String, i64)>>>;
        async fn answer(
            State(arrivals): State<Arrivals>,
            Path((speed, hour)): Path<(String, i64)>,
        ) -> &'static str {
            if speed == "slow" {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            arrivals.lock().unwrap().push((speed, hour));
            "{}"
        }
        let arrivals = Arrivals::default();
        let app = axum::Router::new()
            .route("/{speed}/{hour}", axum::routing::post(answer))
            .with_state(arrivals.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });

        let t0 = Utc::now();
        let mut deliveries = Vec::new();
        for hour in 0..24 {
            for (person, speed) in [(0, "slow"), (1, "fast")] {
                let mut d = delivery(
                    Source::Shopify,
                    Payload::Single {
                        path: format!("/{speed}/{hour}"),
                        headers: vec![],
                        body: b"{}".to_vec(),
                    },
                );
                d.person = person;
                d.at = t0 + TimeDelta::hours(hour);
                deliveries.push(d);
            }
        }
        let opts = SendOptions {
            ingest_url: format!("http://{addr}"),
            concurrency: 2,
            lane_skew: TimeDelta::hours(2),
            ..SendOptions::default()
        };
        let (report, accepted) =
            send(&reqwest::Client::new(), &opts, &endpoints(), &deliveries).await;
        assert_eq!(report.accepted, 48);
        assert!(accepted.iter().all(|a| *a));
        let arrivals = arrivals.lock().unwrap().clone();
        assert_eq!(arrivals.len(), 48);
        // Every delivery happened at most the skew before one that arrived ahead of it.
        let mut latest = i64::MIN;
        for (speed, hour) in &arrivals {
            assert!(
                latest - hour <= 2,
                "{speed} hour {hour} arrived after hour {latest}: {arrivals:?}"
            );
            latest = latest.max(*hour);
        }
    }

    fn endpoints() -> Endpoints {
        Endpoints {
            shopify: Endpoint {
                id: Uuid::nil(),
                secret: "s".into(),
            },
            woocommerce: Endpoint {
                id: Uuid::nil(),
                secret: "w".into(),
            },
            twilio: Endpoint {
                id: Uuid::nil(),
                secret: "t".into(),
            },
            segment: Endpoint {
                id: Uuid::nil(),
                secret: "key".into(),
            },
            pos: Endpoint {
                id: Uuid::from_u128(9),
                secret: "tok".into(),
            },
            public_base_url: "http://x".into(),
        }
    }

    #[test]
    fn a_lane_keeps_order_and_folds_runs_of_messages_and_bills() {
        let ep = endpoints();
        let msg = || delivery(Source::Segment, Payload::Segment(json!({"type": "page"})));
        let bill = || delivery(Source::Pos, Payload::Bill(json!({"bill_no": "1"})));
        let hook = || {
            delivery(
                Source::Shopify,
                Payload::Single {
                    path: "/webhooks/shopify/x".into(),
                    headers: vec![],
                    body: b"{}".to_vec(),
                },
            )
        };
        let deliveries = vec![msg(), msg(), msg(), hook(), bill(), bill(), msg(), bill()];
        let opts = SendOptions {
            segment_batch: 2,
            ..SendOptions::default()
        };
        let all: Vec<usize> = (0..deliveries.len()).collect();
        let reqs = requests(&opts, &ep, &deliveries, &all);
        let shape: Vec<(&str, Vec<usize>)> = reqs
            .iter()
            .map(|r| (r.path.as_str(), r.members.clone()))
            .collect();
        let bills = format!("/pos/{}/bills", Uuid::from_u128(9));
        assert_eq!(
            shape,
            vec![
                ("/v1/batch", vec![0, 1]),
                ("/v1/batch", vec![2]),
                ("/webhooks/shopify/x", vec![3]),
                (bills.as_str(), vec![4, 5]),
                ("/v1/batch", vec![6]),
                (bills.as_str(), vec![7]),
            ]
        );
        let body: Value = serde_json::from_slice(&reqs[0].body).unwrap();
        assert_eq!(body["batch"].as_array().unwrap().len(), 2);
        assert!(
            reqs[0]
                .headers
                .iter()
                .any(|(k, v)| *k == "authorization" && v == "Basic a2V5Og==")
        );
    }
}
