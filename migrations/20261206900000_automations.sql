-- Automations (docs/automations.md): definitions, one run per (automation, profile,
-- trigger occurrence), one send per (run, action) recorded as an intent before the
-- provider is called, static lists, and the cursors the triggers read from.

CREATE TABLE automations (
    id          UUID PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
    -- The definition as JSON (`domain::automation::AutomationSpec`), validated first.
    spec        JSONB NOT NULL,
    -- The kill switch. Only occurrences after `enabled_at` start runs.
    enabled     BOOLEAN NOT NULL DEFAULT FALSE,
    enabled_at  TIMESTAMPTZ,
    version     BIGINT NOT NULL DEFAULT 1,
    created_by  TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Audience-entered trigger: last `audience_membership_change.id` read.
    change_cursor BIGINT NOT NULL DEFAULT 0,
    -- Schedule trigger: the last brand-local date it ran for.
    scheduled_on  DATE
);

CREATE TABLE automation_run (
    id            UUID PRIMARY KEY,
    automation_id UUID NOT NULL REFERENCES automations (id) ON DELETE CASCADE,
    profile_id    UUID NOT NULL,
    occurrence    TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('waiting', 'processing', 'done')),
    outcome       TEXT CHECK (outcome IN ('acted', 'exited', 'conditions_not_met', 'held_out', 'suppressed', 'cancelled')),
    triggered_at  TIMESTAMPTZ NOT NULL,
    wake_at       TIMESTAMPTZ NOT NULL,
    -- A replica acting on the run holds it until then; a crashed one's lease expires.
    lease_until   TIMESTAMPTZ,
    finished_at   TIMESTAMPTZ,
    detail        TEXT,
    -- The trigger's context (the event's properties: the cart of a checkout).
    context       JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (automation_id, profile_id, occurrence),
    CHECK ((status = 'done') = (outcome IS NOT NULL))
);
CREATE INDEX automation_run_due ON automation_run (wake_at) WHERE status <> 'done';
CREATE INDEX automation_run_automation ON automation_run (automation_id, id);
CREATE INDEX automation_run_profile ON automation_run (profile_id);

CREATE TABLE automation_send (
    id            UUID PRIMARY KEY,
    run_id        UUID NOT NULL REFERENCES automation_run (id) ON DELETE CASCADE,
    automation_id UUID NOT NULL REFERENCES automations (id) ON DELETE CASCADE,
    profile_id    UUID NOT NULL,
    action_index  INTEGER NOT NULL,
    channel       TEXT NOT NULL CHECK (channel IN ('whatsapp', 'webhook', 'list')),
    status        TEXT NOT NULL CHECK (status IN ('sending', 'retrying', 'unknown', 'queued', 'sent',
                      'delivered', 'read', 'failed', 'no_consent', 'suppressed', 'capped',
                      'quiet_hours_skipped', 'applied')),
    provider_id   TEXT UNIQUE,
    error_code    TEXT,
    error_message TEXT,
    attempts      INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ,
    rendered      JSONB,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- When the provider accepted it (conversions count from here).
    accepted_at   TIMESTAMPTZ,
    -- Exactly once: one send per run and action, written before the provider call.
    UNIQUE (run_id, action_index)
);
CREATE INDEX automation_send_caps ON automation_send (profile_id, channel, created_at);
CREATE INDEX automation_send_automation ON automation_send (automation_id, id);
CREATE INDEX automation_send_rate ON automation_send (automation_id, created_at);
CREATE INDEX automation_send_open ON automation_send (status, next_attempt_at)
    WHERE status IN ('sending', 'retrying', 'queued', 'sent', 'delivered');

-- Churn-label trigger: the last label each automation saw for each profile.
CREATE TABLE automation_label_seen (
    automation_id UUID NOT NULL REFERENCES automations (id) ON DELETE CASCADE,
    profile_id    UUID NOT NULL,
    label         TEXT NOT NULL,
    PRIMARY KEY (automation_id, profile_id)
);

-- Static lists that automations add profiles to and remove them from.
CREATE TABLE profile_list_member (
    list       TEXT NOT NULL CHECK (length(list) BETWEEN 1 AND 200),
    profile_id UUID NOT NULL,
    added_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (list, profile_id)
);

-- Status callbacks (Twilio `message_status` events) found by their message SID.
CREATE INDEX normalized_event_message_sid ON normalized_event ((properties ->> 'message_sid'))
    WHERE type = 'message_status';
