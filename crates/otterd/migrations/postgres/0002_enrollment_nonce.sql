-- Mirrors migrations/sqlite/0002_enrollment_nonce.sql: the hash of the nonce a device chose for
-- a repeatable enrolment.
ALTER TABLE devices ADD COLUMN enrollment_nonce_hash TEXT;
