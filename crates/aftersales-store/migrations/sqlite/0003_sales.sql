-- Units sold, from the sales feed (POST /v1/sales): the denominator of return rates.
CREATE TABLE sales (
    dedupe_id     TEXT PRIMARY KEY,
    business_line TEXT NOT NULL,
    category      TEXT NOT NULL,
    sku           TEXT NOT NULL,
    quantity      INTEGER NOT NULL CHECK (quantity >= 0),
    at            INTEGER NOT NULL
);
CREATE INDEX sales_at ON sales (at);
