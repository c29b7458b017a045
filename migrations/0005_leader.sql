-- 0005_leader — who leads: one row, written by the replica holding the leader advisory lock.
--
-- A replica that takes pg_try_advisory_lock(LEADER_LOCK) on its leader connection draws a new
-- epoch from pw_epoch_seq and writes it here with its name and backend pid; it then renews
-- renewed_at every second. A follower that finds renewed_at too old (a stopped or hung leader
-- whose session still holds the lock) ends that backend with pg_terminate_backend, which frees
-- the lock. Every config write and telemetry flush checks, in its transaction, that this row
-- still carries the writer's epoch (fencing): a deposed leader cannot write.
CREATE TABLE pw_leader (
    id          boolean PRIMARY KEY DEFAULT true CHECK (id),
    epoch       bigint NOT NULL CHECK (epoch > 0),
    holder      text NOT NULL,
    backend_pid integer NOT NULL,
    renewed_at  timestamptz NOT NULL
);
