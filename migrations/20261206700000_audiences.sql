-- Audiences: saved rules over profiles (docs/audiences.md), their members kept live by
-- the automations service, and every entry and exit, which automations trigger on.

CREATE TABLE audiences (
    id          UUID PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
    description TEXT NOT NULL DEFAULT '',
    -- The rule as JSON (`domain::audience::Rule`), validated before it is stored.
    rule        JSONB NOT NULL,
    created_by  TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Bumped on every rule change: a recompute started on an older rule does not write.
    version     BIGINT NOT NULL DEFAULT 1,
    -- When the last full recompute finished, and how many members it left.
    recomputed_at TIMESTAMPTZ,
    member_count  BIGINT NOT NULL DEFAULT 0
);

-- One row per audience and profile that ever was a member; `current` says whether it
-- still is. No foreign key to customer_profile (erasure deletes profiles): an erased or
-- merged-away profile exits at its next evaluation, live or in a full recompute.
CREATE TABLE audience_membership (
    audience_id UUID NOT NULL REFERENCES audiences (id) ON DELETE CASCADE,
    profile_id  UUID NOT NULL,
    current     BOOLEAN NOT NULL,
    entered_at  TIMESTAMPTZ NOT NULL,
    exited_at   TIMESTAMPTZ,
    PRIMARY KEY (audience_id, profile_id),
    CHECK (current = (exited_at IS NULL))
);
CREATE INDEX audience_membership_members
    ON audience_membership (audience_id, profile_id) WHERE current;
CREATE INDEX audience_membership_profile ON audience_membership (profile_id);

-- Every entry and exit, in order: what automations trigger on.
CREATE TABLE audience_membership_change (
    id          BIGSERIAL PRIMARY KEY,
    audience_id UUID NOT NULL REFERENCES audiences (id) ON DELETE CASCADE,
    profile_id  UUID NOT NULL,
    change      TEXT NOT NULL CHECK (change IN ('entered', 'exited')),
    at          TIMESTAMPTZ NOT NULL,
    -- `live`: a profile change evaluated on its own; `recompute`: a full recompute.
    cause       TEXT NOT NULL CHECK (cause IN ('live', 'recompute'))
);
CREATE INDEX audience_membership_change_audience ON audience_membership_change (audience_id, id);
CREATE INDEX audience_membership_change_profile ON audience_membership_change (profile_id);
