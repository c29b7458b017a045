/* leader.c — leader election through a PostgreSQL advisory lock; see leader.h. */
#include "leader.h"

#include "pw/error.h"
#include "pw/log.h"
#include "pw/util.h"

#include <inttypes.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define COMP "leader"
#define STR_(x) #x
#define STR(x) STR_(x)

enum state { ST_FOLLOWER, ST_LEADER, ST_LOST };

struct pw_leader {
    uv_loop_t *loop;
    uv_async_t async; /* thread -> loop: the state changed */
    pw_leader_cb cb;
    void *arg;
    struct pw_leader_options o;
    char *conninfo, *holder;

    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t wake;
    int stopping;

    /* Written by the thread, read anywhere. */
    _Atomic int state;
    _Atomic uint64_t epoch;
    _Atomic int64_t last_ok_ms; /* monotonic start of the last successful renewal */
    _Atomic int64_t beat_ms;    /* monotonic end of the thread's last round */
    _Atomic int pg_up;
    _Atomic uint64_t takeovers;
    /* Under mu: the leader as last read. */
    char cur_holder[128];
    uint64_t cur_epoch;
    int64_t cur_age_ms;

    /* Loop thread: what was reported. */
    int reported; /* 0 nothing, 1 elected, 2 lost */
    /* Thread only. */
    PGconn *conn;
    int64_t last_wait_log_ms;
};

void pw_leader_options_default(struct pw_leader_options *o)
{
    memset(o, 0, sizeof(*o));
    o->conninfo = "";
    o->holder = "prewarmd";
    o->renew_ms = 500;
    o->lease_ms = 2000;
    o->takeover_ms = 4000;
    o->connect_timeout_ms = 2000;
}

/* ---- the thread ---- */

