-- Two index entries less for every profile row version (issue 19: Postgres CPU per
-- event). The merger rewrites last_seen_at with every event a profile receives and
-- last_seen_at is indexed, so profile updates are never HOT: each new version writes
-- an entry into every index of customer_profile (all but the tombstones' partial one).
--
-- customer_profile_last_seen (last_seen_at DESC, id) of live profiles orders the same
-- rows as customer_profile_list_last_seen (COALESCE(last_seen_at, '-infinity'), id) of
-- live profiles, except that the second sorts a profile never seen as the earliest
-- time. The profile list sorts by the COALESCE key, and its last_seen_from /
-- last_seen_to window now compares that key too (a profile never seen is in no
-- window, as before), so the list's index answers the window in any sort; no other
-- query filters or sorts on customer_profile.last_seen_at.
DROP INDEX IF EXISTS customer_profile_last_seen;

-- customer_profile_created (created_at) of live profiles: no query filters or sorts
-- live profiles by created_at (the overview's "new profiles" counts every live profile
-- by COALESCE(first_event_at, created_at) in one pass; the lists sort by last seen,
-- lifetime value or orders).
DROP INDEX IF EXISTS customer_profile_created;

-- The planner ignores the statistics of a partial index's expression, so without these
-- it would guess the window's selectivity (0.5 % for a closed window, a third for an
-- open one) instead of knowing it, and walk the LTV or orders index for a narrow
-- window instead of reading the window's rows. Extended statistics cost nothing per
-- write: ANALYZE computes them.
CREATE STATISTICS IF NOT EXISTS customer_profile_last_seen_key
    ON (COALESCE(last_seen_at, '-infinity'::timestamptz)) FROM customer_profile;
ANALYZE customer_profile;
