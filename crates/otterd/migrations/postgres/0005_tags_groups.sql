-- Issue 9: tags people set on devices, and groups of devices (a static list, or a saved filter).
-- Portable SQL: the PostgreSQL migration of the same number creates the same tables.

CREATE TABLE device_tags (
    device_id  TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    tag        TEXT NOT NULL,
    PRIMARY KEY (device_id, tag)
);
CREATE INDEX device_tags_by_tag ON device_tags (tag, device_id);

-- A group belongs to one product. `filter` NULL: a static list in device_group_members;
-- otherwise the saved filter (otter-core's DeviceFilter syntax) chooses its devices.
CREATE TABLE device_groups (
    id          TEXT    PRIMARY KEY,
    product_id  BIGINT  NOT NULL REFERENCES products(id) ON DELETE CASCADE,
    name        TEXT    NOT NULL,
    filter      TEXT,
    created_at  BIGINT  NOT NULL,
    created_by  TEXT    NOT NULL,
    CONSTRAINT device_groups_name_unique UNIQUE (product_id, name)
);

CREATE TABLE device_group_members (
    group_id   TEXT NOT NULL REFERENCES device_groups(id) ON DELETE CASCADE,
    device_id  TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, device_id)
);
CREATE INDEX device_group_members_by_device ON device_group_members (device_id);

-- The last outcome a device reported (its state is `last_state`): why, and for which release.
ALTER TABLE devices ADD COLUMN last_reason TEXT;
ALTER TABLE devices ADD COLUMN last_release_id TEXT;

-- Device lists page in (enrolled_at, id) order; these let the common filters (product, channel,
-- state, version=, chip) walk that order within their value, and `seen` find recent devices.
CREATE INDEX devices_by_product_enrolment ON devices (product_id, enrolled_at, id);
CREATE INDEX devices_by_channel ON devices (channel, enrolled_at, id);
CREATE INDEX devices_by_state ON devices (last_state, enrolled_at, id);
CREATE INDEX devices_by_version ON devices (version, enrolled_at, id);
CREATE INDEX devices_by_chip ON devices (chip, enrolled_at, id);
CREATE INDEX devices_by_seen ON devices (last_seen_at);