static PGconn *connect_pg(struct pw_leader *l)
{
    char tmo[32];
    int64_t sec = (l->o.connect_timeout_ms + 999) / 1000;
    snprintf(tmo, sizeof(tmo), "%" PRId64, sec < 1 ? (int64_t)1 : sec);
    const char *keys[] = {"keepalives_idle", "keepalives_interval", "keepalives_count", "dbname", "connect_timeout",
                          "fallback_application_name", NULL};
    const char *vals[] = {"2", "1", "2", l->conninfo[0] != '\0' ? l->conninfo : NULL, tmo, "prewarmd-leader", NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (c == NULL || PQstatus(c) != CONNECTION_OK) {
        PQfinish(c);
        return NULL;
    }
    /* A hung server must not hold the election thread: every statement is bounded. */
    PGresult *r = PQexec(c, "SET statement_timeout = '2s'");
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (!ok) {
        PQfinish(c);
        return NULL;
    }
    return c;
}

/* query runs sql and returns its result if it has status want, else NULL (cleared). */
static PGresult *query(PGconn *c, const char *sql, int n, const char *const *params, ExecStatusType want)
{
    PGresult *r = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
    if (r != NULL && PQresultStatus(r) == want)
        return r;
    pw_log_debug(COMP, "statement failed: %s", PQerrorMessage(c));
    PQclear(r);
    return NULL;
}

static void notify(struct pw_leader *l, int state)
{
    atomic_store(&l->state, state);
    uv_async_send(&l->async);
}

/* read_current reads the leader row into cur_*; returns the backend pid to end if it is silent
 * beyond takeover_ms and not ours, else 0. */
static int read_current(struct pw_leader *l)
{
    PGresult *r = query(l->conn,
                        "SELECT holder, epoch, backend_pid, "
                        "(extract(epoch FROM now() - renewed_at) * 1000)::bigint, pg_backend_pid() FROM pw_leader",
                        0, NULL, PGRES_TUPLES_OK);
    if (r == NULL)
        return -1;
    int pid = 0;
    pthread_mutex_lock(&l->mu);
    if (PQntuples(r) == 1) {
        pw_strlcpy(l->cur_holder, PQgetvalue(r, 0, 0), sizeof(l->cur_holder));
        l->cur_epoch = strtoull(PQgetvalue(r, 0, 1), NULL, 10);
        l->cur_age_ms = strtoll(PQgetvalue(r, 0, 3), NULL, 10);
        int their = atoi(PQgetvalue(r, 0, 2)), mine = atoi(PQgetvalue(r, 0, 4));
        if (l->cur_age_ms > l->o.takeover_ms && their != mine)
            pid = their;
    } else {
        l->cur_holder[0] = '\0';
        l->cur_epoch = 0;
        l->cur_age_ms = -1;
    }
    pthread_mutex_unlock(&l->mu);
    PQclear(r);
    return pid;
}

/* try_lead takes the lock if it is free and, holding it, a new epoch. */
static void try_lead(struct pw_leader *l, int64_t t0)
{
    PGresult *r = query(l->conn, "SELECT pg_try_advisory_lock(" STR(PW_LEADER_LOCK) ")", 0, NULL, PGRES_TUPLES_OK);
    if (r == NULL) {
        PQfinish(l->conn);
        l->conn = NULL;
        return;
    }
    int got = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    if (!got) {
        int pid = read_current(l);
        if (pid > 0) {
            char p[16];
            snprintf(p, sizeof(p), "%d", pid);
            const char *pp[1] = {p};
            PGresult *t = query(l->conn, "SELECT pg_terminate_backend($1::integer)", 1, pp, PGRES_TUPLES_OK);
            pthread_mutex_lock(&l->mu);
            pw_log_warn(COMP, "leader %s (epoch %" PRIu64 ") silent for %" PRId64 " ms: its session ended, taking over",
                        l->cur_holder, l->cur_epoch, l->cur_age_ms);
            pthread_mutex_unlock(&l->mu);
            PQclear(t);
            atomic_fetch_add(&l->takeovers, 1);
        } else if (t0 - l->last_wait_log_ms >= 10000) {
            l->last_wait_log_ms = t0;
            pthread_mutex_lock(&l->mu);
            pw_log_info(COMP, "following leader %s (epoch %" PRIu64 ", renewed %" PRId64 " ms ago)",
                        l->cur_holder[0] ? l->cur_holder : "?", l->cur_epoch, l->cur_age_ms);
            pthread_mutex_unlock(&l->mu);
        }
        return;
    }
    /* Ours: a new epoch, in one transaction with the row that fences the others. */
    const char *ph[1] = {l->holder};
    r = query(l->conn,
              "INSERT INTO pw_leader (id, epoch, holder, backend_pid, renewed_at) "
              "VALUES (true, nextval('pw_epoch_seq'), $1, pg_backend_pid(), now()) "
              "ON CONFLICT (id) DO UPDATE SET epoch = EXCLUDED.epoch, holder = EXCLUDED.holder, "
              "backend_pid = EXCLUDED.backend_pid, renewed_at = EXCLUDED.renewed_at RETURNING epoch",
              1, ph, PGRES_TUPLES_OK);
    if (r == NULL) {
        /* Release by dropping the session: the next round starts clean. */
        PQfinish(l->conn);
        l->conn = NULL;
        return;
    }
    uint64_t e = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    atomic_store(&l->epoch, e);
    atomic_store(&l->last_ok_ms, t0);
    pw_log_info(COMP, "leader now: %s, epoch %" PRIu64, l->holder, e);
    notify(l, ST_LEADER);
}

/* renew keeps the lease; a row with another epoch means this replica was deposed. */
static void renew(struct pw_leader *l, int64_t t0)
{
    char e[24];
    snprintf(e, sizeof(e), "%" PRIu64, atomic_load(&l->epoch));
    const char *pe[1] = {e};
    PGresult *r = query(l->conn, "UPDATE pw_leader SET renewed_at = now() WHERE epoch = $1::bigint RETURNING epoch", 1,
                        pe, PGRES_TUPLES_OK);
    if (r == NULL) {
        /* The session broke: the lock went with it. The caller reconnects at once to learn
         * whether PostgreSQL is away (keep acting) or someone ended the session (reclaim). */
        PQfinish(l->conn);
        l->conn = NULL;
        return;
    }
    int ours = PQntuples(r) == 1;
    PQclear(r);
    if (!ours) {
        read_current(l);
        pthread_mutex_lock(&l->mu);
        pw_log_error(COMP, "deposed: epoch %s was superseded by %s (epoch %" PRIu64 ")", e, l->cur_holder, l->cur_epoch);
        pthread_mutex_unlock(&l->mu);
        notify(l, ST_LOST);
        return;
    }
    atomic_store(&l->last_ok_ms, t0);
}

/* reclaim: after a reconnect the leader must hold the lock again with its epoch still in the
 * row; otherwise it lost. */
static void reclaim(struct pw_leader *l, int64_t t0)
{
    PGresult *r = query(l->conn, "SELECT pg_try_advisory_lock(" STR(PW_LEADER_LOCK) ")", 0, NULL, PGRES_TUPLES_OK);
    if (r == NULL) {
        PQfinish(l->conn);
        l->conn = NULL;
        return;
    }
    int got = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    if (!got) {
        read_current(l);
        pw_log_error(COMP, "lost the leader lock while away from PostgreSQL (epoch %" PRIu64 ")",
                     atomic_load(&l->epoch));
        notify(l, ST_LOST);
        return;
    }
    renew(l, t0);
    if (atomic_load(&l->state) == ST_LEADER)
        pw_log_info(COMP, "PostgreSQL back: still the leader (epoch %" PRIu64 ")", atomic_load(&l->epoch));
}

/* reconnect opens the connection; pg_up says whether PostgreSQL answered. */
static int reconnect(struct pw_leader *l)
{
    l->conn = connect_pg(l);
    atomic_store(&l->pg_up, l->conn != NULL);
    return l->conn != NULL;
}

static void *thread_main(void *arg)
{
    struct pw_leader *l = arg;
    for (;;) {
        pthread_mutex_lock(&l->mu);
        int stop = l->stopping;
        pthread_mutex_unlock(&l->mu);
        if (stop || atomic_load(&l->state) == ST_LOST)
            break;
        int64_t t0 = pw_now_mono_ms();
        int leading = atomic_load(&l->state) == ST_LEADER;
        if (l->conn == NULL) {
            if (reconnect(l))
                leading ? reclaim(l, t0) : try_lead(l, t0);
        } else if (!leading) {
            try_lead(l, t0);
        } else {
            renew(l, t0);
            /* A broken session: PostgreSQL away (keep acting while it is) or the session ended
             * by a new leader (then the lock is gone: reclaim finds out). */
            if (l->conn == NULL && atomic_load(&l->state) == ST_LEADER && reconnect(l))
                reclaim(l, t0);
        }
        atomic_store(&l->beat_ms, pw_now_mono_ms());
        int64_t due = t0 + l->o.renew_ms;
        pthread_mutex_lock(&l->mu);
        while (!l->stopping && pw_now_mono_ms() < due) {
            int64_t ms = due - pw_now_mono_ms();
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += ms / 1000;
            ts.tv_nsec += (ms % 1000) * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&l->wake, &l->mu, &ts);
        }
        pthread_mutex_unlock(&l->mu);
    }
    if (l->conn != NULL)
        PQfinish(l->conn); /* the lock goes with the session */
    l->conn = NULL;
    return NULL;
}

