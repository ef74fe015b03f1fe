//! Throughput of the streams runtime against this machine's own Redis limits, measured
//! in the same run: publishing through `Streams::publish_many` versus raw pipelined
//! `XADD`s of the same bodies, and consuming through `run_consumer` (no-op handler; with
//! and without read-ahead) versus a raw `XREADGROUP` + `XACK` loop. Prints entries per
//! second and the ratios.
//!
//! Run with `bench/streams/run.sh [ENTRIES]` (default 50 000). Uses a random key prefix
//! on `REDIS_URL` (default `redis://127.0.0.1:6379`) and deletes it afterwards.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use streams::{ConsumerOptions, Delivery, Envelope, Handler, HandlerError, Streams, Topic};
use tokio_util::sync::CancellationToken;

const BATCH: usize = 256;

fn envelopes(n: usize) -> Vec<Envelope<serde_json::Value>> {
    (0..n)
        .map(|i| {
            Envelope::new(
                uuid::Uuid::new_v4(),
                "bench",
                "orders/create",
                serde_json::json!({
                    "order_id": i,
                    "email": format!("person{i}@example.com"),
                    "total": "129.90",
                    "items": [{"sku": "SKU-1", "qty": 2, "price": "64.95"}],
                }),
            )
        })
        .collect()
}

/// Raw pipelined `XADD`s of pre-encoded bodies: the Redis + client limit.
/// With `maxlen`, each `XADD` also trims (`MAXLEN ~`), as the runtime's do.
async fn raw_publish(
    conn: &mut ConnectionManager,
    key: &str,
    bodies: &[String],
    maxlen: Option<usize>,
) -> Duration {
    let start = Instant::now();
    for chunk in bodies.chunks(BATCH) {
        let mut pipe = redis::pipe();
        for b in chunk {
            let cmd = pipe.cmd("XADD").arg(key);
            if let Some(m) = maxlen {
                cmd.arg("MAXLEN").arg("~").arg(m);
            }
            cmd.arg("*").arg("e").arg(b).ignore();
        }
        let () = pipe.query_async(conn).await.expect("raw XADD");
    }
    start.elapsed()
}

/// Raw `XREADGROUP COUNT 256` + `XACK` until `n` entries are acked.
async fn raw_consume(conn: &mut ConnectionManager, key: &str, n: usize) -> Duration {
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(key)
        .arg("raw")
        .arg("0")
        .query_async(conn)
        .await
        .expect("group");
    let start = Instant::now();
    let mut done = 0;
    while done < n {
        let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("raw")
            .arg("c")
            .arg("COUNT")
            .arg(BATCH)
            .arg("STREAMS")
            .arg(key)
            .arg(">")
            .query_async(conn)
            .await
            .expect("read");
        let ids: Vec<String> = reply
            .keys
            .into_iter()
            .flat_map(|k| k.ids)
            .map(|e| e.id)
            .collect();
        if ids.is_empty() {
            break;
        }
        let _: i64 = redis::cmd("XACK")
            .arg(key)
            .arg("raw")
            .arg(&ids)
            .query_async(conn)
            .await
            .expect("ack");
        done += ids.len();
    }
    start.elapsed()
}

struct Count(AtomicU64);

#[async_trait::async_trait]
impl Handler for Count {
    type Payload = serde_json::Value;

    async fn handle(&self, batch: &[Delivery<serde_json::Value>]) -> Vec<Result<(), HandlerError>> {
        self.0.fetch_add(batch.len() as u64, Ordering::Relaxed);
        batch.iter().map(|_| Ok(())).collect()
    }
}

