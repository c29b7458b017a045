/* store.c — PostgreSQL behind a queue: migrations at open, then one store thread that owns the
 * libpq connection and runs the config writes and telemetry flushes the loop thread hands it.
 *
 * Loop thread: submits jobs, buffers telemetry (a table keyed by row, bounded, oldest dropped),
 * receives finished jobs through a uv_async and calls their callbacks. Store thread: waits on
 * a condition variable, runs jobs one at a time, reconnects with backoff when the connection is
 * gone and notices a dead idle connection by polling its socket. */
#include "store.h"

#include "pw/error.h"
#include "pw/log.h"
#include "pw/util.h"

#include <assert.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define COMP "store"

#define MIGRATION_LOCK_KEY "8104071868890509170" /* "pwrmstor" as a big-endian int64 */
#define MSG_MAX 256
#define FLUSH_CHUNK_ROWS 500     /* rows per multi-row INSERT */
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define HEALTH_CHECK_MS 1000     /* how often an idle connection is checked */
#define CLOSE_WAIT_MS 2000       /* how long close waits for the final flush */
#define STATEMENT_TIMEOUT "30s"  /* no single statement may hold the store thread longer */
#define BYTEAOID 17

/* ---- telemetry rows ---- */

enum trow_kind {
    TROW_INVOCATION, /* count invocations of name in minute */
    TROW_HOST        /* host name seen alive or dead at at_ms */
};

struct trow {
    enum trow_kind kind;
    char name[PW_NAME_MAX];
    int64_t minute; /* invocation; 0 for hosts */
    uint64_t count; /* invocation */
    int alive;      /* host */
    int64_t at_ms;  /* host, wall clock */
};

/* A buffered row on the loop thread: in the table by key, on the age list oldest first. */
struct tnode {
    struct pw_hnode hnode;
    struct pw_list age;
    struct trow row;
};

/* ---- jobs ---- */

enum job_kind {
    JOB_PUT_FUNCTION,
    JOB_DELETE_FUNCTION,
    JOB_SET_DRAIN,
    JOB_FLUSH,          /* telemetry batch; owned rows come back to the loop on failure */
    JOB_LOAD_FUNCTIONS, /* synchronous: the submitter waits for finished */
    JOB_LOAD_HOSTS,     /* synchronous */
    JOB_LOAD_INVOCATIONS, /* synchronous */
    JOB_LOAD_DRAINS,     /* synchronous */
    JOB_PUT_MODEL,
    JOB_ACTIVATE_MODEL,
    JOB_LOAD_MODELS      /* synchronous */
};

struct job {
    struct pw_list link;
    enum job_kind kind;
    int err;
    char msg[MSG_MAX];
    /* put / delete (delete uses spec.name only) */
    struct pw_function_spec spec;
    char *actor;
    pw_store_done_cb cb;
    void *arg;
    /* set drain */
    char host[PW_NAME_MAX];
    int host_valid;
    int drain;
    /* flush */
    struct trow *rows;
    size_t nrows;
    /* loads */
    struct pw_function_spec *fns;
    size_t nfns;
    char (*hosts)[PW_NAME_MAX];
    unsigned char *alive; /* load drains: per host */
    /* models: put / activate (model.version only) / load */
    struct pw_model_row model;
    int activate;
    struct pw_model_row *models;
    size_t nmodels;
    size_t nhosts;
    int64_t since_minute; /* load invocations */
    int finished; /* synchronous jobs, under mu */
};

struct pw_store {
    uv_loop_t *loop;
    uv_async_t async; /* store thread -> loop: the done list is not empty */
    uv_timer_t timer; /* telemetry flush period */
    int open_handles; /* s is freed when the last handle's close callback runs */
    int closing;
    unsigned outstanding; /* config jobs not yet answered; the async is referenced while > 0 */
    int thread_started;

    struct pw_store_options opt;
    char *conninfo;

    /* Shared between the threads, under mu. */
    pthread_mutex_t mu;
    pthread_cond_t wake;    /* store thread: a job was queued or stopping was set */
    pthread_cond_t changed; /* submitters: a synchronous job finished or the thread exited */
    pthread_t thread;
    struct pw_list jobs;
    struct pw_list done;
    int stopping; /* finish the queued jobs, then exit */
    int abandon;  /* exit now: close gave up waiting */
    int exited;
    PGcancel *cancel; /* of conn, so close can interrupt a running statement */

    /* Store thread only (the opening thread until the thread starts, close after the join). */
    PGconn *conn;
    int64_t backoff_ms;
    int64_t next_connect; /* monotonic ms */
    int64_t next_check;   /* monotonic ms */
    char last_err[MSG_MAX];

    /* Loop thread only: the telemetry buffer. */
    struct pw_htab rows;
    struct pw_list age;
    size_t nbuf;      /* rows in the table */
    size_t ninflight; /* rows handed to the store thread, counted against the bound */
    int flush_in_flight;

    /* Statistics, read from any thread. */
    atomic_int connected;
    int migrations_ok;
    _Atomic uint64_t queue_depth, buffered_rows, dropped_rows, errors, flushed_rows;
    _Atomic uint64_t epoch;  /* the leader epoch writes are fenced with; 0: not fenced */
    _Atomic uint64_t fenced; /* writes refused: another epoch leads */
};

/* ---- libpq at the boundary ---- */

/* msgf formats into a fixed buffer; truncating a long message is intended. */
static void msgf(char *dst, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void msgf(char *dst, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dst, n, fmt, ap);
    va_end(ap);
}

/* first_line copies the first line of src (without the newline) into dst. */
static void first_line(char *dst, size_t n, const char *src)
{
    if (src == NULL)
        src = "";
    size_t len = strcspn(src, "\n");
    if (len >= n)
        len = n - 1;
    memcpy(dst, src, len);
    dst[len] = '\0';
}

static void notice_cb(void *arg, const char *message)
{
    char line[MSG_MAX];
    first_line(line, sizeof(line), message);
    pw_log_debug(COMP, "postgres: %s", line);
}

/* pq_connect opens a connection; returns NULL with the reason in err. */
static PGconn *pq_connect(const char *conninfo, int64_t timeout_ms, char *err, size_t errlen)
{
    char tmo[32];
    int64_t sec = (timeout_ms + 999) / 1000;
    msgf(tmo, sizeof(tmo), "%" PRId64, sec < 1 ? (int64_t)1 : sec);
    /* The connection string is expanded in place of dbname: it overrides the TCP keepalive
     * defaults before it (which let a silent peer be noticed), and connect_timeout after it
     * comes from the options. NULL values are skipped. */
    const char *keys[] = {"keepalives_idle", "keepalives_interval", "keepalives_count", "dbname",
                          "connect_timeout", "fallback_application_name", NULL};
    const char *vals[] = {"10", "5", "3", conninfo[0] != '\0' ? conninfo : NULL, tmo, "prewarmd", NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (c == NULL) {
        msgf(err, errlen, "out of memory");
        return NULL;
    }
    if (PQstatus(c) != CONNECTION_OK) {
        first_line(err, errlen, PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    PQsetNoticeProcessor(c, notice_cb, NULL);
    return c;
}

/* exec runs one parameterised statement. It returns the result (the caller clears it) when its
 * status is want; else NULL, with the libpq detail logged and a one-line reason in msg. */
static PGresult *exec(struct pw_store *s, PGconn *c, const char *what, const char *sql, int n,
                      const char *const *params, ExecStatusType want, char *msg, size_t msglen)
{
    PGresult *r = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
    if (r != NULL && PQresultStatus(r) == want)
        return r;
    char detail[MSG_MAX];
    if (r != NULL && PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) != NULL)
        first_line(detail, sizeof(detail), PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY));
    else
        first_line(detail, sizeof(detail), PQerrorMessage(c));
    const char *state = r != NULL ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    pw_log_warn(COMP, "%s failed (sqlstate %s): %s", what, state != NULL ? state : "none",
                r != NULL ? PQresultErrorMessage(r) : PQerrorMessage(c));
    msgf(msg, msglen, "%s: %s", what, detail);
    atomic_fetch_add(&s->errors, 1);
    PQclear(r);
    return NULL;
}

/* exec_cmd runs a statement that returns no rows; returns PW_OK or PW_ERR_STORE. */
static int exec_cmd(struct pw_store *s, PGconn *c, const char *what, const char *sql, int n,
                    const char *const *params, char *msg, size_t msglen)
{
    PGresult *r = exec(s, c, what, sql, n, params, PGRES_COMMAND_OK, msg, msglen);
    if (r == NULL)
        return PW_ERR_STORE;
    PQclear(r);
    return PW_OK;
}

/* session_setup prepares a fresh connection for the store thread. */
static int session_setup(struct pw_store *s, PGconn *c, char *msg, size_t msglen)
{
    return exec_cmd(s, c, "set statement_timeout", "SET statement_timeout = '" STATEMENT_TIMEOUT "'",
                    0, NULL, msg, msglen);
}

/* ---- migrations ---- */

static int migration_checksum(struct pw_store *s, PGconn *c, const struct pw_migration *m, char *sum,
                              size_t sumlen, char *errbuf, size_t errlen)
{
    /* The text goes in as bytea so the checksum covers its exact bytes, whatever the encoding. */
    const char *params[1] = {m->sql};
    const int lengths[1] = {(int)strlen(m->sql)};
    const int formats[1] = {1};
    const Oid types[1] = {BYTEAOID};
    PGresult *r = PQexecParams(c, "SELECT md5($1)", 1, types, params, lengths, formats, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        char detail[MSG_MAX];
        first_line(detail, sizeof(detail), r != NULL ? PQresultErrorMessage(r) : PQerrorMessage(c));
        pw_log_warn(COMP, "md5 of migration %s failed: %s", m->name, detail);
        msgf(errbuf, errlen, "migration %s: checksum: %s", m->name, detail);
        atomic_fetch_add(&s->errors, 1);
        PQclear(r);
        return PW_ERR_STORE;
    }
    pw_strlcpy(sum, PQgetvalue(r, 0, 0), sumlen);
    PQclear(r);
    return PW_OK;
}

static int migration_apply(struct pw_store *s, PGconn *c, const struct pw_migration *m, const char *sum,
                           char *errbuf, size_t errlen)
{
    char msg[MSG_MAX];
    int rv = exec_cmd(s, c, "begin", "BEGIN", 0, NULL, msg, sizeof(msg));
    if (rv != PW_OK)
        goto fail;
    /* A migration is several statements, so it goes through the simple query protocol; it is
     * our own embedded text, never a value. */
    PGresult *r = PQexec(c, m->sql);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        first_line(msg, sizeof(msg), r != NULL ? PQresultErrorMessage(r) : PQerrorMessage(c));
        pw_log_warn(COMP, "migration %s failed: %s", m->name,
                    r != NULL ? PQresultErrorMessage(r) : PQerrorMessage(c));
        atomic_fetch_add(&s->errors, 1);
        PQclear(r);
        rv = PW_ERR_STORE;
        goto fail;
    }
    PQclear(r);
    const char *params[2] = {m->name, sum};
    rv = exec_cmd(s, c, "record migration",
                  "INSERT INTO schema_migrations (name, checksum) VALUES ($1, $2)", 2, params, msg,
                  sizeof(msg));
    if (rv != PW_OK)
        goto fail;
    rv = exec_cmd(s, c, "commit", "COMMIT", 0, NULL, msg, sizeof(msg));
    if (rv != PW_OK)
        goto fail;
    pw_log_info(COMP, "applied migration %s (md5 %s)", m->name, sum);
    return PW_OK;

fail:
    PQclear(PQexec(c, "ROLLBACK"));
    msgf(errbuf, errlen, "migration %s failed: %s", m->name, msg);
    return rv;
}

