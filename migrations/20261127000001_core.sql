-- The one schema every ConstIntel service shares. Postgres is the system of record;
-- Redis holds nothing that cannot be rebuilt from these tables.
-- Applied migrations are never edited: later changes come as new files.

-- Configured sources (one Shopify store, one POS estate, one Segment write key, ...).
CREATE TABLE integrations (
    id               UUID PRIMARY KEY,
    kind             TEXT NOT NULL CHECK (kind IN ('shopify', 'woocommerce', 'twilio', 'segment', 'pos', 'csv')),
    name             TEXT NOT NULL,
    -- HMAC secret (Shopify/Woo), auth token (Twilio), write key (Segment), bearer token (POS).
    secret           TEXT NOT NULL,
    -- SHA-256 of `secret`, written with it: ingest finds an integration by write key or
    -- bearer token through this index without comparing secrets in SQL.
    secret_sha256    BYTEA NOT NULL,
    enabled          BOOLEAN NOT NULL DEFAULT TRUE,
    settings         JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_delivery_at TIMESTAMPTZ,
    UNIQUE (kind, name)
);
CREATE INDEX integrations_secret_sha256 ON integrations (secret_sha256);

-- Every delivery attempt per integration, for the Integrations page.
CREATE TABLE connection_logs (
    id             BIGSERIAL PRIMARY KEY,
    integration_id UUID REFERENCES integrations (id) ON DELETE CASCADE,
    at             TIMESTAMPTZ NOT NULL DEFAULT now(),
    endpoint       TEXT NOT NULL,
    status         SMALLINT NOT NULL,
    latency_ms     REAL NOT NULL,
    error          TEXT,
    raw_event_id   UUID
);
CREATE INDEX connection_logs_integration_at ON connection_logs (integration_id, at DESC);

-- Every accepted delivery, stored once before ingest answers 2xx.
-- (source, source_event_id) deduplicates redeliveries; published_at IS NULL is the outbox.
CREATE TABLE customer_raw_event (
    id              UUID PRIMARY KEY,
    integration_id  UUID REFERENCES integrations (id) ON DELETE SET NULL,
    source          TEXT NOT NULL,
    source_event_id TEXT NOT NULL,
    kind            TEXT NOT NULL,
    received_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    occurred_at     TIMESTAMPTZ,
    headers         JSONB NOT NULL DEFAULT '{}'::jsonb,
    payload         JSONB NOT NULL,
    published_at    TIMESTAMPTZ,
    UNIQUE (source, source_event_id)
);
CREATE INDEX customer_raw_event_outbox ON customer_raw_event (received_at) WHERE published_at IS NULL;
CREATE INDEX customer_raw_event_received ON customer_raw_event (received_at);

-- One row per person. Merged-away profiles stay as tombstones pointing at the survivor.
CREATE TABLE customer_profile (
    id                UUID PRIMARY KEY,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    merged_into       UUID REFERENCES customer_profile (id),
    merged_at         TIMESTAMPTZ,
    display_name      TEXT,
    -- Denormalised [{kind, value}] for containment search (GIN, jsonb_path_ops).
    identifiers       JSONB NOT NULL DEFAULT '[]'::jsonb,
    traits            JSONB NOT NULL DEFAULT '{}'::jsonb,
    first_seen_at     TIMESTAMPTZ,
    last_seen_at      TIMESTAMPTZ,
    orders_count      INTEGER NOT NULL DEFAULT 0,
    total_spent       NUMERIC(14, 2) NOT NULL DEFAULT 0,
    currency          TEXT,
    last_order_at     TIMESTAMPTZ,
    channels          TEXT[] NOT NULL DEFAULT '{}',
    category_affinity JSONB NOT NULL DEFAULT '{}'::jsonb,
    -- Further Customer 360 facts kept incrementally by the merger (recent browsing, ...).
    state             JSONB NOT NULL DEFAULT '{}'::jsonb,
    version           BIGINT NOT NULL DEFAULT 0,
    CHECK (merged_into IS NULL OR merged_into <> id)
);
CREATE INDEX customer_profile_identifiers_gin ON customer_profile USING GIN (identifiers jsonb_path_ops);
CREATE INDEX customer_profile_merged_into ON customer_profile (merged_into) WHERE merged_into IS NOT NULL;
CREATE INDEX customer_profile_last_seen ON customer_profile (last_seen_at DESC, id) WHERE merged_into IS NULL;
CREATE INDEX customer_profile_display_name ON customer_profile (lower(display_name)) WHERE merged_into IS NULL;

