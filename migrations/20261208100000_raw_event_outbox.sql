-- The events.raw outbox as a narrow table of its own (issue 19). Ingest inserts a row
-- here with every new raw event, in the same statement, and deletes it once the event
-- is on events.raw. Before, the outbox was customer_raw_event.published_at IS NULL, and
-- marking an event published rewrote the wide raw row (payload and all) with a new
-- entry in each of its indexes, for every event.
-- Raw ids are UUIDv7 (arrival order): the relay reads the oldest first through the key.
CREATE TABLE raw_event_outbox (
    id          UUID PRIMARY KEY,
    received_at TIMESTAMPTZ NOT NULL
);
INSERT INTO raw_event_outbox (id, received_at)
    SELECT id, received_at FROM customer_raw_event WHERE published_at IS NULL;
DROP INDEX customer_raw_event_outbox;
ALTER TABLE customer_raw_event DROP COLUMN published_at;
