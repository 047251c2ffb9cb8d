-- Otter schema v1 (SQLite). The PostgreSQL migrations mirror this file table by table.
-- Times are Unix seconds (INTEGER). Secrets (tokens, enrolment secrets) are stored as SHA-256 hex.

CREATE TABLE products (
    id                      INTEGER PRIMARY KEY,
    name                    TEXT    NOT NULL UNIQUE,
    chip                    TEXT    NOT NULL,
    description             TEXT    NOT NULL DEFAULT '',
    enrollment_secret_hash  TEXT    NOT NULL,
    created_at              INTEGER NOT NULL
);

CREATE TABLE product_keys (
    product_id      INTEGER NOT NULL REFERENCES products(id) ON DELETE CASCADE,
    key_id          TEXT    NOT NULL,
    name            TEXT    NOT NULL,
    public_key_pem  TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (product_id, key_id)
);

CREATE TABLE releases (
    id                  TEXT    PRIMARY KEY,
    product_id          INTEGER NOT NULL REFERENCES products(id),
    channel             TEXT    NOT NULL,
    version             TEXT    NOT NULL,
    chip                TEXT    NOT NULL,
    security_counter    INTEGER NOT NULL,
    size                INTEGER NOT NULL,
    sha256              TEXT    NOT NULL,
    manifest_created_at INTEGER NOT NULL,
    expires_at          INTEGER,
    envelope            BLOB    NOT NULL,
    signed_by           TEXT    NOT NULL,
    project_name        TEXT,
    idf_version         TEXT,
    published_at        INTEGER NOT NULL,
    published_by        TEXT    NOT NULL,
    UNIQUE (product_id, channel, version)
);
CREATE INDEX releases_by_channel ON releases (product_id, channel, published_at);

CREATE TABLE tokens (
    id            TEXT    PRIMARY KEY,
    name          TEXT    NOT NULL,
    role          TEXT    NOT NULL CHECK (role IN ('admin', 'publisher', 'viewer')),
    products      TEXT    NOT NULL,  -- JSON array of product names (publisher scope)
    token_hash    TEXT    NOT NULL UNIQUE,
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER,
    revoked_at    INTEGER
);

CREATE TABLE devices (
    id              TEXT    PRIMARY KEY,
    product_id      INTEGER NOT NULL REFERENCES products(id),
    hardware_id     TEXT    NOT NULL,
    channel         TEXT    NOT NULL,
    token_hash      TEXT    NOT NULL UNIQUE,
    chip            TEXT,
    version         TEXT,
    security_counter INTEGER,
    image_sha256    TEXT,
    partition_size  INTEGER,
    last_state      TEXT,
    enrolled_at     INTEGER NOT NULL,
    last_seen_at    INTEGER,
    UNIQUE (product_id, hardware_id)
);

CREATE TABLE device_events (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id       TEXT    NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    at              INTEGER NOT NULL,
    release_id      TEXT,
    state           TEXT    NOT NULL,
    progress_bytes  INTEGER,
    reason          TEXT
);
CREATE INDEX device_events_by_device ON device_events (device_id, id);