/* migrate applies the embedded migrations not yet recorded, under the advisory lock, and checks
 * the checksums of those recorded. On error the connection may hold the lock: close it. */
static int migrate(struct pw_store *s, PGconn *c, char *errbuf, size_t errlen)
{
    char msg[MSG_MAX];
    const char *key[1] = {MIGRATION_LOCK_KEY};
    PGresult *r = exec(s, c, "migration lock", "SELECT pg_advisory_lock($1::bigint)", 1, key,
                       PGRES_TUPLES_OK, msg, sizeof(msg));
    if (r == NULL)
        goto fail;
    PQclear(r);
    if (exec_cmd(s, c, "create schema_migrations",
                 "CREATE TABLE IF NOT EXISTS schema_migrations ("
                 "name text PRIMARY KEY, checksum text NOT NULL, "
                 "applied_at timestamptz NOT NULL DEFAULT now())",
                 0, NULL, msg, sizeof(msg)) != PW_OK)
        goto fail;

    for (size_t i = 0; i < pw_migrations_count; i++) {
        const struct pw_migration *m = &pw_migrations[i];
        char sum[64];
        int rv = migration_checksum(s, c, m, sum, sizeof(sum), errbuf, errlen);
        if (rv != PW_OK)
            return rv;
        const char *name[1] = {m->name};
        r = exec(s, c, "read schema_migrations", "SELECT checksum FROM schema_migrations WHERE name = $1",
                 1, name, PGRES_TUPLES_OK, msg, sizeof(msg));
        if (r == NULL)
            goto fail;
        if (PQntuples(r) == 1) {
            if (strcmp(PQgetvalue(r, 0, 0), sum) != 0) {
                msgf(errbuf, errlen,
                         "migration %s was changed after it was applied: recorded checksum %s, "
                         "embedded %s (add a new migration instead of editing one)",
                         m->name, PQgetvalue(r, 0, 0), sum);
                pw_log_error(COMP, "%s", errbuf);
                PQclear(r);
                return PW_ERR_STORE;
            }
            PQclear(r);
            continue;
        }
        PQclear(r);
        rv = migration_apply(s, c, m, sum, errbuf, errlen);
        if (rv != PW_OK)
            return rv;
    }

    r = exec(s, c, "migration unlock", "SELECT pg_advisory_unlock($1::bigint)", 1, key,
             PGRES_TUPLES_OK, msg, sizeof(msg));
    if (r == NULL)
        goto fail;
    PQclear(r);
    return PW_OK;

fail:
    msgf(errbuf, errlen, "migrations: %s", msg);
    return PW_ERR_STORE;
}

/* ---- store thread ---- */

static void set_cancel(struct pw_store *s, PGcancel *cancel)
{
    pthread_mutex_lock(&s->mu);
    PGcancel *old = s->cancel;
    s->cancel = cancel;
    pthread_mutex_unlock(&s->mu);
    if (old != NULL)
        PQfreeCancel(old);
}

static void conn_lost(struct pw_store *s, const char *why)
{
    pw_log_warn(COMP, "PostgreSQL connection lost: %s", why);
    pw_strlcpy(s->last_err, why, sizeof(s->last_err));
    set_cancel(s, NULL);
    PQfinish(s->conn);
    s->conn = NULL;
    atomic_store(&s->connected, 0);
    s->next_connect = pw_now_mono_ms() + BACKOFF_MIN_MS;
    s->backoff_ms = 2 * BACKOFF_MIN_MS;
}

/* check_bad drops the connection if a failed statement left it broken. */
static void check_bad(struct pw_store *s, const char *msg)
{
    if (s->conn != NULL && PQstatus(s->conn) == CONNECTION_BAD)
        conn_lost(s, msg);
}

static void try_connect(struct pw_store *s)
{
    char err[MSG_MAX];
    PGconn *c = pq_connect(s->conninfo, s->opt.connect_timeout_ms, err, sizeof(err));
    if (c != NULL && session_setup(s, c, err, sizeof(err)) != PW_OK) {
        PQfinish(c);
        c = NULL;
    }
    int64_t now = pw_now_mono_ms();
    if (c == NULL) {
        /* Warn once per outage; every attempt at debug. */
        if (s->backoff_ms <= 2 * BACKOFF_MIN_MS)
            pw_log_warn(COMP, "cannot connect to PostgreSQL (retrying with backoff): %s", err);
        else
            pw_log_debug(COMP, "cannot connect to PostgreSQL (retry in %" PRId64 " ms): %s",
                         s->backoff_ms, err);
        pw_strlcpy(s->last_err, err, sizeof(s->last_err));
        s->next_connect = now + s->backoff_ms;
        s->backoff_ms = PW_MIN(s->backoff_ms * 2, (int64_t)BACKOFF_MAX_MS);
        return;
    }
    s->conn = c;
    set_cancel(s, PQgetCancel(c));
    s->backoff_ms = BACKOFF_MIN_MS;
    s->next_check = now + HEALTH_CHECK_MS;
    atomic_store(&s->connected, 1);
    pw_log_info(COMP, "connected to PostgreSQL");
}

/* health_check notices an idle connection the server closed: its socket turns readable. */
static void health_check(struct pw_store *s)
{
    s->next_check = pw_now_mono_ms() + HEALTH_CHECK_MS;
    for (int i = 0; i < 4 && s->conn != NULL; i++) {
        struct pollfd p = {.fd = PQsocket(s->conn), .events = POLLIN};
        if (p.fd < 0 || poll(&p, 1, 0) <= 0)
            break;
        if (!PQconsumeInput(s->conn) || PQstatus(s->conn) == CONNECTION_BAD) {
            char why[MSG_MAX];
            first_line(why, sizeof(why), PQerrorMessage(s->conn));
            conn_lost(s, why);
            return;
        }
        /* Parse what arrived (an error before the server closes), so notices are reported. */
        while (!PQisBusy(s->conn)) {
            PGresult *r = PQgetResult(s->conn);
            if (r == NULL)
                break;
            PQclear(r);
        }
    }
}

/* not_connected fails a job at once while PostgreSQL is unreachable. */
static int not_connected(struct pw_store *s, struct job *j)
{
    if (s->conn != NULL)
        return 0;
    j->err = PW_ERR_STORE;
    msgf(j->msg, sizeof(j->msg), "PostgreSQL unavailable: %s",
             s->last_err[0] != '\0' ? s->last_err : "not connected");
    return 1;
}

/* tx_end commits when rv is PW_OK, else rolls back; returns the final result. */
/* tx_begin opens a write transaction fenced by the leader's epoch: once an epoch is set
 * (pw_store_set_epoch), pw_leader must still carry it, or the transaction is rolled back and
 * PW_ERR_STALE returned — a deposed leader cannot write. */
