-- api-gateway: the merge decisions it has published, and the indexes its lists page by.

-- Every request the API published on profiles.merge_requests (approve, reject, manual
-- merge, unmerge, erase), so a review item or merge can show "decision sent, not yet
-- applied" and who sent it. Informational: the merger's own tables hold the outcome.
CREATE TABLE api_merge_requests (
    id           UUID PRIMARY KEY,
    action       TEXT NOT NULL
                 CHECK (action IN ('approve_review', 'reject_review', 'manual_merge', 'unmerge', 'erase')),
    review_id    UUID,
    merge_id     UUID,
    profile_ids  UUID[] NOT NULL DEFAULT '{}',
    actor        TEXT NOT NULL,
    requested_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    entry_id     TEXT
);
CREATE INDEX api_merge_requests_review ON api_merge_requests (review_id, requested_at DESC)
    WHERE review_id IS NOT NULL;

-- Profile list: one index per sort key, matching the keyset ORDER BY exactly
-- (NULL last-seen sorts as the earliest time).
CREATE INDEX customer_profile_list_last_seen
    ON customer_profile ((COALESCE(last_seen_at, '-infinity'::timestamptz)), id)
    WHERE merged_into IS NULL;
CREATE INDEX customer_profile_list_ltv ON customer_profile (total_spent, id)
    WHERE merged_into IS NULL;
CREATE INDEX customer_profile_list_orders ON customer_profile (orders_count, id)
    WHERE merged_into IS NULL;
CREATE INDEX customer_profile_channels ON customer_profile USING GIN (channels)
    WHERE merged_into IS NULL;
-- Name search is a prefix match on the lower-cased name.
CREATE INDEX customer_profile_name_prefix
    ON customer_profile (lower(display_name) text_pattern_ops)
    WHERE merged_into IS NULL;
CREATE INDEX customer_profile_created ON customer_profile (created_at)
    WHERE merged_into IS NULL;

-- Other lists, newest first.
CREATE INDEX manual_merge_queue_created ON manual_merge_queue (created_at DESC, id);
CREATE INDEX csv_imports_started ON csv_imports (started_at DESC, id);
CREATE INDEX connection_logs_keyset ON connection_logs (integration_id, at DESC, id DESC);
CREATE INDEX normalized_event_profile_keyset
    ON normalized_event (profile_id, occurred_at DESC, event_id DESC);
