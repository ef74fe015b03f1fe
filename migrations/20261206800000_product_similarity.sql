-- The nearest products of each product by a recommendation model's item vectors
-- (item2vec through its HNSW index), written when the version is registered; the rows
-- of the active `recommend` version answer GET /products/{sku}/similar.
CREATE TABLE product_similarity (
    model_version_id UUID NOT NULL REFERENCES model_version (id) ON DELETE CASCADE,
    sku              TEXT NOT NULL,
    rank             INTEGER NOT NULL CHECK (rank >= 1),
    similar_sku      TEXT NOT NULL,
    similarity       DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (model_version_id, sku, rank)
);
