-- Issue 9: a device whose client reported no running-image SHA-256 (stock Arduino and
-- esp32FOTA clients) has NULL there, not ''; every stored value is now 64 lowercase hex digits
-- or NULL, which otterd decodes as a typed SHA-256.
UPDATE devices SET image_sha256 = NULL WHERE image_sha256 = '';
