-- The events the identity merger has not attached yet, indexed on their own (issue 19).
-- "How many events are still waiting for identity resolution?" is asked by `ctl demo`'s
-- drain, the benchmarks and operators while the pipeline runs; without this index each
-- answer reads the whole event table, which costs more the more history a brand has.
-- The index only holds unresolved rows: the merger's update that sets `resolved_at`
-- (which also sets `profile_id`, an indexed column, so it is never a HOT update) adds
-- no entry here, and the entries of resolved rows go at the next vacuum.
CREATE INDEX normalized_event_unresolved ON normalized_event (received_at)
    WHERE resolved_at IS NULL;
