-- Identifiers learned (in time order) to join different people: the family computer of
-- a shared-device conflict, the family phone an event of another named person carried.
-- Unlike `suspect` (a property of the whole event set), `shared` is recomputed whenever
-- the region of events that carry the identifier is replayed.
ALTER TABLE identity_identifier ADD COLUMN shared BOOLEAN NOT NULL DEFAULT FALSE;
