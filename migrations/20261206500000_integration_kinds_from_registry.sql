-- The kinds an integration can be are the source registry's (`ingestion::sources`):
-- integrations are created only through `ingestion::integrations::create`, which
-- accepts the registered kinds, and `storage::integrations::insert` takes the typed
-- source name. A second list here would make every new source a schema change.
ALTER TABLE integrations DROP CONSTRAINT IF EXISTS integrations_kind_check;
