-- Identity resolution state, kept by the identity merger (docs/identity.md).
-- Profiles are what processing every event in canonical order (occurred_at, event_id)
-- gives; these tables let the merger apply each new event incrementally and replay a
-- region in that order when an event arrives late or an identifier turns out shared.

-- Canonical position of each profile's first and latest event (the survivor of a merge
-- is the profile with the earliest first event; a late event replays its region), and
-- the first names the name guard compares.
ALTER TABLE customer_profile
    ADD COLUMN first_event_at TIMESTAMPTZ,
    ADD COLUMN first_event_id UUID,
    ADD COLUMN last_event_at  TIMESTAMPTZ,
    ADD COLUMN last_event_id  UUID,
    ADD COLUMN name_keys      TEXT[] NOT NULL DEFAULT '{}';

-- Every identifier the merger has seen, owned or not: the latest event that carried it,
-- the distinct strong/medium identifiers it was seen with (64-bit keys per kind, capped
-- just above the suspect threshold, so no values are copied here), and whether that
-- made it suspect (shared by many people: links nothing).
CREATE TABLE identity_identifier (
    kind          TEXT NOT NULL,
    value         TEXT NOT NULL,
    last_event_at TIMESTAMPTZ NOT NULL,
    last_event_id UUID NOT NULL,
    partners      JSONB NOT NULL DEFAULT '{}'::jsonb,
    suspect       BOOLEAN NOT NULL DEFAULT FALSE,
    suspect_since TIMESTAMPTZ,
    PRIMARY KEY (kind, value)
);
CREATE INDEX identity_identifier_suspect ON identity_identifier (kind, value) WHERE suspect;

-- Events that carry an identifier their profile does not hold (owned by someone else,
-- over a limit, separated by an analyst): a replay of the identifier's region must
-- include these events' profiles too.
CREATE TABLE identity_refused_link (
    kind     TEXT NOT NULL,
    value    TEXT NOT NULL,
    event_id UUID NOT NULL,
    reason   TEXT NOT NULL,
    PRIMARY KEY (kind, value, event_id)
);
CREATE INDEX identity_refused_link_event ON identity_refused_link (event_id);

-- Analysts' decisions as identifier sets (must_link: one person; cannot_link: different
-- people), so replays and rebuilds honour them whatever the profile ids become.
CREATE TABLE identity_constraint (
    id                UUID PRIMARY KEY,
    rule              TEXT NOT NULL CHECK (rule IN ('must_link', 'cannot_link')),
    left_identifiers  JSONB NOT NULL,
    right_identifiers JSONB NOT NULL,
    origin            TEXT NOT NULL,
    origin_id         UUID,
    actor             TEXT NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE identity_constraint_member (
    kind          TEXT NOT NULL,
    value         TEXT NOT NULL,
    constraint_id UUID NOT NULL REFERENCES identity_constraint (id) ON DELETE CASCADE,
    PRIMARY KEY (kind, value, constraint_id)
);

-- Profiles waiting to be published on predictions.requests. One row per profile, due a
-- debounce interval after its first unpublished change: many changes, one request.
-- Written in the same transaction as the change, so a crash never loses a request.
CREATE TABLE identity_prediction_outbox (
    profile_id UUID PRIMARY KEY,
    due_at     TIMESTAMPTZ NOT NULL
);
CREATE INDEX identity_prediction_outbox_due ON identity_prediction_outbox (due_at);

-- A replay re-raises the review items of the events it replays: one item per triggering
-- event and reason.
CREATE UNIQUE INDEX manual_merge_queue_trigger_reason
    ON manual_merge_queue (trigger_event_id, reason) WHERE trigger_event_id IS NOT NULL;
