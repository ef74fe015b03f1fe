-- 100,000 profiles (or :profiles) as the identity merger would have left them: the
-- profile row with its aggregates, its identifier index rows, two orders with lines,
-- and a churn and a segment prediction each. Written straight into Postgres so the
-- benchmark measures reads, not the pipeline.
\set ON_ERROR_STOP on
BEGIN;
CREATE TEMP TABLE seed_ids ON COMMIT DROP AS
    SELECT g AS n, gen_random_uuid() AS id FROM generate_series(1, :profiles) g;

INSERT INTO customer_profile (id, created_at, display_name, identifiers, traits, first_seen_at,
    last_seen_at, orders_count, total_spent, currency, channels, category_affinity, last_order_at)
SELECT id, now() - (n % 700) * interval '1 day', 'Customer ' || n,
       jsonb_build_array(
           jsonb_build_object('kind', 'email', 'value', 'c' || n || '@bench.example'),
           jsonb_build_object('kind', 'phone', 'value', '+9198' || lpad(n::text, 8, '0'))),
       jsonb_build_object('city', (ARRAY['Pune', 'Delhi', 'Chennai'])[1 + n % 3]),
       now() - (n % 700) * interval '1 day', now() - (n % 90) * interval '1 day',
       2, 1998.00, 'INR', ARRAY['web', 'pos'], '{"Apparel": 0.6, "Shoes": 0.4}',
       now() - (n % 90) * interval '1 day'
FROM seed_ids;

INSERT INTO profile_identifier (kind, value, profile_id, source, first_seen_at, last_seen_at)
SELECT 'email', 'c' || n || '@bench.example', id, 'shopify', now() - interval '300 days', now()
FROM seed_ids
UNION ALL
SELECT 'phone', '+9198' || lpad(n::text, 8, '0'), id, 'pos', now() - interval '300 days', now()
FROM seed_ids;

CREATE TEMP TABLE seed_orders ON COMMIT DROP AS
    SELECT gen_random_uuid() AS id, s.id AS profile_id, s.n, k
    FROM seed_ids s CROSS JOIN generate_series(1, 2) k;
INSERT INTO orders (id, source, external_order_id, profile_id, event_id, status, channel, store,
    placed_at, currency, total)
SELECT id, 'shopify', 'bench-' || n || '-' || k, profile_id, gen_random_uuid(), 'paid',
       CASE WHEN k = 1 THEN 'web' ELSE 'pos' END, CASE WHEN k = 2 THEN 'BLR-01' END,
       now() - (n % 90 + k * 7) * interval '1 day', 'INR', 999.00
FROM seed_orders;
INSERT INTO order_items (order_id, line_no, sku, name, category, qty, price)
SELECT id, 1, 'TEE-' || (n % 50), 'Tee ' || (n % 50), 'Apparel', 1, 599.00 FROM seed_orders
UNION ALL
SELECT id, 2, 'SHOE-' || (n % 20), 'Shoe ' || (n % 20), 'Shoes', 1, 400.00 FROM seed_orders;

INSERT INTO model_version (id, task, algorithm, feature_set_version, metrics, artefact, status)
VALUES ('00000000-0000-7000-8000-00000000c4a7', 'churn', 'lightgbm', 1, '{"roc_auc": 0.8}', 'bench', 'active'),
       ('00000000-0000-7000-8000-000000005e61', 'segment', 'kmeans', 1, '{"silhouette": 0.4}', 'bench', 'active');
INSERT INTO predictions (profile_id, task, model_version_id, score, label)
SELECT id, 'churn', '00000000-0000-7000-8000-00000000c4a7'::uuid, (n % 100) / 100.0, NULL FROM seed_ids
UNION ALL
SELECT id, 'segment', '00000000-0000-7000-8000-000000005e61'::uuid, NULL,
       (ARRAY['Champions', 'Loyal', 'At Risk', 'Hibernating'])[1 + n % 4] FROM seed_ids;
COMMIT;
ANALYZE;
