-- The raw events' received_at index, a block-range index instead of a B-tree
-- (issue 19: Postgres CPU and WAL per event).
--
-- Ingest stores every event once in customer_raw_event, and every row wrote an entry
-- into customer_raw_event_received (received_at). Only two statements read received_at
-- there, neither on the hot path: `ctl republish --hours N` (the raw events received in
-- the last N hours) and the pipeline benchmark's drain count (the events received since
-- the load began). Rows are stored in the order they are received (ingest stamps
-- received_at when a delivery arrives), so a BRIN index — the smallest and largest
-- received_at of each range of 128 heap pages — finds the same rows by reading only the
-- ranges that can hold them. An insert does not write it: the range being filled is
-- summarised by (auto)vacuum once it is complete, and until then every range scan
-- reads it whole.
DROP INDEX IF EXISTS customer_raw_event_received;
CREATE INDEX customer_raw_event_received ON customer_raw_event USING brin (received_at);
