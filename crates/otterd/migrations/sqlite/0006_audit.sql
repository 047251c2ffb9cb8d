-- Issue 9, "Audit log": every management action, appended and never changed.
--
-- One row per action: who (the principal's name and role, or `system`, `anonymous`,
-- `otterd admin (offline)`), which credential (token id), what (an action name such as
-- `release.push` and its target), when (Unix seconds), from where (the peer address) and the
-- outcome (the HTTP status; NULL for actions outside HTTP). `forwarded_for` is the client address
-- a trusted proxy forwarded (only when the peer is one of `trusted_proxies`). No secret and no request body is
-- ever stored here.
CREATE TABLE audit_log (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
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
    status    INTEGER
);

-- Filters of GET /api/v1/audit; pages run newest first by id.
CREATE INDEX audit_log_by_actor ON audit_log (actor, id);
CREATE INDEX audit_log_by_action ON audit_log (action, id);
CREATE INDEX audit_log_by_target ON audit_log (target, id);
CREATE INDEX audit_log_by_time ON audit_log (at, id);

-- Append-only: the database itself refuses to change or remove an entry, whoever asks.
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: entries cannot be updated');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: entries cannot be deleted');
END;
