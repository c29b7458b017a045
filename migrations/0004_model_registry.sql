-- 0004_model_registry — the models table becomes the registry behind /v1/models.
--
-- Each row is one model file the scheduler can load: where it came from (a configured file,
-- a training asked for through the API, or the periodic retraining), what it was trained on,
-- and when it was last made active. At most one row is active (models_one_active_idx, 0001);
-- activation is a transaction that moves that flag and appends an audit row.
ALTER TABLE models
    ADD COLUMN source text NOT NULL DEFAULT 'trained'
        CHECK (source IN ('file', 'trained', 'retrained')),
    ADD COLUMN train_rows bigint CHECK (train_rows >= 0),
    ADD COLUMN train_functions integer CHECK (train_functions >= 0),
    ADD COLUMN train_minutes integer CHECK (train_minutes >= 0),
    ADD COLUMN activated_at timestamptz,
    ADD CONSTRAINT models_version_ok CHECK (version ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$');
