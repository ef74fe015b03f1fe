-- Time-ordered profile ids with a stored cut-over (issue 19, docs/identity.md "Profile
-- ids"). A profile is named after the event that created it. Until now its id was
-- SHA-256 of that event's id shaped as a random UUID, so every new profile's entries
-- landed on a random leaf page of every index keyed by profile. From the cut-over on,
-- an event whose id is a UUIDv7 (ingest mints every event id so, at the time it
-- receives the event) creates a UUIDv7 id of the same millisecond whose other bits come
-- from the same digest: new profiles go to the right edge of those indexes.
--
-- Events received before the cut-over keep the hashed id, so a rebuild restores the ids
-- of the profiles that exist when this runs. Every path that names profiles (the
-- streaming merger, region replays, unmerges, `ctl identity rebuild`, the bulk seed)
-- reads this one row; it is written here once and never changed.
CREATE TABLE profile_id_scheme (
    only_row          BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    -- Event ids whose time is at or after this get time-ordered profile ids.
    time_ordered_from TIMESTAMPTZ NOT NULL
);

-- A database created empty: every profile is time-ordered (minus infinity). One that
-- already has profiles: from now, and never before the newest time-ordered event id
-- stored (ingest's clock minted those; one running a little ahead of the database's
-- must not move an existing profile's creating event past the cut-over). The newest
-- is found through the primary key (a UUIDv7 sorts by its time): ids of the last day
-- up to a day ahead, version 7 only.
INSERT INTO profile_id_scheme (time_ordered_from)
SELECT CASE
    WHEN NOT EXISTS (SELECT 1 FROM customer_profile) THEN '-infinity'::timestamptz
    ELSE greatest(
        now(),
        (SELECT to_timestamp(
                    (('x' || substr(replace(event_id::text, '-', ''), 1, 12))::bit(48)::bigint + 1)
                    / 1000.0)
         FROM normalized_event
         WHERE event_id >= (lpad(to_hex((extract(epoch FROM now() - interval '1 day') * 1000)::bigint), 12, '0')
                            || '00000000000000000000')::uuid
           AND event_id < (lpad(to_hex((extract(epoch FROM now() + interval '1 day') * 1000)::bigint), 12, '0')
                           || '00000000000000000000')::uuid
           AND substr(event_id::text, 15, 1) = '7'
         ORDER BY event_id DESC
         LIMIT 1))
END;
