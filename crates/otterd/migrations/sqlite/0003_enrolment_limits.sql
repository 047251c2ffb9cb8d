-- Issue 8, items 6 and 14: bounds on who may enrol and on what lists return.
--
-- Per product: a cap on enrolled devices (NULL: none), a rate of new enrolments per minute
-- (NULL: none; 600 unless an admin changes it), and whether only hardware ids on the product's
-- allow-list may enrol.
ALTER TABLE products ADD COLUMN max_devices INTEGER;
ALTER TABLE products ADD COLUMN enrollments_per_minute INTEGER DEFAULT 600;
ALTER TABLE products ADD COLUMN allowlist_required INTEGER NOT NULL DEFAULT 0;

-- Hardware ids a product's factory registered (imported from its CSV).
CREATE TABLE product_allowlist (
    product_id   INTEGER NOT NULL REFERENCES products(id) ON DELETE CASCADE,
    hardware_id  TEXT    NOT NULL,
    added_at     INTEGER NOT NULL,
    PRIMARY KEY (product_id, hardware_id)
) WITHOUT ROWID;

-- An admin allowed one more enrolment of an enrolled hardware id with the product secret alone,
-- until this time (Unix seconds), and who did.
ALTER TABLE devices ADD COLUMN reenroll_until INTEGER;
ALTER TABLE devices ADD COLUMN reenroll_by TEXT;

-- Keyset pagination follows these orders.
CREATE INDEX devices_by_enrolment ON devices (enrolled_at, id);
CREATE INDEX tokens_by_creation ON tokens (created_at, id);