/* ---- the loop ---- */

static void on_async(uv_async_t *h)
{
    struct pw_leader *l = h->data;
    int st = atomic_load(&l->state);
    if (st == ST_LEADER && l->reported == 0) {
        l->reported = 1;
        l->cb(l->arg, PW_LEADER_ELECTED, atomic_load(&l->epoch));
    } else if (st == ST_LOST && l->reported < 2) {
        l->reported = 2;
        l->cb(l->arg, PW_LEADER_LOST, atomic_load(&l->epoch));
    }
}

int pw_leader_new(uv_loop_t *loop, const struct pw_leader_options *o, pw_leader_cb cb, void *arg,
                  struct pw_leader **out, char *errbuf, size_t errlen)
{
    if (o->lease_ms <= o->renew_ms || o->takeover_ms <= o->lease_ms) {
        snprintf(errbuf, errlen, "leader timing: need renew < lease < takeover (%" PRId64 ", %" PRId64 ", %" PRId64 " ms)",
                 o->renew_ms, o->lease_ms, o->takeover_ms);
        return PW_ERR_INVAL;
    }
    struct pw_leader *l = pw_xcalloc(1, sizeof(*l));
    l->loop = loop;
    l->cb = cb;
    l->arg = arg;
    l->o = *o;
    l->conninfo = pw_xstrdup(o->conninfo != NULL ? o->conninfo : "");
    l->holder = pw_xstrdup(o->holder != NULL ? o->holder : "prewarmd");
    l->cur_age_ms = -1;
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->wake, NULL);
    uv_async_init(loop, &l->async, on_async);
    l->async.data = l;
    int e = pthread_create(&l->thread, NULL, thread_main, l);
    if (e != 0) {
        snprintf(errbuf, errlen, "cannot start the leader thread: %s", strerror(e));
        uv_close((uv_handle_t *)&l->async, NULL);
        return PW_ERR_INTERNAL; /* l is leaked deliberately: its handle closes on the next loop run */
    }
    *out = l;
    return PW_OK;
}