static int tx_begin(struct pw_store *s, char *msg, size_t msglen)
{
    int rv = exec_cmd(s, s->conn, "begin", "BEGIN", 0, NULL, msg, msglen);
    uint64_t mine = atomic_load(&s->epoch);
    if (rv != PW_OK || mine == 0)
        return rv;
    PGresult *r = exec(s, s->conn, "fence", "SELECT epoch FROM pw_leader FOR SHARE", 0, NULL, PGRES_TUPLES_OK, msg,
                       msglen);
    if (r == NULL) {
        rv = PW_ERR_STORE;
    } else {
        uint64_t theirs = PQntuples(r) == 1 ? strtoull(PQgetvalue(r, 0, 0), NULL, 10) : 0;
        PQclear(r);
        if (theirs != mine) {
            msgf(msg, msglen, "fenced: this scheduler's epoch %" PRIu64 " is not the leader's (%" PRIu64 ")", mine,
                 theirs);
            atomic_fetch_add(&s->fenced, 1);
            rv = PW_ERR_STALE;
        }
    }
    if (rv != PW_OK && PQstatus(s->conn) != CONNECTION_BAD)
        PQclear(PQexec(s->conn, "ROLLBACK"));
    return rv;
}

void pw_store_set_epoch(struct pw_store *s, uint64_t epoch)
{
    atomic_store(&s->epoch, epoch);
}

/* job_begin opens a job's fenced transaction; on failure the job carries the error. */
static int job_begin(struct pw_store *s, struct job *j)
{
    int rv = tx_begin(s, j->msg, sizeof(j->msg));
    if (rv != PW_OK) {
        check_bad(s, j->msg);
        j->err = rv;
    }
    return rv;
}

/* job_query runs a read for a job; on failure the job carries the error and NULL comes back. */
static PGresult *job_query(struct pw_store *s, struct job *j, const char *what, const char *sql, int n,
                           const char *const *params)
{
    PGresult *r = exec(s, s->conn, what, sql, n, params, PGRES_TUPLES_OK, j->msg, sizeof(j->msg));
    if (r == NULL) {
        j->err = PW_ERR_STORE;
        check_bad(s, j->msg);
    }
    return r;
}

static int tx_end(struct pw_store *s, int rv, char *msg, size_t msglen)
{
    if (rv == PW_OK)
        rv = exec_cmd(s, s->conn, "commit", "COMMIT", 0, NULL, msg, msglen);
    if (rv != PW_OK) {
        if (PQstatus(s->conn) != CONNECTION_BAD)
            PQclear(PQexec(s->conn, "ROLLBACK"));
        check_bad(s, msg);
    }
    return rv;
}

static const char SQL_PUT_FUNCTION[] =
    "INSERT INTO functions (name, image, memory_mb, vcpus, placement_clouds, placement_regions, "
    "placement_zones, placement_max_host_share, placement_max_zone_share) "
    "VALUES ($1, $2, $3, $4, $5::text[], $6::text[], $7::text[], $8, $9) "
    "ON CONFLICT (name) DO UPDATE SET image = EXCLUDED.image, memory_mb = EXCLUDED.memory_mb, "
    "vcpus = EXCLUDED.vcpus, placement_clouds = EXCLUDED.placement_clouds, "
    "placement_regions = EXCLUDED.placement_regions, placement_zones = EXCLUDED.placement_zones, "
    "placement_max_host_share = EXCLUDED.placement_max_host_share, "
    "placement_max_zone_share = EXCLUDED.placement_max_zone_share, updated_at = now()";
static const char SQL_PUT_POLICY[] =
    "INSERT INTO pool_policies (function, policy, min, max, keepalive_ms, quantile) "
    "VALUES ($1, $2, $3, $4, $5, $6) "
    "ON CONFLICT (function) DO UPDATE SET policy = EXCLUDED.policy, min = EXCLUDED.min, "
    "max = EXCLUDED.max, keepalive_ms = EXCLUDED.keepalive_ms, quantile = EXCLUDED.quantile, "
    "updated_at = now()";
static const char SQL_AUDIT_PUT[] =
    "INSERT INTO audit_log (actor, action, subject, detail) VALUES ($1, 'function.put', $2, "
    "jsonb_build_object('image', $3::text, 'memory_mb', $4::integer, 'vcpus', $5::integer, "
    "'pool', jsonb_build_object('policy', $6::text, 'min', $7::integer, 'max', $8::integer, "
    "'keepalive_ms', $9::bigint, 'quantile', $10::double precision), "
    "'placement', jsonb_build_object('clouds', to_jsonb($11::text[]), 'regions', to_jsonb($12::text[]), "
    "'zones', to_jsonb($13::text[]), 'max_host_share', $14::double precision, "
    "'max_zone_share', $15::double precision)))";
static const char SQL_DELETE_FUNCTION[] = "DELETE FROM functions WHERE name = $1";
static const char SQL_AUDIT_DELETE[] =
    "INSERT INTO audit_log (actor, action, subject, detail) VALUES ($1, 'function.delete', $2, "
    "jsonb_build_object('existed', $3::boolean))";
/* The row lock keeps "changed" in the audit row exact against a concurrent writer of the row. */
static const char SQL_DRAIN_READ[] = "SELECT draining FROM hosts WHERE id = $1 FOR UPDATE";
/* A drain may come before the host's first telemetry row: the row it creates is never seen and
 * not alive, so the telemetry upsert (last_seen <= its own) overwrites both. */
static const char SQL_DRAIN_SET[] =
    "INSERT INTO hosts (id, alive, last_seen, draining, drain_changed_at, drain_changed_by) "
    "VALUES ($1, false, '-infinity', true, now(), $2) "
    "ON CONFLICT (id) DO UPDATE SET draining = true, "
    "drain_changed_at = CASE WHEN hosts.draining THEN hosts.drain_changed_at ELSE now() END, "
    "drain_changed_by = CASE WHEN hosts.draining THEN hosts.drain_changed_by ELSE EXCLUDED.drain_changed_by END, "
    "updated_at = now()";
static const char SQL_UNDRAIN_SET[] =
    "UPDATE hosts SET draining = false, drain_changed_at = now(), drain_changed_by = $2, updated_at = now() "
    "WHERE id = $1 AND draining";
static const char SQL_AUDIT_DRAIN[] =
    "INSERT INTO audit_log (actor, action, subject, detail) VALUES ($1, $2, $3, "
    "jsonb_build_object('draining', $4::boolean, 'changed', $5::boolean))";

/* Room for PW_PLACE_MAX_SEL names of PW_NAME_MAX - 1 bytes, each fully escaped and quoted. */
#define TEXT_ARRAY_MAX (PW_PLACE_MAX_SEL * (2 * PW_NAME_MAX + 3) + 3)

/* text_array writes names[0..n) (n <= PW_PLACE_MAX_SEL) as a PostgreSQL array literal, every
 * element quoted. Names are valid names (no quote or backslash), but escaping keeps the literal
 * right whatever they hold. */
static void text_array(char out[TEXT_ARRAY_MAX], const char (*names)[PW_NAME_MAX], size_t n)
{
    assert(n <= PW_PLACE_MAX_SEL);
    size_t k = 0;
    out[k++] = '{';
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            out[k++] = ',';
        out[k++] = '"';
        for (size_t c = 0; c < PW_NAME_MAX - 1 && names[i][c] != '\0'; c++) {
            if (names[i][c] == '"' || names[i][c] == '\\')
                out[k++] = '\\';
            out[k++] = names[i][c];
        }
        out[k++] = '"';
    }
    out[k++] = '}';
    out[k] = '\0';
}

static void run_put_function(struct pw_store *s, struct job *j)
{
    const struct pw_function_spec *f = &j->spec;
    const struct pw_placement_spec *pl = &f->placement;
    if ((unsigned)f->pool.kind >= PW_POLICY__COUNT) {
        j->err = PW_ERR_STORE;
        msgf(j->msg, sizeof(j->msg), "put function %s: unknown pool policy %d", f->name,
                 (int)f->pool.kind);
        return;
    }
    if (pl->nclouds > PW_PLACE_MAX_SEL || pl->nregions > PW_PLACE_MAX_SEL || pl->nzones > PW_PLACE_MAX_SEL) {
        j->err = PW_ERR_STORE;
        msgf(j->msg, sizeof(j->msg), "put function %s: a placement list has more than %d entries", f->name,
             PW_PLACE_MAX_SEL);
        return;
    }
    const char *policy = pw_policy_str(f->pool.kind);
    char mem[16], vcpus[16], min[16], max[16], ka[24], q[32], hs[32], zs[32];
    char clouds[TEXT_ARRAY_MAX], regions[TEXT_ARRAY_MAX], zones[TEXT_ARRAY_MAX];
    msgf(mem, sizeof(mem), "%" PRIu32, f->memory_mb);
    msgf(vcpus, sizeof(vcpus), "%" PRIu32, f->vcpus);
    msgf(min, sizeof(min), "%" PRIu32, f->pool.min);
    msgf(max, sizeof(max), "%" PRIu32, f->pool.max);
    msgf(ka, sizeof(ka), "%" PRId64, f->pool.keepalive_ms);
    msgf(q, sizeof(q), "%.17g", f->pool.quantile);
    msgf(hs, sizeof(hs), "%.17g", pl->max_host_share);
    msgf(zs, sizeof(zs), "%.17g", pl->max_zone_share);
    text_array(clouds, pl->clouds, pl->nclouds);
    text_array(regions, pl->regions, pl->nregions);
    text_array(zones, pl->zones, pl->nzones);
    const char *pf[9] = {f->name, f->image, mem, vcpus, clouds, regions, zones, hs, zs};
    const char *pp[6] = {f->name, policy, min, max, ka, q};
    const char *pa[15] = {j->actor, f->name, f->image, mem, vcpus, policy, min, max, ka, q,
                          clouds, regions, zones, hs, zs};

    int rv = job_begin(s, j);
    if (rv != PW_OK)
        return;
    rv = exec_cmd(s, s->conn, "put function", SQL_PUT_FUNCTION, 9, pf, j->msg, sizeof(j->msg));
    if (rv == PW_OK)
        rv = exec_cmd(s, s->conn, "put pool policy", SQL_PUT_POLICY, 6, pp, j->msg, sizeof(j->msg));
    if (rv == PW_OK)
        rv = exec_cmd(s, s->conn, "audit function.put", SQL_AUDIT_PUT, 15, pa, j->msg, sizeof(j->msg));
    j->err = tx_end(s, rv, j->msg, sizeof(j->msg));
}

