-- 0001_init — the first schema of Prewarm's store (see ARCHITECTURE.md, "Storage").
-- Applied once by pw_store_open inside a transaction and recorded in schema_migrations with the
-- md5 of this text: never edit it once released; add 0002_*.sql instead.

-- Functions and their pool policies: the operator's configuration, written synchronously.
CREATE TABLE functions (
    name        text PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 63),
    image       text NOT NULL CHECK (length(image) <= 255),
    memory_mb   integer NOT NULL CHECK (memory_mb > 0),
    vcpus       integer NOT NULL CHECK (vcpus > 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE pool_policies (
    function     text PRIMARY KEY REFERENCES functions (name) ON DELETE CASCADE,
    policy       text NOT NULL CHECK (policy IN ('fixed', 'keepalive')),
    min          integer NOT NULL CHECK (min >= 0),
    max          integer NOT NULL CHECK (max >= 1),
    keepalive_ms bigint NOT NULL CHECK (keepalive_ms >= 0),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (min <= max)
);

-- Hosts as last known: lets a restarted scheduler wait for the agents that were alive.
CREATE TABLE hosts (
    id          text PRIMARY KEY,
    alive       boolean NOT NULL,
    last_seen   timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Telemetry: invocations per function per wall-clock minute (minutes since the Unix epoch).
-- No foreign key: the history of a deleted function stays useful for training.
CREATE TABLE invocation_minutes (
    function    text NOT NULL,
    minute      bigint NOT NULL,
    count       bigint NOT NULL CHECK (count >= 0),
    PRIMARY KEY (function, minute)
);
CREATE INDEX invocation_minutes_minute_idx ON invocation_minutes (minute);

-- Forecasts: predicted invocations of function in minute, made horizon_min minutes ahead by
-- model_version.
CREATE TABLE forecasts (
    function      text NOT NULL,
    minute        bigint NOT NULL,
    horizon_min   integer NOT NULL CHECK (horizon_min >= 0),
    predicted     double precision NOT NULL,
    model_version text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (function, minute, horizon_min, model_version)
);

-- Trained models; at most one is active.
CREATE TABLE models (
    version     text PRIMARY KEY,
    path        text NOT NULL,
    sha256      text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    active      boolean NOT NULL DEFAULT false
);
CREATE UNIQUE INDEX models_one_active_idx ON models ((true)) WHERE active;

-- Every operator change, appended in the same transaction as the change itself.
CREATE TABLE audit_log (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    action      text NOT NULL,
    subject     text NOT NULL,
    detail      jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_log_subject_idx ON audit_log (subject, at);

-- Fencing epochs: each scheduler start takes the next value; agents reject older epochs.
CREATE SEQUENCE pw_epoch_seq AS bigint START WITH 1 MINVALUE 1;
