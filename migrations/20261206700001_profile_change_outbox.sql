-- Profiles waiting to be published on `profiles.changes`: one row per profile, written
-- in the same transaction as the change (identity merger: created, updated, merged,
-- erased; ml-inference: predicted), so a crash never loses one. The relays of both
-- services publish rows and delete each only if it did not change after being read.
CREATE TABLE profile_change_outbox (
    profile_id UUID PRIMARY KEY,
    change     TEXT NOT NULL CHECK (change IN ('created', 'updated', 'merged', 'erased', 'predicted')),
    changed_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX profile_change_outbox_changed ON profile_change_outbox (changed_at);