static void run_delete_function(struct pw_store *s, struct job *j)
{
    int rv = job_begin(s, j);
    if (rv != PW_OK)
        return;
    const char *pd[1] = {j->spec.name};
    PGresult *r = exec(s, s->conn, "delete function", SQL_DELETE_FUNCTION, 1, pd, PGRES_COMMAND_OK,
                       j->msg, sizeof(j->msg));
    if (r == NULL) {
        rv = PW_ERR_STORE;
    } else {
        const char *existed = strcmp(PQcmdTuples(r), "0") != 0 ? "true" : "false";
        PQclear(r);
        const char *pa[3] = {j->actor, j->spec.name, existed};
        rv = exec_cmd(s, s->conn, "audit function.delete", SQL_AUDIT_DELETE, 3, pa, j->msg,
                      sizeof(j->msg));
    }
    j->err = tx_end(s, rv, j->msg, sizeof(j->msg));
}

/* run_set_drain sets or clears a host's drain with its audit row, in one transaction. */
static void run_set_drain(struct pw_store *s, struct job *j)
{
    const char *action = j->drain ? "host.drain" : "host.undrain";
    if (!j->host_valid) {
        j->err = PW_ERR_STORE;
        msgf(j->msg, sizeof(j->msg), "%s: host id \"%s\" is not a valid name", action, j->host);
        return;
    }
    int rv = job_begin(s, j);
    if (rv != PW_OK)
        return;
    const char *pr[1] = {j->host};
    PGresult *r = exec(s, s->conn, "read host drain", SQL_DRAIN_READ, 1, pr, PGRES_TUPLES_OK, j->msg,
                       sizeof(j->msg));
    if (r == NULL) {
        rv = PW_ERR_STORE;
    } else {
        int was = PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), "t") == 0;
        PQclear(r);
        const char *ps[2] = {j->host, j->actor};
        rv = exec_cmd(s, s->conn, action, j->drain ? SQL_DRAIN_SET : SQL_UNDRAIN_SET, 2, ps, j->msg,
                      sizeof(j->msg));
        if (rv == PW_OK) {
            const char *pa[5] = {j->actor, action, j->host, j->drain ? "true" : "false",
                                 was != j->drain ? "true" : "false"};
            rv = exec_cmd(s, s->conn, "audit host drain", SQL_AUDIT_DRAIN, 5, pa, j->msg, sizeof(j->msg));
        }
    }
    j->err = tx_end(s, rv, j->msg, sizeof(j->msg));
}

/* flush_chunk writes rows[0..n) (all of one kind) with one multi-row upsert. */
static int flush_chunk(struct pw_store *s, const struct trow *rows, size_t n, char *msg, size_t msglen)
{
    assert(n > 0 && n <= FLUSH_CHUNK_ROWS);
    char(*nums)[2][24] = pw_xmalloc(sizeof(*nums) * n);
    const char **params = pw_xmalloc(sizeof(*params) * 3 * n);
    struct pw_buf sql;
    pw_buf_init(&sql, 1 << 20);
    int host = rows[0].kind == TROW_HOST;
    pw_buf_adds(&sql, host ? "INSERT INTO hosts (id, alive, last_seen) VALUES "
                           : "INSERT INTO invocation_minutes (function, minute, count) VALUES ");
    for (size_t i = 0; i < n; i++) {
        const struct trow *t = &rows[i];
        size_t p = 3 * i + 1;
        if (host) {
            pw_buf_printf(&sql, "%s($%zu, $%zu::boolean, to_timestamp($%zu::double precision / 1000))",
                          i ? ", " : "", p, p + 1, p + 2);
            msgf(nums[i][0], sizeof(nums[i][0]), "%s", t->alive ? "true" : "false");
            msgf(nums[i][1], sizeof(nums[i][1]), "%" PRId64, t->at_ms);
        } else {
            pw_buf_printf(&sql, "%s($%zu, $%zu::bigint, $%zu::bigint)", i ? ", " : "", p, p + 1, p + 2);
            msgf(nums[i][0], sizeof(nums[i][0]), "%" PRId64, t->minute);
            msgf(nums[i][1], sizeof(nums[i][1]), "%" PRIu64, t->count);
        }
        params[3 * i] = t->name;
        params[3 * i + 1] = nums[i][0];
        params[3 * i + 2] = nums[i][1];
    }
    pw_buf_adds(&sql, host ? " ON CONFLICT (id) DO UPDATE SET alive = EXCLUDED.alive, "
                             "last_seen = EXCLUDED.last_seen, updated_at = now() "
                             "WHERE hosts.last_seen <= EXCLUDED.last_seen"
                           : " ON CONFLICT (function, minute) DO UPDATE "
                             "SET count = invocation_minutes.count + EXCLUDED.count");
    int rv = exec_cmd(s, s->conn, host ? "flush hosts" : "flush invocations", sql.data, (int)(3 * n),
                      params, msg, msglen);
    pw_buf_fini(&sql);
    free(params);
    free(nums);
    return rv;
}

/* run_flush writes a telemetry batch in one transaction at synchronous_commit=off: a lost
 * commit costs a second of telemetry, never config. All or nothing, so a failed batch can be
 * buffered again without double counting. */
static void run_flush(struct pw_store *s, struct job *j)
{
    int rv = job_begin(s, j);
    if (rv != PW_OK)
        return;
    rv = exec_cmd(s, s->conn, "set synchronous_commit", "SET LOCAL synchronous_commit = off", 0, NULL,
                  j->msg, sizeof(j->msg));
    /* The batch comes from a table keyed by row, so no key repeats within a statement (which
     * ON CONFLICT DO UPDATE would refuse). Rows of one kind are grouped per chunk. */
    for (int kind = TROW_INVOCATION; kind <= TROW_HOST && rv == PW_OK; kind++) {
        struct trow *chunk = pw_xmalloc(sizeof(*chunk) * FLUSH_CHUNK_ROWS);
        size_t n = 0;
        for (size_t i = 0; i < j->nrows && rv == PW_OK; i++) {
            if ((int)j->rows[i].kind != kind)
                continue;
            chunk[n++] = j->rows[i];
            if (n == FLUSH_CHUNK_ROWS) {
                rv = flush_chunk(s, chunk, n, j->msg, sizeof(j->msg));
                n = 0;
            }
        }
        if (rv == PW_OK && n > 0)
            rv = flush_chunk(s, chunk, n, j->msg, sizeof(j->msg));
        free(chunk);
    }
    j->err = tx_end(s, rv, j->msg, sizeof(j->msg));
}

static int parse_u32(const char *v, uint32_t *out)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno != 0 || end == v || *end != '\0' || x > UINT32_MAX)
        return -1;
    *out = (uint32_t)x;
    return 0;
}

static int parse_i64(const char *v, int64_t *out)
{
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno != 0 || end == v || *end != '\0')
        return -1;
    *out = x;
    return 0;
}

static int parse_double(const char *v, double *out)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno != 0 || end == v || *end != '\0')
        return -1;
    *out = x;
    return 0;
}

/* parse_names reads a JSON array of at most PW_PLACE_MAX_SEL strings that fit PW_NAME_MAX. */
static int parse_names(const char *json, char (*out)[PW_NAME_MAX], size_t *n)
{
    int rv = -1;
    cJSON *a = cJSON_Parse(json);
    *n = 0;
    if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) > PW_PLACE_MAX_SEL)
        goto out;
    const cJSON *it;
    cJSON_ArrayForEach(it, a) {
        if (!cJSON_IsString(it) || pw_strlcpy(out[*n], it->valuestring, PW_NAME_MAX) >= PW_NAME_MAX)
            goto out;
        (*n)++;
    }
    rv = 0;
out:
    cJSON_Delete(a);
    return rv;
}

