-- Ingestion and normalisation (issue 4).

-- The source's own version of an order (its last-modified time). The normalizer applies
-- a report only if it is not older than the stored one, so repeated and out-of-order
-- webhooks converge on the latest state. 'infinity' marks an order deleted at the source.
ALTER TABLE orders ADD COLUMN source_version TIMESTAMPTZ;

-- Refunds per order, keyed by the source's refund id: the same refund reported by its
-- own webhook and again inside the updated order counts once. orders.refunded_total is
-- their sum. A refund may arrive before its order; it is kept and counted once the order
-- exists.
CREATE TABLE order_refunds (
    source            TEXT NOT NULL,
    external_order_id TEXT NOT NULL,
    refund_id         TEXT NOT NULL,
    amount            NUMERIC(14, 2) NOT NULL CHECK (amount >= 0),
    event_id          UUID NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (source, external_order_id, refund_id)
);
