-- Integration secrets at rest are sealed (XChaCha20-Poly1305, key INTEGRATION_SECRETS_KEY
-- from the environment; see `storage::secrets`) in `secret_sealed`. `secret` keeps the
-- plaintext only of rows written before this migration, until a service holding the key
-- seals them (ingest, the api-gateway and `ctl migrate` do so at start-up); every row has
-- exactly one of the two. `secret_sha256` stays: ingest finds an integration by write key
-- or bearer token through it.
ALTER TABLE integrations ADD COLUMN secret_sealed BYTEA;
ALTER TABLE integrations ALTER COLUMN secret DROP NOT NULL;
ALTER TABLE integrations ADD CONSTRAINT integrations_secret_stored_once
    CHECK ((secret IS NULL) <> (secret_sealed IS NULL));
