-- Mirrors migrations/sqlite/0011_unknown_image_sha256_is_null.sql: a device whose client
-- reported no running-image SHA-256 has NULL there, not ''.
UPDATE devices SET image_sha256 = NULL WHERE image_sha256 = '';
