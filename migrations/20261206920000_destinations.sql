-- Destinations: CRMs and REST endpoints kept in sync with Customer 360 (docs/destinations.md).
-- Each destination has its own queue of pending profiles, its own record of what the
-- remote accepted, its own dead letters and its own delivery log, so one destination
-- being slow or down never holds up another.

CREATE TABLE destinations (
    id            UUID PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
    kind          TEXT NOT NULL CHECK (kind IN ('hubspot', 'salesforce', 'rest')),
    -- Settings that are not secret (URLs, batch size, rate, key property ...), as JSON.
    config        JSONB NOT NULL DEFAULT '{}',
    -- Credentials (token, client secret, signing secret) as JSON, sealed with
    -- INTEGRATION_SECRETS_KEY and bound to the row's id, like integration secrets.
    credentials   BYTEA NOT NULL,
    -- Remote field <- Customer 360 field.
    mapping       JSONB NOT NULL,
    -- `upsert`: add and update only; `mirror`: also remove profiles that leave the audience.
    mode          TEXT NOT NULL DEFAULT 'upsert' CHECK (mode IN ('upsert', 'mirror')),
    -- Which profiles: every live profile (NULL) or the current members of an audience.
    audience_id   UUID REFERENCES audiences (id) ON DELETE RESTRICT,
    enabled       BOOLEAN NOT NULL DEFAULT TRUE,
    -- Bumped on every change of settings, credentials or mapping: workers reload.
    version       BIGINT NOT NULL DEFAULT 1,
    -- Last audience_membership_change id turned into queue entries (audience destinations).
    membership_cursor BIGINT NOT NULL DEFAULT 0,
    created_by    TEXT,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_success_at TIMESTAMPTZ,
    CHECK (mode = 'upsert' OR audience_id IS NOT NULL)
);

-- Profiles waiting to be sent, per destination. A worker leases rows (FOR UPDATE SKIP
-- LOCKED), sends, then deletes only rows whose enqueued_at did not move meanwhile, so a
-- change landing during a send is sent again.
CREATE TABLE destination_queue (
    destination_id UUID NOT NULL REFERENCES destinations (id) ON DELETE CASCADE,
    profile_id     UUID NOT NULL,
    enqueued_at    TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    -- Not tried before this (backoff after a transient failure).
    not_before     TIMESTAMPTZ NOT NULL DEFAULT '-infinity',
    -- Held by a worker until then (a crashed worker's lease lapses).
    leased_until   TIMESTAMPTZ,
    attempts       INT NOT NULL DEFAULT 0,
    first_failed_at TIMESTAMPTZ,
    last_error     TEXT,
    PRIMARY KEY (destination_id, profile_id)
);
CREATE INDEX destination_queue_due ON destination_queue (destination_id, not_before, enqueued_at);

-- What the remote last accepted per destination and profile: the hash of the mapped
-- record (unchanged records are not sent again), the key it was sent under and the
-- remote's own id for it (used for merges and deletes).
CREATE TABLE destination_state (
    destination_id UUID NOT NULL REFERENCES destinations (id) ON DELETE CASCADE,
    profile_id     UUID NOT NULL,
    record_hash    BYTEA NOT NULL,
    remote_key     TEXT NOT NULL,
    remote_id      TEXT,
    synced_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (destination_id, profile_id)
);

-- Profiles the remote refused for good (4xx other than 429, per-record errors), or that
-- stayed failing past DESTINATION_RETRY_WINDOW_SECS: replayable after the cause is fixed.
CREATE TABLE destination_dead_letters (
    id             BIGSERIAL PRIMARY KEY,
    destination_id UUID NOT NULL REFERENCES destinations (id) ON DELETE CASCADE,
    profile_id     UUID NOT NULL,
    operation      TEXT NOT NULL,
    error          TEXT NOT NULL,
    failed_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    replayed_at    TIMESTAMPTZ
);
CREATE INDEX destination_dead_letters_open
    ON destination_dead_letters (destination_id, id) WHERE replayed_at IS NULL;

-- Every request made to a destination: summaries only, never credentials or records.
CREATE TABLE destination_deliveries (
    id             BIGSERIAL PRIMARY KEY,
    destination_id UUID NOT NULL REFERENCES destinations (id) ON DELETE CASCADE,
    at             TIMESTAMPTZ NOT NULL DEFAULT now(),
    operation      TEXT NOT NULL,
    records        INT NOT NULL,
    status         INT,
    outcome        TEXT NOT NULL CHECK (outcome IN ('ok', 'partial', 'transient', 'permanent')),
    request        TEXT NOT NULL,
    response       TEXT NOT NULL,
    duration_ms    INT NOT NULL
);
CREATE INDEX destination_deliveries_recent ON destination_deliveries (destination_id, id DESC);
