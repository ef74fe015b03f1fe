//! The `events.raw` consumer: maps each raw event, writes the batch's orders and
//! products, then publishes the normalised events on `events.normalized` (the identity
//! merger stores each event's row, attached).
//!
//! - An event that cannot be mapped (unknown kind, payload missing what the mapping
//!   needs) is permanent: it goes to the dead-letter stream with the reason.
//! - The batch is written in one transaction; if that fails for the data (not an
//!   outage), each event is retried in a transaction of its own so one poisoned event
//!   cannot hold back the rest. Each failure is answered by its class
//!   (`service_kit::handler_error`): Postgres refusing an event's data dead-letters that
//!   event, an outage is held and retried without counting a delivery.
//! - Publishing happens after the commit. If it fails, the deliveries are retried: the
//!   writes are idempotent and the events are published again (at least once).
//! - Identifier values that do not parse are dropped and counted by kind and reason
//!   (`normalizer_identifiers_dropped_total`); events whose order could not be recorded
//!   (an `Order Completed` without a currency and no `DEFAULT_CURRENCY`) are kept with
//!   the reason and counted (`normalizer_orders_not_recorded_total`).

use std::sync::Arc;

use ingestion::normalize;
use ingestion::raw_event::RawPayload;
use ingestion::sources::{Dropped, MapError, segment};
use sqlx::PgPool;
use storage::fault::Fault;
use storage::normalized::{self, EventWrite};
use streams::{Delivery, Envelope, Handler, HandlerError, Streams, Topic};

/// Maps `events.raw` to normalised events.
pub struct RawEventHandler {
    /// Pool the normalised events are written through.
    pub db: PgPool,
    /// Where normalised events are published.
    pub streams: Streams,
    /// `DEFAULT_PHONE_REGION`.
    pub region: Arc<str>,
}

#[async_trait::async_trait]
impl Handler for RawEventHandler {
    type Payload = RawPayload;

    async fn handle(&self, batch: &[Delivery<RawPayload>]) -> Vec<Result<(), HandlerError>> {
        let mut results: Vec<Result<(), HandlerError>> = Vec::with_capacity(batch.len());
        // What each mappable event writes, and the identifier values it dropped.
        let mut mapped: Vec<(EventWrite, Vec<Dropped>)> = Vec::new();
        let mut positions: Vec<usize> = Vec::new();
        for (i, delivery) in batch.iter().enumerate() {
            match map(&delivery.envelope, &self.region) {
                Ok(m) => {
                    mapped.push(m);
                    positions.push(i);
                    results.push(Ok(()));
                }
                Err(e) => {
                    metrics::counter!("normalizer_unmappable_total", "source" => delivery.envelope.source.clone())
                        .increment(1);
                    tracing::warn!(event_id = %delivery.envelope.id, error = %e, "raw event cannot be mapped");
                    results.push(Err(HandlerError::Permanent(e.to_string())));
                }
            }
        }
        if mapped.is_empty() {
            return results;
        }

        let (mut writes, mut dropped): (Vec<EventWrite>, Vec<Vec<Dropped>>) =
            mapped.into_iter().unzip();
        if let Err(e) = normalized::write_batch_leaving_events(&self.db, &mut writes).await {
            if storage::fault::classify(&e) == Fault::Transient {
                // An outage fails every event alike: no point in trying them one by one.
                tracing::warn!(error = %e, events = writes.len(), "batch write failed: database outage");
                for &pos in &positions {
                    results[pos] = Err(service_kit::handler_error(&e));
                }
                return results;
            }
            tracing::warn!(error = %e, events = writes.len(), "batch write failed; writing events one by one");
            let mut written = Vec::new();
            let mut written_dropped = Vec::new();
            let mut written_positions = Vec::new();
            for ((w, d), pos) in writes.into_iter().zip(dropped).zip(positions) {
                let mut one = [w];
                match normalized::write_batch_leaving_events(&self.db, &mut one).await {
                    Ok(_) => {
                        let [w] = one;
                        written.push(w);
                        written_dropped.push(d);
                        written_positions.push(pos);
                    }
                    Err(e) => {
                        tracing::warn!(event_id = %batch[pos].envelope.id, error = %e, "writing a normalised event failed");
                        results[pos] = Err(service_kit::handler_error(&e));
                    }
                }
            }
            writes = written;
            dropped = written_dropped;
            positions = written_positions;
        }

        let envelopes: Vec<Envelope<&domain::NormalizedEvent>> = writes
            .iter()
            .filter_map(|w| w.event.as_ref())
            .map(|ev| Envelope {
                v: streams::ENVELOPE_VERSION,
                id: ev.event_id,
                source: ev.source.as_str().to_owned(),
                kind: ev.event_type.as_str().to_owned(),
                received_at: ev.received_at,
                occurred_at: Some(ev.occurred_at),
                payload: ev,
            })
            .collect();
        if let Err(e) = self
            .streams
            .publish_many(Topic::EventsNormalized, &envelopes)
            .await
        {
            tracing::warn!(error = %e, "publishing normalised events failed; the batch will be retried");
            for &pos in &positions {
                results[pos] = Err(service_kit::handler_error(&e));
            }
            return results;
        }
        for (w, d) in writes.iter().zip(&dropped) {
            count(w, d);
            if let Some(ev) = &w.event {
                tracing::debug!(event_id = %ev.event_id, source = ev.source.as_str(), event_type = ev.event_type.as_str(), "event normalised");
            }
        }
        results
    }
}

fn map(env: &Envelope<RawPayload>, region: &str) -> Result<(EventWrite, Vec<Dropped>), MapError> {
    let normalized = normalize::normalize_envelope(env, region)?;
    let source = env
        .source
        .parse()
        .map_err(|_| MapError::Unsupported(format!("source `{}`", env.source)))?;
    let occurred_at = normalized
        .event
        .as_ref()
        .map_or(env.occurred_at.unwrap_or(env.received_at), |e| {
            e.occurred_at
        });
    Ok((
        EventWrite {
            event_id: env.id,
            source,
            occurred_at,
            event: normalized.event,
            order: normalized.order,
            products: normalized.products,
        },
        normalized.dropped,
    ))
}

fn count(write: &EventWrite, dropped: &[Dropped]) {
    for d in dropped {
        metrics::counter!(
            "normalizer_identifiers_dropped_total",
            "kind" => d.kind.as_str(),
            "reason" => d.reason
        )
        .increment(1);
    }
    if let Some(ev) = &write.event {
        metrics::counter!(
            "normalizer_events_total",
            "source" => ev.source.as_str(),
            "type" => ev.event_type.as_str()
        )
        .increment(1);
        if ev.properties.contains_key(segment::ORDER_NOT_RECORDED) {
            metrics::counter!("normalizer_orders_not_recorded_total", "source" => ev.source.as_str())
                .increment(1);
        }
    }
}
