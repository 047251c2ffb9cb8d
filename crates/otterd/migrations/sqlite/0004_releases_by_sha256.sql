-- The blob collector asks, per stored image, whether any release references it (issue 8,
-- item 12); the index keeps that a lookup rather than a scan of every release.
CREATE INDEX releases_by_sha256 ON releases (sha256);
