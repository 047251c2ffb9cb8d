-- Client-format payloads (issue 13): the bytes `otter sign` makes for stock Arduino update
-- clients, attached to a published release and served exactly to those clients. SQLite cannot
-- change a CHECK constraint, so the table is made anew with the wider one.
CREATE TABLE release_payloads_new (
    release_id TEXT    NOT NULL REFERENCES releases(id) ON DELETE CASCADE,
    position   INTEGER NOT NULL CHECK (position >= 0),
    kind       TEXT    NOT NULL CHECK (kind IN ('full', 'esp8266-signed', 'esp32-arduino-signed')),
    size       BIGINT  NOT NULL CHECK (size >= 0),
    sha256     TEXT    NOT NULL,
    md5        TEXT,
    PRIMARY KEY (release_id, position)
);
INSERT INTO release_payloads_new (release_id, position, kind, size, sha256, md5)
SELECT release_id, position, kind, size, sha256, md5 FROM release_payloads;
DROP TABLE release_payloads;
ALTER TABLE release_payloads_new RENAME TO release_payloads;
CREATE INDEX release_payloads_by_sha256 ON release_payloads (sha256);
-- A release holds at most one payload of each kind.
CREATE UNIQUE INDEX release_payloads_one_per_kind ON release_payloads (release_id, kind);
