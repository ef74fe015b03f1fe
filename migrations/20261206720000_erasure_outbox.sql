-- Erasure that holds.
--
-- `api_merge_requests` becomes the outbox of `profiles.merge_requests`: the api-gateway
-- stores each analyst's request (the envelope it publishes) in the same transaction as
-- its record, publishes it after commit, and its outbox relay publishes whatever is
-- still unpublished (Redis down, a crash in between). The merger stamps `done_at` once
-- it applied the request; `ctl republish` hands undone requests back to the relay.
ALTER TABLE api_merge_requests
    ADD COLUMN envelope     JSONB,
    ADD COLUMN published_at TIMESTAMPTZ,
    ADD COLUMN done_at      TIMESTAMPTZ;
-- Rows written before this migration were published in their own transaction.
UPDATE api_merge_requests SET published_at = requested_at, done_at = requested_at;
CREATE INDEX api_merge_requests_unpublished ON api_merge_requests (requested_at)
    WHERE published_at IS NULL;
CREATE INDEX api_merge_requests_undone ON api_merge_requests (requested_at)
    WHERE done_at IS NULL;

-- One row per erased person, written in the erase's own transaction: the profiles and
-- events whose traces the merger still has to remove from Redis (stream entries, dead
-- letters, the Customer 360 cache, where it leaves a tombstone). Only ids, never an
-- identifier: what the person held is in `suppression`, hashed. `scrubbed_at` is set
-- once Redis holds nothing of theirs; until then a redelivered or republished erase
-- request scrubs again.
CREATE TABLE erasure (
    profile_id  UUID PRIMARY KEY,
    profile_ids UUID[] NOT NULL,
    event_ids   UUID[] NOT NULL,
    erased_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    scrubbed_at TIMESTAMPTZ
);