/// `run_consumer` over the topic until every entry is acked by group `group`, reading
/// ahead or not.
async fn runtime_consume(
    streams: &Streams,
    conn: &mut ConnectionManager,
    n: usize,
    group: &str,
    read_ahead: bool,
) -> Duration {
    let handler = Arc::new(Count(AtomicU64::new(0)));
    let token = CancellationToken::new();
    let opts = ConsumerOptions {
        group: group.into(),
        consumer: "bench".into(),
        batch_size: BATCH,
        block: Duration::from_millis(100),
        max_deliveries: 5,
        claim_idle: Duration::from_secs(30),
        read_ahead,
    };
    let start = Instant::now();
    let task = tokio::spawn(streams::run_consumer(
        streams.clone(),
        Topic::EventsRaw,
        opts,
        handler.clone(),
        token.clone(),
    ));
    // Done when the handler has seen all and nothing is left pending.
    loop {
        if handler.0.load(Ordering::Relaxed) as usize >= n {
            let pending: redis::streams::StreamPendingReply = redis::cmd("XPENDING")
                .arg(streams.key(Topic::EventsRaw))
                .arg(group)
                .query_async(conn)
                .await
                .expect("pending");
            if pending.count() == 0 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = start.elapsed();
    token.cancel();
    task.await.expect("join").expect("consumer");
    elapsed
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(50_000);
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("bench-{}:", uuid::Uuid::new_v4().simple());
    let streams = Streams::connect(&url, prefix.clone(), n * 2).await?;
    let mut conn = streams::managed_connection(redis::Client::open(url.as_str())?).await?;

    let envs = envelopes(n);
    let bodies: Vec<String> = envs
        .iter()
        .map(serde_json::to_string)
        .collect::<Result<_, _>>()?;
    let body_bytes = bodies.iter().map(String::len).sum::<usize>() / n;

    let raw_key = format!("{prefix}raw");
    let raw_pub = raw_publish(&mut conn, &raw_key, &bodies, None).await;
    let trim_key = format!("{prefix}raw-trimmed");
    let raw_trim_pub = raw_publish(&mut conn, &trim_key, &bodies, Some(n * 2)).await;
    let start = Instant::now();
    for chunk in envs.chunks(BATCH) {
        streams.publish_many(Topic::EventsRaw, chunk).await?;
    }
    let rt_pub = start.elapsed();

    // The CPU part alone: decoding every body as a consumer does.
    let start = Instant::now();
    for b in &bodies {
        let env: Envelope<serde_json::Value> = serde_json::from_str(b)?;
        std::hint::black_box(env);
    }
    let decode = start.elapsed();

    let raw_con = raw_consume(&mut conn, &raw_key, n).await;
    let rt_con = runtime_consume(&streams, &mut conn, n, "runtime", true).await;
    let serial_con = runtime_consume(&streams, &mut conn, n, "serial", false).await;

    println!("streams throughput: {n} entries of ~{body_bytes} B, batches of {BATCH}");
    println!(
        "  publish  raw XADD pipeline   {:>10.0} entries/s",
        rate(n, raw_pub)
    );
    println!(
        "  publish  raw XADD MAXLEN ~     {:>8.0} entries/s  = {:.2} x raw",
        rate(n, raw_trim_pub),
        raw_pub.as_secs_f64() / raw_trim_pub.as_secs_f64()
    );
    println!(
        "  publish  Streams::publish_many {:>8.0} entries/s  = {:.2} x raw",
        rate(n, rt_pub),
        raw_pub.as_secs_f64() / rt_pub.as_secs_f64()
    );
    println!(
        "  consume  raw XREADGROUP+XACK {:>10.0} entries/s",
        rate(n, raw_con)
    );
    println!(
        "  consume  run_consumer (no-op)  {:>8.0} entries/s  = {:.2} x raw",
        rate(n, rt_con),
        raw_con.as_secs_f64() / rt_con.as_secs_f64()
    );
    println!(
        "  consume  without read-ahead    {:>8.0} entries/s  = {:.2} x raw",
        rate(n, serial_con),
        raw_con.as_secs_f64() / serial_con.as_secs_f64()
    );
    println!(
        "  (decoding alone, no I/O       {:>8.0} entries/s)",
        rate(n, decode)
    );
    test_support::delete_prefix(&prefix).await?;
    Ok(())
}