static void on_closed(uv_handle_t *h)
{
    struct pw_leader *l = h->data;
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->wake);
    free(l->conninfo);
    free(l->holder);
    free(l);
}

void pw_leader_close(struct pw_leader *l)
{
    if (l == NULL)
        return;
    pthread_mutex_lock(&l->mu);
    l->stopping = 1;
    pthread_cond_broadcast(&l->wake);
    pthread_mutex_unlock(&l->mu);
    pthread_join(l->thread, NULL);
    uv_close((uv_handle_t *)&l->async, on_closed);
}

bool pw_leader_may_act(const struct pw_leader *l)
{
    if (l == NULL || atomic_load(&l->state) != ST_LEADER)
        return false;
    int64_t now = pw_now_mono_ms();
    if (now - atomic_load(&l->last_ok_ms) < l->o.lease_ms)
        return true;
    /* PostgreSQL away: nobody can take over, so acquires go on — as long as the election
     * thread itself is running (a stopped process resumed finds its beat stale). */
    return !atomic_load(&l->pg_up) && now - atomic_load(&l->beat_ms) < 2 * l->o.renew_ms + 2500;
}

uint64_t pw_leader_epoch(const struct pw_leader *l)
{
    return l != NULL && atomic_load(&l->state) != ST_FOLLOWER ? atomic_load(&l->epoch) : 0;
}

void pw_leader_status(struct pw_leader *l, struct pw_leader_status *out)
{
    memset(out, 0, sizeof(*out));
    if (l == NULL)
        return;
    out->leader = atomic_load(&l->state) == ST_LEADER;
    out->may_act = pw_leader_may_act(l);
    out->pg_up = atomic_load(&l->pg_up);
    out->epoch = pw_leader_epoch(l);
    out->takeovers = atomic_load(&l->takeovers);
    pthread_mutex_lock(&l->mu);
    pw_strlcpy(out->current_holder, l->cur_holder, sizeof(out->current_holder));
    out->current_epoch = l->cur_epoch;
    out->renewed_ago_ms = l->cur_age_ms;
    pthread_mutex_unlock(&l->mu);
}
