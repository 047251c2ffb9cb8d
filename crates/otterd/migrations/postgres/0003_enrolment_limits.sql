-- Mirrors migrations/sqlite/0003_enrolment_limits.sql (issue 8, items 6 and 14).
ALTER TABLE products ADD COLUMN max_devices BIGINT;
ALTER TABLE products ADD COLUMN enrollments_per_minute BIGINT DEFAULT 600;
ALTER TABLE products ADD COLUMN allowlist_required BOOLEAN NOT NULL DEFAULT FALSE;

CREATE TABLE product_allowlist (
    product_id   BIGINT  NOT NULL REFERENCES products(id) ON DELETE CASCADE,
    hardware_id  TEXT    NOT NULL,
    added_at     BIGINT  NOT NULL,
    PRIMARY KEY (product_id, hardware_id)
);

ALTER TABLE devices ADD COLUMN reenroll_until BIGINT;
ALTER TABLE devices ADD COLUMN reenroll_by TEXT;

CREATE INDEX devices_by_enrolment ON devices (enrolled_at, id);
CREATE INDEX tokens_by_creation ON tokens (created_at, id);
