-- Issue 13: products that follow a GitHub repository's releases, and the assets imported from
-- them. Portable SQL: the PostgreSQL migration of the same number creates the same tables.

-- One follow per product. `token` authenticates to the releases API for private repositories;
-- it is never returned by the API or logged. `last_*` is what the last poll found.
CREATE TABLE github_follows (
    product_id      INTEGER NOT NULL PRIMARY KEY REFERENCES products(id) ON DELETE CASCADE,
    repo            TEXT    NOT NULL,
    asset_pattern   TEXT    NOT NULL,
    channel         TEXT    NOT NULL,
    token           TEXT,
    -- The weaker mode (docs/security.md): assets that are not bundles are signed at import
    -- with the server's github_import_key_file.
    sign_on_import  BOOLEAN NOT NULL DEFAULT FALSE,
    created_at      INTEGER NOT NULL,
    created_by      TEXT    NOT NULL,
    last_poll_at    INTEGER,
    last_error      TEXT
);

-- Every asset the importer looked at, imported or refused, so each is fetched once.
-- `release_id` is the release it became; `reason` why it was refused.
CREATE TABLE github_imports (
    product_id      INTEGER NOT NULL REFERENCES products(id) ON DELETE CASCADE,
    asset_id        INTEGER NOT NULL,
    tag_name        TEXT    NOT NULL,
    asset_name      TEXT    NOT NULL,
    imported        BOOLEAN NOT NULL,
    release_id      TEXT,
    reason          TEXT,
    at              INTEGER NOT NULL,
    PRIMARY KEY (product_id, asset_id)
);
CREATE INDEX github_imports_by_time ON github_imports (product_id, at);
