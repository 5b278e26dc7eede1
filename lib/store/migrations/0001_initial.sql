-- The seed's schema (metrics, incidents, actions) plus what the C services
-- need beside it: the action history and the JetStream consumer positions.
-- Ids are UUIDs derived by core/ids.h; ticks are bigint; enum columns hold
-- the protobuf enum numbers (common/v1/enums.proto).

CREATE TABLE metrics (
    time         timestamptz      NOT NULL,
    tick_id      bigint           NOT NULL,
    node_id      text             NOT NULL,
    service_id   text             NOT NULL,
    metric_name  text             NOT NULL,
    metric_value double precision NOT NULL,
    labels       jsonb            NOT NULL DEFAULT '{}'
);

CREATE TABLE incidents (
    id               uuid             PRIMARY KEY,
    detected_at      timestamptz      NOT NULL,
    tick_id          bigint           NOT NULL,
    severity         int              NOT NULL CHECK (severity BETWEEN 1 AND 4),
    title            text             NOT NULL,
    description      text             NOT NULL DEFAULT '',
    rule_name        text             NOT NULL,
    resolved         boolean          NOT NULL DEFAULT false,
    target_id        text             NOT NULL,
    metric_name      text             NOT NULL DEFAULT '',
    observed_value   double precision NOT NULL DEFAULT 0,
    threshold        double precision NOT NULL DEFAULT 0,
    opened_at_tick   bigint           NOT NULL,
    updated_at_tick  bigint           NOT NULL,
    resolved_at_tick bigint,
    run_id           text             NOT NULL DEFAULT ''
);
-- The dashboard lists the open incidents of a run and the latest ones.
CREATE INDEX incidents_open_idx ON incidents (run_id, target_id) WHERE NOT resolved;
CREATE INDEX incidents_run_tick_idx ON incidents (run_id, opened_at_tick DESC);

CREATE TABLE actions (
    id                   uuid        PRIMARY KEY,
    incident_id          uuid        NOT NULL,
    proposed_at_tick     bigint      NOT NULL,
    action_type          int         NOT NULL CHECK (action_type > 0),
    target_id            text        NOT NULL,
    status               int         NOT NULL CHECK (status > 0),
    reason               text        NOT NULL DEFAULT '',
    run_id               text        NOT NULL DEFAULT '',
    updated_at_tick      bigint      NOT NULL,
    decided_by           text        NOT NULL DEFAULT '',
    status_reason        text        NOT NULL DEFAULT '',
    expires_at_tick      bigint      NOT NULL DEFAULT 0,
    escalation_level     int         NOT NULL DEFAULT 0,
    supersedes_action_id uuid,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);
-- Keyset paging of the action list: ORDER BY proposed_at_tick DESC, id DESC.
CREATE INDEX actions_page_idx ON actions (proposed_at_tick DESC, id DESC);
-- The same, filtered by target.
CREATE INDEX actions_target_page_idx ON actions (target_id, proposed_at_tick DESC, id DESC);
-- Pending actions, oldest first (expiry, the approval queue).
CREATE INDEX actions_pending_idx ON actions (proposed_at_tick, id) WHERE status = 1;
CREATE INDEX actions_incident_idx ON actions (incident_id);

CREATE TABLE action_history (
    id          bigserial   PRIMARY KEY,
    action_id   uuid        NOT NULL REFERENCES actions (id) ON DELETE CASCADE,
    from_status int         NOT NULL,
    to_status   int         NOT NULL,
    actor       text        NOT NULL,
    tick        bigint      NOT NULL,
    reason      text        NOT NULL DEFAULT '',
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX action_history_action_idx ON action_history (action_id, id);

-- The last JetStream stream sequence each consumer committed, written in the
-- same transaction as the data it consumed.
CREATE TABLE consumer_positions (
    consumer   text        PRIMARY KEY,
    stream     text        NOT NULL,
    last_seq   bigint      NOT NULL DEFAULT 0 CHECK (last_seq >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);
