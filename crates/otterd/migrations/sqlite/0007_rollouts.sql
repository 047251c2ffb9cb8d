-- Issue 9: staged rollouts, one deployment per (rollout, device), and leases that let one
-- instance of several run each background job. Portable SQL: the PostgreSQL migration of the
-- same number creates the same tables (BIGINT for times there).

CREATE TABLE rollouts (
    id                  TEXT    PRIMARY KEY,
    product_id          INTEGER NOT NULL REFERENCES products(id) ON DELETE CASCADE,
    release_id          TEXT    NOT NULL REFERENCES releases(id),
    -- What devices it targets: a channel, a tag, a group (by name) or a filter.
    target_kind         TEXT    NOT NULL CHECK (target_kind IN ('channel', 'tag', 'group', 'filter')),
    target              TEXT    NOT NULL,
    -- 0-based index into rollout_stages of the open stage.
    current_stage       INTEGER NOT NULL DEFAULT 0,
    state               TEXT    NOT NULL CHECK (state IN ('running', 'paused', 'completed', 'aborted')),
    pause_reason        TEXT,
    -- 'percent': more than failure_threshold % of the finished devices failed; 'count': more
    -- than failure_threshold devices failed. Judged once min_finished devices finished.
    failure_kind        TEXT    NOT NULL CHECK (failure_kind IN ('percent', 'count')),
    failure_threshold   INTEGER NOT NULL,
    min_finished        INTEGER NOT NULL,
    -- NULL: every device of the stage succeeded; otherwise this percentage of them.
    success_percent     INTEGER,
    auto_advance        BOOLEAN NOT NULL,
    soak_s              INTEGER NOT NULL,
    is_rollback         BOOLEAN NOT NULL,
    forced              BOOLEAN NOT NULL,
    -- Maintenance window, minutes after midnight UTC; both NULL: always.
    window_start        INTEGER,
    window_end          INTEGER,
    -- New deployments a minute; NULL: no limit. rate_minute/rate_count count the current minute.
    rate_per_minute     INTEGER,
    rate_minute         INTEGER NOT NULL DEFAULT 0,
    rate_count          INTEGER NOT NULL DEFAULT 0,
    -- When the open stage first met its success threshold (the soak time runs from there).
    stage_met_at        INTEGER,
    -- Failed and finished deployments of the open stage that a resume acknowledged: the
    -- failure threshold counts only those beyond them. Reset when a stage opens.
    ack_failed          INTEGER NOT NULL DEFAULT 0,
    ack_finished        INTEGER NOT NULL DEFAULT 0,
    created_by          TEXT    NOT NULL,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL
);
CREATE INDEX rollouts_by_product ON rollouts (product_id, state, created_at);

CREATE TABLE rollout_stages (
    rollout_id  TEXT    NOT NULL REFERENCES rollouts(id) ON DELETE CASCADE,
    stage       INTEGER NOT NULL,
    percent     INTEGER NOT NULL CHECK (percent BETWEEN 1 AND 100),
    PRIMARY KEY (rollout_id, stage)
);

CREATE TABLE deployments (
    rollout_id   TEXT    NOT NULL REFERENCES rollouts(id) ON DELETE CASCADE,
    device_id    TEXT    NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    release_id   TEXT    NOT NULL REFERENCES releases(id),
    stage        INTEGER NOT NULL,
    state        TEXT    NOT NULL CHECK (state IN ('assigned', 'downloading', 'downloaded',
                     'installing', 'rebooting', 'success', 'failure', 'rolled_back', 'refused',
                     'cancelled')),
    -- TRUE until the deployment reaches a final state.
    active       BOOLEAN NOT NULL,
    reason       TEXT,
    assigned_at  INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    finished_at  INTEGER,
    CONSTRAINT deployments_once_per_rollout PRIMARY KEY (rollout_id, device_id)
);
-- One active deployment per device, whatever instance assigns it.
CREATE UNIQUE INDEX deployments_one_active_per_device ON deployments (device_id) WHERE active;
CREATE INDEX deployments_by_stage ON deployments (rollout_id, stage, state);

CREATE TABLE job_leases (
    name    TEXT    PRIMARY KEY,
    holder  TEXT    NOT NULL,
    until   INTEGER NOT NULL
);
