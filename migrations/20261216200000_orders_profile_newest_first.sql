-- The Customer 360 refresh reads each profile's newest orders with one index probe per
-- profile (`storage::customer360::ORDERS_OF_PROFILES`), newest first with the id as the
-- tie-break. With the id in the index that order comes straight from it, with no sort
-- per profile; every other reader of the old (profile_id, placed_at DESC) index (the
-- ML loaders, the profile's orders in the API) is served by its prefix as before.
DROP INDEX IF EXISTS orders_profile;
CREATE INDEX orders_profile ON orders (profile_id, placed_at DESC, id DESC);