/* Columns of SQL_LOAD_FUNCTIONS, in order. */
enum {
    COL_NAME, COL_IMAGE, COL_MEMORY, COL_VCPUS, COL_CLOUDS, COL_REGIONS, COL_ZONES, COL_HOST_SHARE,
    COL_ZONE_SHARE, COL_POLICY, COL_MIN, COL_MAX, COL_KEEPALIVE, COL_QUANTILE
};
static const char SQL_LOAD_FUNCTIONS[] =
    "SELECT f.name, f.image, f.memory_mb, f.vcpus, array_to_json(f.placement_clouds)::text, "
    "array_to_json(f.placement_regions)::text, array_to_json(f.placement_zones)::text, "
    "f.placement_max_host_share, f.placement_max_zone_share, "
    "p.policy, p.min, p.max, p.keepalive_ms, p.quantile "
    "FROM functions f LEFT JOIN pool_policies p ON p.function = f.name ORDER BY f.name";

/* row_to_spec fills f from a row of the load query; returns -1 for a row that does not fit. */
static int row_to_spec(PGresult *r, int i, struct pw_function_spec *f)
{
    memset(f, 0, sizeof(*f));
    struct pw_placement_spec *pl = &f->placement;
    if (pw_strlcpy(f->name, PQgetvalue(r, i, COL_NAME), sizeof(f->name)) >= sizeof(f->name) ||
        pw_strlcpy(f->image, PQgetvalue(r, i, COL_IMAGE), sizeof(f->image)) >= sizeof(f->image) ||
        parse_u32(PQgetvalue(r, i, COL_MEMORY), &f->memory_mb) != 0 ||
        parse_u32(PQgetvalue(r, i, COL_VCPUS), &f->vcpus) != 0 ||
        parse_names(PQgetvalue(r, i, COL_CLOUDS), pl->clouds, &pl->nclouds) != 0 ||
        parse_names(PQgetvalue(r, i, COL_REGIONS), pl->regions, &pl->nregions) != 0 ||
        parse_names(PQgetvalue(r, i, COL_ZONES), pl->zones, &pl->nzones) != 0 ||
        parse_double(PQgetvalue(r, i, COL_HOST_SHARE), &pl->max_host_share) != 0 ||
        parse_double(PQgetvalue(r, i, COL_ZONE_SHARE), &pl->max_zone_share) != 0)
        return -1;
    if (PQgetisnull(r, i, COL_POLICY)) {
        pw_pool_policy_default(&f->pool);
        return 0;
    }
    int kind = pw_policy_parse(PQgetvalue(r, i, COL_POLICY));
    if (kind < 0 || parse_u32(PQgetvalue(r, i, COL_MIN), &f->pool.min) != 0 ||
        parse_u32(PQgetvalue(r, i, COL_MAX), &f->pool.max) != 0 ||
        parse_i64(PQgetvalue(r, i, COL_KEEPALIVE), &f->pool.keepalive_ms) != 0 ||
        parse_double(PQgetvalue(r, i, COL_QUANTILE), &f->pool.quantile) != 0)
        return -1;
    f->pool.kind = (enum pw_policy_kind)kind;
    return 0;
}

static void run_load_functions(struct pw_store *s, struct job *j)
{
    PGresult *r = job_query(s, j, "load functions", SQL_LOAD_FUNCTIONS, 0, NULL);
    if (r == NULL)
        return;
    int n = PQntuples(r);
    j->fns = pw_xcalloc(n > 0 ? (size_t)n : 1, sizeof(*j->fns));
    for (int i = 0; i < n; i++) {
        if (row_to_spec(r, i, &j->fns[j->nfns]) != 0) {
            pw_log_warn(COMP, "skipping function row %s: a value does not fit", PQgetvalue(r, i, 0));
            continue;
        }
        j->nfns++;
    }
    PQclear(r);
}

/* run_load_invocations reads invocation minutes since j->since_minute into j->rows, ordered by
 * function and minute; rows whose values do not fit are skipped with a warning. */
static void run_load_invocations(struct pw_store *s, struct job *j)
{
    char since[24];
    msgf(since, sizeof(since), "%" PRId64, j->since_minute);
    const char *params[1] = {since};
    PGresult *r = job_query(s, j, "load invocations",
                            "SELECT function, minute, count FROM invocation_minutes WHERE minute >= $1 "
                            "ORDER BY function, minute",
                            1, params);
    if (r == NULL)
        return;
    int n = PQntuples(r);
    j->rows = pw_xcalloc(n > 0 ? (size_t)n : 1, sizeof(*j->rows));
    for (int i = 0; i < n; i++) {
        struct trow *row = &j->rows[j->nrows];
        int64_t count;
        if (pw_strlcpy(row->name, PQgetvalue(r, i, 0), sizeof(row->name)) >= sizeof(row->name) ||
            parse_i64(PQgetvalue(r, i, 1), &row->minute) != 0 || parse_i64(PQgetvalue(r, i, 2), &count) != 0 ||
            count < 0) {
            pw_log_warn(COMP, "skipping invocation row of %s: a value does not fit", PQgetvalue(r, i, 0));
            continue;
        }
        row->kind = TROW_INVOCATION;
        row->count = (uint64_t)count;
        j->nrows++;
    }
    PQclear(r);
}

/* load_host_rows runs a query whose rows are (id[, alive]) into j->hosts (and j->alive when
 * the query has the second column). */
static void load_host_rows(struct pw_store *s, struct job *j, const char *what, const char *sql, int with_alive)
{
    PGresult *r = job_query(s, j, what, sql, 0, NULL);
    if (r == NULL)
        return;
    int n = PQntuples(r);
    j->hosts = pw_xcalloc(n > 0 ? (size_t)n : 1, sizeof(*j->hosts));
    if (with_alive)
        j->alive = pw_xcalloc(n > 0 ? (size_t)n : 1, sizeof(*j->alive));
    for (int i = 0; i < n; i++) {
        if (pw_strlcpy(j->hosts[j->nhosts], PQgetvalue(r, i, 0), PW_NAME_MAX) >= PW_NAME_MAX) {
            pw_log_warn(COMP, "%s: skipping host row %s: id too long", what, PQgetvalue(r, i, 0));
            continue;
        }
        if (with_alive)
            j->alive[j->nhosts] = strcmp(PQgetvalue(r, i, 1), "t") == 0;
        j->nhosts++;
    }
    PQclear(r);
}

static void run_load_hosts(struct pw_store *s, struct job *j)
{
    load_host_rows(s, j, "load hosts", "SELECT id FROM hosts WHERE alive ORDER BY id", 0);
}

static void run_load_drains(struct pw_store *s, struct job *j)
{
    load_host_rows(s, j, "load drains", "SELECT id, alive FROM hosts WHERE draining ORDER BY id", 1);
}

/* ---- the model registry ---- */

const char *pw_model_source_str(enum pw_model_source src)
{
    switch (src) {
    case PW_MODEL_FILE:
        return "file";
    case PW_MODEL_TRAINED:
        return "trained";
    case PW_MODEL_RETRAINED:
        return "retrained";
    }
    return "trained";
}

static int model_source_parse(const char *v, enum pw_model_source *out)
{
    for (int i = PW_MODEL_FILE; i <= PW_MODEL_RETRAINED; i++)
        if (strcmp(v, pw_model_source_str((enum pw_model_source)i)) == 0) {
            *out = (enum pw_model_source)i;
            return 0;
        }
    return -1;
}

static const char SQL_MODEL_READ[] = "SELECT sha256 FROM models WHERE version = $1 FOR UPDATE";
static const char SQL_MODEL_INSERT[] =
    "INSERT INTO models (version, path, sha256, source, train_rows, train_functions, train_minutes) "
    "VALUES ($1, $2, $3, $4, $5::bigint, $6::integer, $7::integer)";
static const char SQL_MODEL_DEACTIVATE[] = "UPDATE models SET active = false WHERE active AND version <> $1";
static const char SQL_MODEL_ACTIVATE[] =
    "UPDATE models SET active = true, activated_at = now() WHERE version = $1 AND NOT active";
static const char SQL_AUDIT_MODEL[] =
    "INSERT INTO audit_log (actor, action, subject, detail) VALUES ($1, $2, $3, "
    "jsonb_build_object('sha256', $4::text, 'path', $5::text, 'source', $6::text))";
static const char SQL_LOAD_MODELS[] =
    "SELECT version, path, sha256, source, (extract(epoch FROM created_at) * 1000)::bigint, "
    "coalesce((extract(epoch FROM activated_at) * 1000)::bigint, 0), coalesce(train_rows, -1), "
    "coalesce(train_functions, -1), coalesce(train_minutes, -1), active FROM models ORDER BY created_at, version";

/* activate_in_tx moves the active flag to version (inside an open transaction) and audits it. */
static int activate_in_tx(struct pw_store *s, struct job *j, const char *version, const char *sha,
                          const char *path, const char *source)
{
    const char *pv[1] = {version};
    int rv = exec_cmd(s, s->conn, "deactivate models", SQL_MODEL_DEACTIVATE, 1, pv, j->msg, sizeof(j->msg));
    if (rv == PW_OK)
        rv = exec_cmd(s, s->conn, "activate model", SQL_MODEL_ACTIVATE, 1, pv, j->msg, sizeof(j->msg));
    if (rv == PW_OK) {
        const char *pa[6] = {j->actor, "model.activate", version, sha, path, source};
        rv = exec_cmd(s, s->conn, "audit model.activate", SQL_AUDIT_MODEL, 6, pa, j->msg, sizeof(j->msg));
    }
    return rv;
}

