-- Issue 10: a generation number of what check-ins are offered. Every change to the rows that
-- decide an offer (products, releases, rollouts and their stages) bumps it, by trigger, so no
-- code path can forget to; each server keeps those rows in memory and reloads them when the
-- generation it reads at a check-in differs from the one it loaded them at (also when another
-- instance sharing the database made the change).
CREATE TABLE offer_generation (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    generation BIGINT NOT NULL
);
INSERT INTO offer_generation (id, generation) VALUES (1, 0);
CREATE TRIGGER offer_generation_products_insert AFTER INSERT ON products
BEGIN
    UPDATE offer_generation SET generation = generation + 1 WHERE id = 1;
END;
CREATE TRIGGER offer_generation_products_update AFTER UPDATE ON products
BEGIN
    UPDATE offer_generation SET generation = generation + 1 WHERE id = 1;
END;
CREATE TRIGGER offer_generation_products_delete AFTER DELETE ON products
BEGIN
    UPDATE offer_generation SET generation = generation + 1 WHERE id = 1;
END;
CREATE TRIGGER offer_generation_releases_insert AFTER INSERT ON releases
BEGIN
    UPDATE offer_generation SET generation = generation + 1 WHERE id = 1;
END;
CREATE TRIGGER offer_generation_releases_update AFTER UPDATE ON releases
BEGIN
    UPDATE offer_generation SET generation = generation + 1 WHERE id = 1;
END;
CREATE TRIGGER offer_generation_releases_delete AFTER DELETE ON releases
BEGIN
    UPDATE offer_generation SET generation = generation + 1 WHERE id = 1;
END;
CREATE TRIGGER offer_generation_rollouts_insert AFTER INSERT ON rollouts
BEGIN
    UPDATE offer_generation SET generation = generation + 1 WHERE id = 1;
END;
CREATE TRIGGER offer_generation_rollouts_update AFTER UPDATE ON rollouts
BEGIN
    UPDATE offer_generation SET generation = generation + 1 WHERE id = 1;
END;
CREATE TRIGGER offer_generation_rollouts_delete AFTER DELETE ON rollouts
BEGIN
    UPDATE offer_generation SET generation = generation + 1 WHERE id = 1;
END;
CREATE TRIGGER offer_generation_rollout_stages_insert AFTER INSERT ON rollout_stages
BEGIN
    UPDATE offer_generation SET generation = generation + 1 WHERE id = 1;
END;
CREATE TRIGGER offer_generation_rollout_stages_update AFTER UPDATE ON rollout_stages
BEGIN
    UPDATE offer_generation SET generation = generation + 1 WHERE id = 1;
END;
CREATE TRIGGER offer_generation_rollout_stages_delete AFTER DELETE ON rollout_stages
BEGIN
    UPDATE offer_generation SET generation = generation + 1 WHERE id = 1;
END;
