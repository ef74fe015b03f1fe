-- Indexes that no query reads, written with every event, every profile row and every
-- delivery (issue 19, "flat with size"). Each row version of these tables carries an entry in
-- every index of its table; in a large database each entry of a random key (a profile
-- id, a name) lands on its own leaf page, dirtying it and, after each checkpoint,
-- writing it whole to the WAL. So an index no query needs costs more the more
-- profiles a brand has.
--
-- normalized_event_profile (profile_id, occurred_at DESC) is a prefix of
-- normalized_event_profile_keyset (profile_id, occurred_at DESC, event_id DESC): every
-- query by profile (a profile's timeline, replays, audiences, journeys) reads the
-- longer one in the same order.
DROP INDEX IF EXISTS normalized_event_profile;
-- customer_profile_display_name (lower(display_name)) of live profiles: the profile
-- search matches a prefix of the lower-cased name (LIKE), which only the
-- text_pattern_ops index customer_profile_name_prefix can answer; no query compares
-- or sorts by the lower-cased name otherwise.
DROP INDEX IF EXISTS customer_profile_display_name;
-- connection_logs_integration_at (integration_id, at DESC) is a prefix of
-- connection_logs_keyset (integration_id, at DESC, id DESC), which the integration's
-- delivery log pages by; ingest writes a row per delivery.
DROP INDEX IF EXISTS connection_logs_integration_at;