static void run_put_model(struct pw_store *s, struct job *j)
{
    const struct pw_model_row *m = &j->model;
    if (!pw_name_valid(m->version)) {
        j->err = PW_ERR_STORE;
        msgf(j->msg, sizeof(j->msg), "put model: version \"%s\" is not a valid name", m->version);
        return;
    }
    int rv = job_begin(s, j);
    if (rv != PW_OK)
        return;
    const char *pr[1] = {m->version};
    PGresult *r = exec(s, s->conn, "read model", SQL_MODEL_READ, 1, pr, PGRES_TUPLES_OK, j->msg, sizeof(j->msg));
    if (r == NULL) {
        rv = PW_ERR_STORE;
    } else if (PQntuples(r) == 1) {
        if (strcmp(PQgetvalue(r, 0, 0), m->sha256) != 0) {
            rv = PW_ERR_CONFLICT;
            msgf(j->msg, sizeof(j->msg), "model %s is already registered with another sha256", m->version);
        }
        PQclear(r);
    } else {
        PQclear(r);
        char rows[24], fns[24], mins[24];
        msgf(rows, sizeof(rows), "%" PRId64, m->rows);
        msgf(fns, sizeof(fns), "%" PRId64, m->functions);
        msgf(mins, sizeof(mins), "%" PRId64, m->minutes);
        const char *src = pw_model_source_str(m->source);
        const char *pi[7] = {m->version, m->path, m->sha256, src, m->rows >= 0 ? rows : NULL,
                             m->functions >= 0 ? fns : NULL, m->minutes >= 0 ? mins : NULL};
        rv = exec_cmd(s, s->conn, "register model", SQL_MODEL_INSERT, 7, pi, j->msg, sizeof(j->msg));
        if (rv == PW_OK) {
            const char *pa[6] = {j->actor, "model.register", m->version, m->sha256, m->path, src};
            rv = exec_cmd(s, s->conn, "audit model.register", SQL_AUDIT_MODEL, 6, pa, j->msg, sizeof(j->msg));
        }
    }
    if (rv == PW_OK && j->activate)
        rv = activate_in_tx(s, j, m->version, m->sha256, m->path, pw_model_source_str(m->source));
    j->err = tx_end(s, rv, j->msg, sizeof(j->msg));
}

static void run_activate_model(struct pw_store *s, struct job *j)
{
    int rv = job_begin(s, j);
    if (rv != PW_OK)
        return;
    const char *pv[1] = {j->model.version};
    PGresult *r = exec(s, s->conn, "read model",
                       "SELECT sha256, path, source FROM models WHERE version = $1 FOR UPDATE", 1, pv,
                       PGRES_TUPLES_OK, j->msg, sizeof(j->msg));
    if (r == NULL) {
        rv = PW_ERR_STORE;
    } else if (PQntuples(r) != 1) {
        PQclear(r);
        rv = PW_ERR_NOTFOUND;
        msgf(j->msg, sizeof(j->msg), "no model %s in the registry", j->model.version);
    } else {
        char sha[65], path[512], src[16];
        pw_strlcpy(sha, PQgetvalue(r, 0, 0), sizeof(sha));
        pw_strlcpy(path, PQgetvalue(r, 0, 1), sizeof(path));
        pw_strlcpy(src, PQgetvalue(r, 0, 2), sizeof(src));
        PQclear(r);
        rv = activate_in_tx(s, j, j->model.version, sha, path, src);
    }
    j->err = tx_end(s, rv, j->msg, sizeof(j->msg));
}

static void run_load_models(struct pw_store *s, struct job *j)
{
    PGresult *r = job_query(s, j, "load models", SQL_LOAD_MODELS, 0, NULL);
    if (r == NULL)
        return;
    int n = PQntuples(r);
    j->models = pw_xcalloc(n > 0 ? (size_t)n : 1, sizeof(*j->models));
    for (int i = 0; i < n; i++) {
        struct pw_model_row *m = &j->models[j->nmodels];
        if (pw_strlcpy(m->version, PQgetvalue(r, i, 0), sizeof(m->version)) >= sizeof(m->version) ||
            pw_strlcpy(m->path, PQgetvalue(r, i, 1), sizeof(m->path)) >= sizeof(m->path) ||
            pw_strlcpy(m->sha256, PQgetvalue(r, i, 2), sizeof(m->sha256)) >= sizeof(m->sha256) ||
            model_source_parse(PQgetvalue(r, i, 3), &m->source) != 0 ||
            parse_i64(PQgetvalue(r, i, 4), &m->created_ms) != 0 ||
            parse_i64(PQgetvalue(r, i, 5), &m->activated_ms) != 0 || parse_i64(PQgetvalue(r, i, 6), &m->rows) != 0 ||
            parse_i64(PQgetvalue(r, i, 7), &m->functions) != 0 || parse_i64(PQgetvalue(r, i, 8), &m->minutes) != 0) {
            pw_log_warn(COMP, "skipping model row %s: a value does not fit", PQgetvalue(r, i, 0));
            continue;
        }
        m->active = strcmp(PQgetvalue(r, i, 9), "t") == 0;
        j->nmodels++;
    }
    PQclear(r);
}

static void run_job(struct pw_store *s, struct job *j)
{
    j->err = PW_OK;
    j->msg[0] = '\0';
    if (not_connected(s, j))
        return;
    switch (j->kind) {
    case JOB_PUT_FUNCTION:
        run_put_function(s, j);
        break;
    case JOB_DELETE_FUNCTION:
        run_delete_function(s, j);
        break;
    case JOB_SET_DRAIN:
        run_set_drain(s, j);
        break;
    case JOB_FLUSH:
        run_flush(s, j);
        break;
    case JOB_LOAD_FUNCTIONS:
        run_load_functions(s, j);
        break;
    case JOB_LOAD_HOSTS:
        run_load_hosts(s, j);
        break;
    case JOB_LOAD_INVOCATIONS:
        run_load_invocations(s, j);
        break;
    case JOB_LOAD_DRAINS:
        run_load_drains(s, j);
        break;
    case JOB_PUT_MODEL:
        run_put_model(s, j);
        break;
    case JOB_ACTIVATE_MODEL:
        run_activate_model(s, j);
        break;
    case JOB_LOAD_MODELS:
        run_load_models(s, j);
        break;
    }
    if (s->conn != NULL)
        s->next_check = pw_now_mono_ms() + HEALTH_CHECK_MS;
}

static int job_is_config(const struct job *j)
{
    return j->kind == JOB_PUT_FUNCTION || j->kind == JOB_DELETE_FUNCTION || j->kind == JOB_SET_DRAIN ||
           j->kind == JOB_PUT_MODEL || j->kind == JOB_ACTIVATE_MODEL;
}

static int job_is_sync(const struct job *j)
{
    return j->kind == JOB_LOAD_FUNCTIONS || j->kind == JOB_LOAD_HOSTS || j->kind == JOB_LOAD_INVOCATIONS ||
           j->kind == JOB_LOAD_DRAINS || j->kind == JOB_LOAD_MODELS;
}

static struct timespec mono_deadline(int64_t at_ms)
{
    struct timespec ts = {.tv_sec = at_ms / 1000, .tv_nsec = (long)(at_ms % 1000) * 1000000L};
    return ts;
}

static void *store_thread(void *arg)
{
    struct pw_store *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        if (s->abandon)
            break;
        struct job *j = NULL;
        struct pw_list *e = pw_list_head(&s->jobs);
        if (e != NULL) {
            pw_list_remove(e);
            j = pw_container_of(e, struct job, link);
            if (job_is_config(j))
                atomic_fetch_sub(&s->queue_depth, 1);
        } else if (s->stopping) {
            break;
        } else {
            int64_t due = s->conn != NULL ? s->next_check : s->next_connect;
            if (due > pw_now_mono_ms()) {
                struct timespec ts = mono_deadline(due);
                pthread_cond_timedwait(&s->wake, &s->mu, &ts);
                continue;
            }
        }
        pthread_mutex_unlock(&s->mu);

        int64_t now = pw_now_mono_ms();
        if (s->conn == NULL && now >= s->next_connect)
            try_connect(s);
        else if (j == NULL && s->conn != NULL)
            health_check(s);
        if (j != NULL)
            run_job(s, j);

        pthread_mutex_lock(&s->mu);
        if (j != NULL && job_is_sync(j)) {
            j->finished = 1;
            pthread_cond_broadcast(&s->changed);
        } else if (j != NULL) {
            pw_list_push_tail(&s->done, &j->link);
            uv_async_send(&s->async);
        }
    }
    s->exited = 1;
    pthread_cond_broadcast(&s->changed);
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ---- loop thread: jobs ---- */

static void submit(struct pw_store *s, struct job *j)
{
    if (job_is_config(j))
        atomic_fetch_add(&s->queue_depth, 1);
    pthread_mutex_lock(&s->mu);
    pw_list_push_tail(&s->jobs, &j->link);
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->mu);
}

static void job_free(struct job *j)
{
    free(j->actor);
    free(j->rows);
    free(j->fns);
    free(j->hosts);
    free(j->alive);
    free(j->models);
    free(j);
}

static void buffer_add(struct pw_store *s, const struct trow *row, int oldest);

