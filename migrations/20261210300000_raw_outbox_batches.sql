-- The events.raw outbox takes one row per stored batch (issue 19). Ingest's group-commit
-- INSERT queued one raw_event_outbox row per new raw event and its publisher deleted each
-- after XADD: an index insert, an index delete and their WAL for every event. Now the
-- same statement queues one row per batch (keyed by the batch's smallest event id, with
-- every new event id of the batch in event_ids); the publisher deletes that one row. The
-- outbox relay turns batch rows older than its grace period back into raw_event_outbox
-- rows (one statement, so nothing is lost in between) and publishes those as before;
-- `ctl republish` still queues single events in raw_event_outbox.
CREATE TABLE raw_event_outbox_batch (
    id          UUID PRIMARY KEY,
    received_at TIMESTAMPTZ NOT NULL,
    event_ids   UUID[] NOT NULL
);

-- Every raw event still waiting to be published, whichever table queues it (counts for
-- `ctl demo`, metrics and tests).
CREATE VIEW raw_event_outbox_events AS
    SELECT id FROM raw_event_outbox
    UNION ALL
    SELECT unnest(event_ids) AS id FROM raw_event_outbox_batch;
