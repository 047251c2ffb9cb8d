-- Issue 11: people who sign in to the dashboard, and their sessions. Portable SQL: the
-- SQLite migration of the same number creates the same tables.

-- A person has the roles of API tokens (admin, publisher with its products, viewer).
-- `password_hash` is an Argon2id PHC string. A person created with a one-time initial password
-- has `must_change_password` until the first sign-in changes it. `failed_sign_ins` counts wrong
-- passwords since the last good one; `locked_until` refuses sign-ins until then.
CREATE TABLE people (
    id                    TEXT    PRIMARY KEY,
    name                  TEXT    NOT NULL UNIQUE,
    role                  TEXT    NOT NULL CHECK (role IN ('admin', 'publisher', 'viewer')),
    products              TEXT    NOT NULL,  -- JSON array of product names (publisher scope)
    password_hash         TEXT    NOT NULL,
    must_change_password  BOOLEAN NOT NULL,
    failed_sign_ins       BIGINT  NOT NULL DEFAULT 0,
    locked_until          BIGINT,
    created_at            BIGINT  NOT NULL,
    created_by            TEXT    NOT NULL,
    last_sign_in_at       BIGINT,
    disabled_at           BIGINT
);

-- A signed-in browser. `id_hash` is the SHA-256 (hex) of the session id in the cookie, which
-- is stored nowhere else. `csrf` is the session's form token. A session ends at `expires_at`
-- (absolute) or when idle longer than the configured idle time since `last_seen_at`.
CREATE TABLE sessions (
    id_hash       TEXT    PRIMARY KEY,
    person_id     TEXT    NOT NULL REFERENCES people(id) ON DELETE CASCADE,
    csrf          TEXT    NOT NULL,
    created_at    BIGINT  NOT NULL,
    last_seen_at  BIGINT  NOT NULL,
    expires_at    BIGINT  NOT NULL,
    address       TEXT
);
CREATE INDEX sessions_by_person ON sessions (person_id);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);