/* deliver finishes a job on the loop thread: answers a config job, or accounts for a flush. */
static void deliver(struct pw_store *s, struct job *j)
{
    if (j->kind == JOB_FLUSH) {
        s->ninflight -= j->nrows;
        s->flush_in_flight = 0;
        if (j->err == PW_OK) {
            atomic_fetch_add(&s->flushed_rows, j->nrows);
        } else if (!s->closing) {
            pw_log_debug(COMP, "telemetry flush failed, %zu rows buffered again: %s", j->nrows, j->msg);
            for (size_t i = 0; i < j->nrows; i++)
                buffer_add(s, &j->rows[i], 1);
        } else {
            pw_log_warn(COMP, "telemetry flush at close failed, %zu rows lost: %s", j->nrows, j->msg);
        }
        atomic_store(&s->buffered_rows, s->nbuf + s->ninflight);
    } else {
        if (j->cb != NULL)
            j->cb(j->arg, j->err, j->msg);
        if (--s->outstanding == 0 && !s->closing)
            uv_unref((uv_handle_t *)&s->async);
    }
    job_free(j);
}

static void deliver_all(struct pw_store *s)
{
    struct pw_list local;
    pw_list_init(&local);
    pthread_mutex_lock(&s->mu);
    while (!pw_list_empty(&s->done)) {
        struct pw_list *e = pw_list_head(&s->done);
        pw_list_remove(e);
        pw_list_push_tail(&local, e);
    }
    pthread_mutex_unlock(&s->mu);
    /* Callbacks run without the lock: they may submit more jobs. */
    while (!pw_list_empty(&local)) {
        struct pw_list *e = pw_list_head(&local);
        pw_list_remove(e);
        deliver(s, pw_container_of(e, struct job, link));
    }
}

static void on_async(uv_async_t *h)
{
    deliver_all(pw_container_of(h, struct pw_store, async));
}

static struct job *config_job(struct pw_store *s, enum job_kind kind, const char *actor,
                              pw_store_done_cb cb, void *arg)
{
    assert(!s->closing);
    struct job *j = pw_xcalloc(1, sizeof(*j));
    j->kind = kind;
    j->actor = pw_xstrdup(actor != NULL && actor[0] != '\0' ? actor : "unknown");
    j->cb = cb;
    j->arg = arg;
    if (s->outstanding++ == 0)
        uv_ref((uv_handle_t *)&s->async);
    return j;
}

void pw_store_put_function(struct pw_store *s, const struct pw_function_spec *spec, const char *actor,
                           pw_store_done_cb cb, void *arg)
{
    struct job *j = config_job(s, JOB_PUT_FUNCTION, actor, cb, arg);
    j->spec = *spec;
    j->spec.name[sizeof(j->spec.name) - 1] = '\0';
    j->spec.image[sizeof(j->spec.image) - 1] = '\0';
    struct pw_placement_spec *pl = &j->spec.placement;
    for (size_t i = 0; i < PW_PLACE_MAX_SEL; i++) {
        pl->clouds[i][PW_NAME_MAX - 1] = '\0';
        pl->regions[i][PW_NAME_MAX - 1] = '\0';
        pl->zones[i][PW_NAME_MAX - 1] = '\0';
    }
    submit(s, j);
}

void pw_store_set_host_drain(struct pw_store *s, const char *host_id, int drain, const char *actor,
                             pw_store_done_cb cb, void *arg)
{
    struct job *j = config_job(s, JOB_SET_DRAIN, actor, cb, arg);
    j->host_valid = pw_name_valid(host_id);
    pw_strlcpy(j->host, host_id, sizeof(j->host));
    j->drain = drain != 0;
    submit(s, j);
}

void pw_store_delete_function(struct pw_store *s, const char *name, const char *actor,
                              pw_store_done_cb cb, void *arg)
{
    struct job *j = config_job(s, JOB_DELETE_FUNCTION, actor, cb, arg);
    pw_strlcpy(j->spec.name, name, sizeof(j->spec.name));
    submit(s, j);
}

/* run_sync submits a synchronous job and waits for the store thread to finish it. */
static void run_sync(struct pw_store *s, struct job *j)
{
    submit(s, j);
    pthread_mutex_lock(&s->mu);
    while (!j->finished && !s->exited)
        pthread_cond_wait(&s->changed, &s->mu);
    pthread_mutex_unlock(&s->mu);
}

int pw_store_load_functions(struct pw_store *s, pw_store_function_cb cb, void *arg)
{
    struct job *j = pw_xcalloc(1, sizeof(*j));
    j->kind = JOB_LOAD_FUNCTIONS;
    run_sync(s, j);
    int rv = j->err;
    if (rv != PW_OK)
        pw_log_warn(COMP, "loading functions failed: %s", j->msg);
    for (size_t i = 0; rv == PW_OK && i < j->nfns; i++)
        cb(arg, &j->fns[i]);
    job_free(j);
    return rv;
}

int pw_store_load_invocations(struct pw_store *s, int64_t since_minute, pw_store_invocation_cb cb, void *arg)
{
    struct job *j = pw_xcalloc(1, sizeof(*j));
    j->kind = JOB_LOAD_INVOCATIONS;
    j->since_minute = since_minute;
    run_sync(s, j);
    int rv = j->err;
    if (rv != PW_OK)
        pw_log_warn(COMP, "loading invocation history failed: %s", j->msg);
    for (size_t i = 0; rv == PW_OK && i < j->nrows; i++)
        cb(arg, j->rows[i].name, j->rows[i].minute, j->rows[i].count);
    job_free(j);
    return rv;
}

int pw_store_load_hosts(struct pw_store *s, pw_store_host_cb cb, void *arg)
{
    struct job *j = pw_xcalloc(1, sizeof(*j));
    j->kind = JOB_LOAD_HOSTS;
    run_sync(s, j);
    int rv = j->err;
    if (rv != PW_OK)
        pw_log_warn(COMP, "loading hosts failed: %s", j->msg);
    for (size_t i = 0; rv == PW_OK && i < j->nhosts; i++)
        cb(arg, j->hosts[i]);
    job_free(j);
    return rv;
}

void pw_store_put_model(struct pw_store *s, const struct pw_model_row *m, int activate, const char *actor,
                        pw_store_done_cb cb, void *arg)
{
    struct job *j = config_job(s, JOB_PUT_MODEL, actor, cb, arg);
    j->model = *m;
    j->model.version[sizeof(j->model.version) - 1] = '\0';
    j->model.path[sizeof(j->model.path) - 1] = '\0';
    j->model.sha256[sizeof(j->model.sha256) - 1] = '\0';
    j->activate = activate != 0;
    submit(s, j);
}

void pw_store_activate_model(struct pw_store *s, const char *version, const char *actor, pw_store_done_cb cb,
                             void *arg)
{
    struct job *j = config_job(s, JOB_ACTIVATE_MODEL, actor, cb, arg);
    pw_strlcpy(j->model.version, version, sizeof(j->model.version));
    submit(s, j);
}

int pw_store_load_models(struct pw_store *s, pw_store_model_cb cb, void *arg)
{
    struct job *j = pw_xcalloc(1, sizeof(*j));
    j->kind = JOB_LOAD_MODELS;
    run_sync(s, j);
    int rv = j->err;
    if (rv != PW_OK)
        pw_log_warn(COMP, "loading the model registry failed: %s", j->msg);
    for (size_t i = 0; rv == PW_OK && i < j->nmodels; i++)
        cb(arg, &j->models[i]);
    job_free(j);
    return rv;
}

int pw_store_load_drains(struct pw_store *s, pw_store_drain_cb cb, void *arg)
{
    struct job *j = pw_xcalloc(1, sizeof(*j));
    j->kind = JOB_LOAD_DRAINS;
    run_sync(s, j);
    int rv = j->err;
    if (rv != PW_OK)
        pw_log_warn(COMP, "loading host drains failed: %s", j->msg);
    for (size_t i = 0; rv == PW_OK && i < j->nhosts; i++)
        cb(arg, j->hosts[i], j->alive[i]);
    job_free(j);
    return rv;
}

/* ---- loop thread: telemetry buffer ---- */

static uint64_t trow_hash(const struct trow *t)
{
    return pw_hash_u64(pw_hash_str(t->name) ^ ((uint64_t)t->minute * 2 + (uint64_t)t->kind));
}

static int trow_eq(const struct pw_hnode *n, const void *key)
{
    const struct tnode *a = pw_container_of(n, struct tnode, hnode);
    const struct trow *b = key;
    return a->row.kind == b->kind && a->row.minute == b->minute && strcmp(a->row.name, b->name) == 0;
}

static void buffer_unlink(struct pw_store *s, struct tnode *n)
{
    pw_htab_remove(&s->rows, &n->hnode);
    pw_list_remove(&n->age);
    s->nbuf--;
}

/* buffer_add merges row into the buffer. A new key beyond the bound drops the oldest row; oldest
 * says row is older than everything buffered (a failed batch coming back), so it is the one
 * dropped. */
