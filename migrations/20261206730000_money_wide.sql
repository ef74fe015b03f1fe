-- Money columns hold any amount ingest admits and any sum of them: NUMERIC(20, 2) keeps
-- 18 digits before the point (domain::MONEY_PRECISION). Ingest refuses a single amount
-- above 999,999,999,999,999.99 (domain::MAX_AMOUNT); sums (a profile's total spent, an
-- order's refunded total) saturate at 999,999,999,999,999,999.99 (domain::MAX_TOTAL)
-- instead of overflowing, so no order can make a profile's write fail.
ALTER TABLE customer_profile ALTER COLUMN total_spent TYPE NUMERIC(20, 2);
ALTER TABLE orders ALTER COLUMN total TYPE NUMERIC(20, 2),
                   ALTER COLUMN refunded_total TYPE NUMERIC(20, 2);
ALTER TABLE order_items ALTER COLUMN price TYPE NUMERIC(20, 2);
ALTER TABLE order_refunds ALTER COLUMN amount TYPE NUMERIC(20, 2);
ALTER TABLE products ALTER COLUMN price TYPE NUMERIC(20, 2);