-- The identifier index: each normalised identifier belongs to at most one live profile.
CREATE TABLE profile_identifier (
    kind          TEXT NOT NULL,
    value         TEXT NOT NULL,
    profile_id    UUID NOT NULL REFERENCES customer_profile (id),
    source        TEXT,
    first_seen_at TIMESTAMPTZ NOT NULL,
    last_seen_at  TIMESTAMPTZ NOT NULL,
    seen_count    BIGINT NOT NULL DEFAULT 1,
    -- Learned to be shared (a store's counter phone): kept, but never merges.
    suspect       BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (kind, value)
);
CREATE INDEX profile_identifier_profile ON profile_identifier (profile_id);

-- Every event in the normalised shape; event_id is the raw event id.
CREATE TABLE normalized_event (
    event_id       UUID PRIMARY KEY,
    occurred_at    TIMESTAMPTZ NOT NULL,
    received_at    TIMESTAMPTZ NOT NULL,
    source         TEXT NOT NULL,
    integration_id UUID,
    channel        TEXT NOT NULL,
    type           TEXT NOT NULL,
    name           TEXT,
    identifiers    JSONB NOT NULL DEFAULT '[]'::jsonb,
    traits         JSONB NOT NULL DEFAULT '{}'::jsonb,
    properties     JSONB NOT NULL DEFAULT '{}'::jsonb,
    order_data     JSONB,
    -- Set by the identity merger when it attaches the event to a profile.
    profile_id     UUID,
    resolved_at    TIMESTAMPTZ
);
CREATE INDEX normalized_event_profile ON normalized_event (profile_id, occurred_at DESC);
CREATE INDEX normalized_event_occurred ON normalized_event (occurred_at);

-- Products and categories seen in orders and views.
CREATE TABLE products (
    sku           TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    category      TEXT,
    price         NUMERIC(14, 2),
    currency      TEXT,
    first_seen_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX products_category ON products (category);

-- Orders as last reported by their source; profile_id set by the merger.
CREATE TABLE orders (
    id                UUID PRIMARY KEY,
    source            TEXT NOT NULL,
    external_order_id TEXT NOT NULL,
    profile_id        UUID,
    event_id          UUID NOT NULL,
    status            TEXT NOT NULL,
    channel           TEXT NOT NULL,
    store             TEXT,
    placed_at         TIMESTAMPTZ NOT NULL,
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    currency          TEXT NOT NULL,
    total             NUMERIC(14, 2) NOT NULL,
    refunded_total    NUMERIC(14, 2) NOT NULL DEFAULT 0,
    UNIQUE (source, external_order_id)
);
CREATE INDEX orders_profile ON orders (profile_id, placed_at DESC);
CREATE INDEX orders_placed ON orders (placed_at);

CREATE TABLE order_items (
    order_id UUID NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    line_no  INTEGER NOT NULL,
    sku      TEXT NOT NULL,
    name     TEXT NOT NULL,
    category TEXT,
    qty      INTEGER NOT NULL,
    price    NUMERIC(14, 2) NOT NULL,
    PRIMARY KEY (order_id, line_no)
);
CREATE INDEX order_items_sku ON order_items (sku);

-- Every merge, with enough of a snapshot to undo it.
CREATE TABLE merge_history (
    id                  UUID PRIMARY KEY,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    survivor_id         UUID NOT NULL,
    absorbed_ids        UUID[] NOT NULL,
    rule                TEXT NOT NULL,
    matched_identifiers JSONB NOT NULL DEFAULT '[]'::jsonb,
    trigger_event_id    UUID,
    snapshot            JSONB NOT NULL DEFAULT '{}'::jsonb,
    actor               TEXT NOT NULL DEFAULT 'identity-merger',
    undone_at           TIMESTAMPTZ,
    undone_by           TEXT
);
CREATE INDEX merge_history_survivor ON merge_history (survivor_id, created_at DESC);
CREATE INDEX merge_history_absorbed ON merge_history USING GIN (absorbed_ids);
CREATE INDEX merge_history_created ON merge_history (created_at DESC, id);

-- Merges too risky to apply automatically, waiting for an analyst.
CREATE TABLE manual_merge_queue (
    id                    UUID PRIMARY KEY,
    created_at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    status                TEXT NOT NULL DEFAULT 'pending'
                          CHECK (status IN ('pending', 'approved', 'rejected', 'applied', 'failed')),
    reason                TEXT NOT NULL,
    candidate_profile_ids UUID[] NOT NULL,
    evidence              JSONB NOT NULL DEFAULT '{}'::jsonb,
    trigger_event_id      UUID,
    decided_at            TIMESTAMPTZ,
    decided_by            TEXT,
    outcome               JSONB
);
CREATE INDEX manual_merge_queue_status ON manual_merge_queue (status, created_at DESC);

-- ML feature store (the latest feature vector per profile and feature-set version).
CREATE TABLE features (
    profile_id          UUID NOT NULL,
    feature_set_version INTEGER NOT NULL,
    as_of               TIMESTAMPTZ NOT NULL,
    values              JSONB NOT NULL,
    computed_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (profile_id, feature_set_version)
);

-- Model registry.
CREATE TABLE model_version (
    id                  UUID PRIMARY KEY,
    task                TEXT NOT NULL CHECK (task IN ('churn', 'ltv', 'segment', 'recommend')),
    algorithm           TEXT NOT NULL,
    params              JSONB NOT NULL DEFAULT '{}'::jsonb,
    feature_set_version INTEGER NOT NULL,
    data_window_start   TIMESTAMPTZ,
    data_window_end     TIMESTAMPTZ,
    train_rows          INTEGER NOT NULL DEFAULT 0,
    test_rows           INTEGER NOT NULL DEFAULT 0,
    metrics             JSONB NOT NULL DEFAULT '{}'::jsonb,
    artefact            TEXT NOT NULL,
    status              TEXT NOT NULL DEFAULT 'candidate'
                        CHECK (status IN ('candidate', 'active', 'retired', 'rejected')),
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    activated_at        TIMESTAMPTZ
);
CREATE UNIQUE INDEX model_version_one_active ON model_version (task) WHERE status = 'active';
CREATE INDEX model_version_task ON model_version (task, created_at DESC);

-- The latest prediction per profile and task, with the model version that made it.
CREATE TABLE predictions (
    profile_id       UUID NOT NULL,
    task             TEXT NOT NULL,
    model_version_id UUID NOT NULL REFERENCES model_version (id),
    scored_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    score            DOUBLE PRECISION,
    label            TEXT,
    details          JSONB NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (profile_id, task)
);
CREATE INDEX predictions_task_score ON predictions (task, score);
CREATE INDEX predictions_task_label ON predictions (task, label);

-- Dashboard users, sessions and machine tokens.
CREATE TABLE users (
    id            UUID PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'analyst', 'viewer')),
    disabled      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_login_at TIMESTAMPTZ
);

