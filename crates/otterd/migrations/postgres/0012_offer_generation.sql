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
CREATE FUNCTION offer_generation_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE offer_generation SET generation = generation + 1 WHERE id = 1;
    RETURN NULL;
END
$$;
CREATE TRIGGER offer_generation_products AFTER INSERT OR DELETE ON products
    FOR EACH STATEMENT EXECUTE FUNCTION offer_generation_bump();
-- Only a real change of a product row: enrolment's no-op update that locks the row for the
-- device cap (db/shared.rs, insert_device) must not take the generation row's lock too, or every
-- enrolment on every instance would take turns on it and empty the caches.
CREATE TRIGGER offer_generation_products_changed AFTER UPDATE ON products
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*) EXECUTE FUNCTION offer_generation_bump();
CREATE TRIGGER offer_generation_releases AFTER INSERT OR UPDATE OR DELETE ON releases
    FOR EACH STATEMENT EXECUTE FUNCTION offer_generation_bump();
CREATE TRIGGER offer_generation_rollouts AFTER INSERT OR UPDATE OR DELETE ON rollouts
    FOR EACH STATEMENT EXECUTE FUNCTION offer_generation_bump();
CREATE TRIGGER offer_generation_rollout_stages AFTER INSERT OR UPDATE OR DELETE ON rollout_stages
    FOR EACH STATEMENT EXECUTE FUNCTION offer_generation_bump();
