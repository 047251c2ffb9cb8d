-- A device may repeat its enrolment when the answer was lost (a power cut before it stored its
-- token): it proves it is the same device with the nonce it chose and stored before the first
-- attempt. Only the hash is kept, as for tokens.
ALTER TABLE devices ADD COLUMN enrollment_nonce_hash TEXT;
