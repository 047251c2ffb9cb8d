-- Mirrors migrations/sqlite/0004_releases_by_sha256.sql: the blob collector's lookup.
CREATE INDEX releases_by_sha256 ON releases (sha256);