static void buffer_add(struct pw_store *s, const struct trow *row, int oldest)
{
    uint64_t h = trow_hash(row);
    struct pw_hnode *hn = pw_htab_find(&s->rows, h, row, trow_eq);
    if (hn != NULL) {
        struct tnode *n = pw_container_of(hn, struct tnode, hnode);
        if (row->kind == TROW_INVOCATION) {
            n->row.count += row->count;
        } else if (row->at_ms >= n->row.at_ms) {
            n->row.alive = row->alive;
            n->row.at_ms = row->at_ms;
        }
        return;
    }
    if (s->nbuf + s->ninflight >= s->opt.telemetry_max_rows) {
        atomic_fetch_add(&s->dropped_rows, 1);
        struct pw_list *e = pw_list_head(&s->age);
        if (oldest || e == NULL)
            return;
        struct tnode *victim = pw_container_of(e, struct tnode, age);
        buffer_unlink(s, victim);
        free(victim);
    }
    struct tnode *n = pw_xmalloc(sizeof(*n));
    n->row = *row;
    pw_htab_insert(&s->rows, &n->hnode, h);
    if (oldest)
        pw_list_push_head(&s->age, &n->age);
    else
        pw_list_push_tail(&s->age, &n->age);
    s->nbuf++;
    atomic_store(&s->buffered_rows, s->nbuf + s->ninflight);
}

void pw_store_add_invocations(struct pw_store *s, const char *fn, int64_t minute, uint32_t count)
{
    assert(!s->closing);
    struct trow t = {.kind = TROW_INVOCATION, .minute = minute, .count = count};
    if (pw_strlcpy(t.name, fn, sizeof(t.name)) >= sizeof(t.name)) {
        atomic_fetch_add(&s->dropped_rows, 1);
        return;
    }
    buffer_add(s, &t, 0);
}

void pw_store_put_host(struct pw_store *s, const char *host_id, int alive, int64_t at_ms)
{
    assert(!s->closing);
    struct trow t = {.kind = TROW_HOST, .alive = alive != 0, .at_ms = at_ms};
    if (pw_strlcpy(t.name, host_id, sizeof(t.name)) >= sizeof(t.name)) {
        atomic_fetch_add(&s->dropped_rows, 1);
        return;
    }
    buffer_add(s, &t, 0);
}

/* flush_start hands every buffered row, oldest first, to the store thread as one batch. */
static void flush_start(struct pw_store *s)
{
    if (s->nbuf == 0)
        return;
    struct job *j = pw_xcalloc(1, sizeof(*j));
    j->kind = JOB_FLUSH;
    j->rows = pw_xmalloc(sizeof(*j->rows) * s->nbuf);
    while (!pw_list_empty(&s->age)) {
        struct tnode *n = pw_container_of(pw_list_head(&s->age), struct tnode, age);
        j->rows[j->nrows++] = n->row;
        buffer_unlink(s, n);
        free(n);
    }
    s->ninflight += j->nrows;
    s->flush_in_flight = 1;
    submit(s, j);
}

static void on_flush_timer(uv_timer_t *t)
{
    struct pw_store *s = pw_container_of(t, struct pw_store, timer);
    /* One batch at a time, and none while disconnected: it would only come back. */
    if (s->closing || s->flush_in_flight || !atomic_load(&s->connected))
        return;
    flush_start(s);
}

/* ---- lifecycle ---- */

void pw_store_options_default(struct pw_store_options *o)
{
    o->conninfo = "";
    o->telemetry_max_rows = 100000;
    o->flush_interval_ms = 1000;
    o->connect_timeout_ms = 3000;
}

static void store_free(struct pw_store *s)
{
    struct pw_list *e;
    while ((e = pw_list_head(&s->age)) != NULL) {
        struct tnode *n = pw_container_of(e, struct tnode, age);
        buffer_unlink(s, n);
        free(n);
    }
    pw_htab_fini(&s->rows);
    if (s->cancel != NULL)
        PQfreeCancel(s->cancel);
    if (s->conn != NULL)
        PQfinish(s->conn);
    pthread_cond_destroy(&s->wake);
    pthread_cond_destroy(&s->changed);
    pthread_mutex_destroy(&s->mu);
    free(s->conninfo);
    free(s);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct pw_store *s = h->data;
    if (--s->open_handles == 0)
        store_free(s);
}

static void close_handles(struct pw_store *s)
{
    uv_close((uv_handle_t *)&s->async, on_handle_closed);
    uv_close((uv_handle_t *)&s->timer, on_handle_closed);
}

static struct pw_store *store_new(uv_loop_t *loop, const struct pw_store_options *opt)
{
    struct pw_store *s = pw_xcalloc(1, sizeof(*s));
    s->loop = loop;
    pw_store_options_default(&s->opt);
    if (opt != NULL) {
        if (opt->telemetry_max_rows > 0)
            s->opt.telemetry_max_rows = opt->telemetry_max_rows;
        if (opt->flush_interval_ms > 0)
            s->opt.flush_interval_ms = opt->flush_interval_ms;
        if (opt->connect_timeout_ms > 0)
            s->opt.connect_timeout_ms = opt->connect_timeout_ms;
    }
    s->conninfo = pw_xstrdup(opt != NULL && opt->conninfo != NULL ? opt->conninfo : "");
    s->opt.conninfo = s->conninfo;

    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->wake, &ca);
    pthread_cond_init(&s->changed, &ca);
    pthread_condattr_destroy(&ca);
    pw_list_init(&s->jobs);
    pw_list_init(&s->done);
    pw_list_init(&s->age);
    pw_htab_init(&s->rows);
    s->backoff_ms = BACKOFF_MIN_MS;
    return s;
}

int pw_store_open(uv_loop_t *loop, const struct pw_store_options *opt, struct pw_store **out, char *errbuf,
                  size_t errlen)
{
    char msg[MSG_MAX];
    struct pw_store *s = store_new(loop, opt);
    int rv = PW_ERR_STORE;

    s->conn = pq_connect(s->conninfo, s->opt.connect_timeout_ms, msg, sizeof(msg));
    if (s->conn == NULL) {
        pw_log_warn(COMP, "cannot connect to PostgreSQL: %s", msg);
        msgf(errbuf, errlen, "cannot connect to PostgreSQL: %s", msg);
        goto fail;
    }
    rv = migrate(s, s->conn, errbuf, errlen);
    if (rv != PW_OK)
        goto fail;
    s->migrations_ok = 1;

    rv = session_setup(s, s->conn, msg, sizeof(msg));
    if (rv != PW_OK) {
        msgf(errbuf, errlen, "%s", msg);
        goto fail;
    }
    s->cancel = PQgetCancel(s->conn);
    s->next_check = pw_now_mono_ms() + HEALTH_CHECK_MS;
    atomic_store(&s->connected, 1);

    /* The handles keep the loop alive only while a config job is outstanding. */
    uv_async_init(loop, &s->async, on_async);
    uv_timer_init(loop, &s->timer);
    s->async.data = s->timer.data = s;
    s->open_handles = 2;
    uv_unref((uv_handle_t *)&s->async);
    uv_unref((uv_handle_t *)&s->timer);
    uv_timer_start(&s->timer, on_flush_timer, (uint64_t)s->opt.flush_interval_ms,
                   (uint64_t)s->opt.flush_interval_ms);

    int e = pthread_create(&s->thread, NULL, store_thread, s);
    if (e != 0) {
        msgf(errbuf, errlen, "cannot start the store thread: %s", strerror(e));
        s->closing = 1;
        close_handles(s); /* frees s once the loop runs */
        return PW_ERR_STORE;
    }
    s->thread_started = 1;
    pw_log_info(COMP, "store open, migrations applied");
    *out = s;
    return PW_OK;

fail:
    store_free(s);
    return rv;
}

void pw_store_close(struct pw_store *s)
{
    assert(!s->closing);
    s->closing = 1;
    uv_timer_stop(&s->timer);
    flush_start(s);

    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    pthread_cond_signal(&s->wake);
    int64_t deadline = pw_now_mono_ms() + CLOSE_WAIT_MS;
    while (!s->exited) {
        struct timespec ts = mono_deadline(deadline);
        if (pthread_cond_timedwait(&s->changed, &s->mu, &ts) == ETIMEDOUT && !s->exited) {
            /* PostgreSQL is too slow: stop after the current statement, which we interrupt. */
            s->abandon = 1;
            if (s->cancel != NULL) {
                char err[MSG_MAX];
                PQcancel(s->cancel, err, sizeof(err));
            }
            pw_log_warn(COMP, "close: the final flush did not finish within %d ms", CLOSE_WAIT_MS);
            break;
        }
    }
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);

    /* Alone now: answer what finished, then fail what never ran. */
    deliver_all(s);
    struct pw_list *e;
    while ((e = pw_list_head(&s->jobs)) != NULL) {
        pw_list_remove(e);
        struct job *j = pw_container_of(e, struct job, link);
        if (job_is_config(j))
            atomic_fetch_sub(&s->queue_depth, 1);
        j->err = PW_ERR_STORE;
        msgf(j->msg, sizeof(j->msg), "store closed before the write ran");
        deliver(s, j);
    }
    if (s->nbuf > 0)
        pw_log_warn(COMP, "close: %zu telemetry rows not written", s->nbuf);
    close_handles(s);
}

void pw_store_stats(const struct pw_store *s, struct pw_store_stats *out)
{
    out->connected = atomic_load(&s->connected);
    out->migrations_ok = s->migrations_ok;
    out->queue_depth = atomic_load(&s->queue_depth);
    out->buffered_rows = atomic_load(&s->buffered_rows);
    out->dropped_rows = atomic_load(&s->dropped_rows);
    out->errors = atomic_load(&s->errors);
    out->flushed_rows = atomic_load(&s->flushed_rows);
    out->fenced = atomic_load(&s->fenced);
}
