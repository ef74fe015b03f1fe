-- When each queued prediction request last changed: the relay deletes a row only if it
-- did not change after being read, so a change that lands while its request is being
-- published is published again, never lost.
ALTER TABLE identity_prediction_outbox
    ADD COLUMN changed_at TIMESTAMPTZ NOT NULL DEFAULT now();
