-- 0003_placement — where a function's VMs may go, and operators' host drains.
--
-- Placement constraints are typed columns on functions rather than one jsonb document, so the
-- database itself enforces what the scheduler validates (names, at most 8 per list, shares in
-- [0, 1]) and ordinary SQL can ask which functions are pinned to a zone. Empty lists and a
-- share of 0 mean no constraint, which is what every existing function gets.

-- pw_name_list_ok: a one-dimensional list of at most 8 names, each 1-63 characters of
-- [A-Za-z0-9._-] starting with an alphanumeric (pw_name_valid, PW_PLACE_MAX_SEL).
CREATE FUNCTION pw_name_list_ok(names text[]) RETURNS boolean
    LANGUAGE sql IMMUTABLE STRICT
    AS $$
        SELECT coalesce(array_ndims(names), 1) = 1
           AND cardinality(names) <= 8
           AND NOT EXISTS (SELECT 1 FROM unnest(names) AS n
                           WHERE n IS NULL OR n !~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$')
    $$;

ALTER TABLE functions
    ADD COLUMN placement_clouds text[] NOT NULL DEFAULT '{}'
        CHECK (pw_name_list_ok(placement_clouds)),
    ADD COLUMN placement_regions text[] NOT NULL DEFAULT '{}'
        CHECK (pw_name_list_ok(placement_regions)),
    ADD COLUMN placement_zones text[] NOT NULL DEFAULT '{}'
        CHECK (pw_name_list_ok(placement_zones)),
    ADD COLUMN placement_max_host_share double precision NOT NULL DEFAULT 0
        CHECK (placement_max_host_share >= 0 AND placement_max_host_share <= 1),
    ADD COLUMN placement_max_zone_share double precision NOT NULL DEFAULT 0
        CHECK (placement_max_zone_share >= 0 AND placement_max_zone_share <= 1);

-- An operator's drain: the host takes no new VMs and its VMs are moved elsewhere. Written
-- synchronously with an audit row; a restarted scheduler applies it before the host says
-- hello. drain_changed_at/by say when and by whom draining last changed value. A drain may
-- create the host's row (alive false, never seen) before its telemetry does.
ALTER TABLE hosts
    ADD COLUMN draining boolean NOT NULL DEFAULT false,
    ADD COLUMN drain_changed_at timestamptz,
    ADD COLUMN drain_changed_by text;