CREATE TABLE sessions (
    -- SHA-256 of the cookie value: a database leak yields no usable session.
    token_sha256 BYTEA PRIMARY KEY,
    user_id      UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at   TIMESTAMPTZ NOT NULL,
    last_seen_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_expires ON sessions (expires_at);

CREATE TABLE api_tokens (
    id           UUID PRIMARY KEY,
    name         TEXT NOT NULL,
    token_sha256 BYTEA NOT NULL UNIQUE,
    -- First characters of the token, shown in lists so people can tell tokens apart.
    prefix       TEXT NOT NULL,
    role         TEXT NOT NULL CHECK (role IN ('admin', 'analyst', 'viewer')),
    created_by   UUID REFERENCES users (id) ON DELETE SET NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_used_at TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ
);

-- CSV bulk imports and their per-row errors.
CREATE TABLE csv_imports (
    id             UUID PRIMARY KEY,
    kind           TEXT NOT NULL CHECK (kind IN ('customers', 'orders', 'order_lines')),
    filename       TEXT NOT NULL,
    file_sha256    TEXT,
    mapping        JSONB NOT NULL DEFAULT '{}'::jsonb,
    status         TEXT NOT NULL DEFAULT 'running'
                   CHECK (status IN ('running', 'completed', 'failed')),
    total_rows     BIGINT NOT NULL DEFAULT 0,
    imported_rows  BIGINT NOT NULL DEFAULT 0,
    duplicate_rows BIGINT NOT NULL DEFAULT 0,
    error_rows     BIGINT NOT NULL DEFAULT 0,
    error          TEXT,
    created_by     TEXT,
    started_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at    TIMESTAMPTZ
);

CREATE TABLE csv_import_errors (
    import_id UUID NOT NULL REFERENCES csv_imports (id) ON DELETE CASCADE,
    line      BIGINT NOT NULL,
    reason    TEXT NOT NULL,
    PRIMARY KEY (import_id, line)
);

-- Erased identifiers, stored only as SHA-256 of `kind:value` so erasure keeps no PII.
CREATE TABLE suppression (
    identifier_sha256 BYTEA PRIMARY KEY,
    kind              TEXT NOT NULL,
    erased_profile_id UUID,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    reason            TEXT NOT NULL DEFAULT 'gdpr_erasure'
);
