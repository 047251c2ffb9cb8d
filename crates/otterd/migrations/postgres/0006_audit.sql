-- Issue 9, "Audit log": every management action, appended and never changed.
-- The PostgreSQL twin of migrations/sqlite/0006_audit.sql.
CREATE TABLE audit_log (
    id        BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at        BIGINT  NOT NULL,
    actor     TEXT    NOT NULL,
    role      TEXT,
    token_id  TEXT,
    action    TEXT    NOT NULL,
    target    TEXT,
    detail    TEXT,
    method    TEXT,
    route     TEXT,
    address   TEXT,
    forwarded_for TEXT,
    status    BIGINT
);

CREATE INDEX audit_log_by_actor ON audit_log (actor, id);
CREATE INDEX audit_log_by_action ON audit_log (action, id);
CREATE INDEX audit_log_by_target ON audit_log (target, id);
CREATE INDEX audit_log_by_time ON audit_log (at, id);

-- Append-only: the database itself refuses to change or remove an entry, whoever asks.
CREATE FUNCTION audit_log_refuse_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: entries cannot be %', lower(TG_OP) || 'd'
        USING ERRCODE = 'raise_exception';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_change();

-- TRUNCATE skips row triggers; refuse it with a statement trigger.
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse_change();
