-- Issue 11: indexes for what the dashboard asks of a fleet of 100,000 devices. Portable SQL:
-- the migration of the same number for the other backend is the same file.

-- Versions running across the fleet (the overview), counted per product from the index alone.
CREATE INDEX devices_by_product_version ON devices (product_id, version);
-- How many devices run a release (releases list and page): a product's devices by image.
CREATE INDEX devices_by_product_image ON devices (product_id, image_sha256);
-- Recent failures (the overview): the newest events in a failed state.
CREATE INDEX device_events_by_state ON device_events (state, id);
-- A device's deployment history (the device page), newest first.
CREATE INDEX deployments_by_device ON deployments (device_id, assigned_at);
-- Rollouts in progress across products (the overview).
CREATE INDEX rollouts_by_state ON rollouts (state, created_at);
