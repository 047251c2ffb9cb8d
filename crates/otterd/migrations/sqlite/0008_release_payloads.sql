-- A release owns one or more payloads (issue 9): each with its kind, size and hashes, the full
-- image first (position 0). Client-specific signed bytes and delta patches per base image are
-- further kinds to come. `md5` serves the stock Arduino clients (`x-MD5`); NULL until known.
CREATE TABLE release_payloads (
    release_id TEXT    NOT NULL REFERENCES releases(id) ON DELETE CASCADE,
    position   INTEGER NOT NULL CHECK (position >= 0),
    kind       TEXT    NOT NULL CHECK (kind IN ('full')),
    size       BIGINT  NOT NULL CHECK (size >= 0),
    sha256     TEXT    NOT NULL,
    md5        TEXT,
    PRIMARY KEY (release_id, position)
);
CREATE INDEX release_payloads_by_sha256 ON release_payloads (sha256);

-- Every release published before has its image as its first payload; its MD5 is filled in the
-- first time a client needs it.
INSERT INTO release_payloads (release_id, position, kind, size, sha256, md5)
SELECT id, 0, 'full', size, sha256, NULL FROM releases;
