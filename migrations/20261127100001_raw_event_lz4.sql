-- Raw event bodies (a Shopify order is 5-10 KB of JSON) are compressed when TOASTed;
-- lz4 costs a fraction of the default pglz's CPU on the ingest write path, at a similar
-- ratio for JSON. Applies to rows written from now on.
ALTER TABLE customer_raw_event ALTER COLUMN payload SET COMPRESSION lz4;
