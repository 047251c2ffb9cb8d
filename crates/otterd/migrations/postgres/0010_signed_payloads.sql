-- Client-format payloads (issue 13): the bytes `otter sign` makes for stock Arduino update
-- clients, attached to a published release and served exactly to those clients.
ALTER TABLE release_payloads DROP CONSTRAINT release_payloads_kind_check;
ALTER TABLE release_payloads ADD CONSTRAINT release_payloads_kind_check
    CHECK (kind IN ('full', 'esp8266-signed', 'esp32-arduino-signed'));
-- A release holds at most one payload of each kind.
CREATE UNIQUE INDEX release_payloads_one_per_kind ON release_payloads (release_id, kind);
