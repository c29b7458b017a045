/* test_store.c — the PostgreSQL store against a real, throwaway PostgreSQL started by the test
 * (scripts/pgtmp.sh): migrations, config writes, telemetry flushes, and an outage. Each test
 * works in its own database. */
#include "leader.h"
#include "store.h"

#include "pw/error.h"
#include "pw/util.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <uv.h>

#include <setjmp.h>
#include <cmocka.h>

#define WAIT_MS 15000 /* upper bound on any wait for the store */

static char pg_dir[512]; /* the cluster's directory: its unix socket lives there */

/* ---- the cluster ---- */

/* pgtmp runs scripts/pgtmp.sh with args; its stdout goes to out. Returns 0 on exit status 0. */
static int pgtmp(const char *args, char *out, size_t outlen)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "'%s/scripts/pgtmp.sh' %s", PW_SOURCE_DIR, args);
    FILE *f = popen(cmd, "r");
    if (f == NULL)
        return -1;
    char buf[512];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    buf[strcspn(buf, "\n")] = '\0';
    if (out != NULL)
        snprintf(out, outlen, "%s", buf);
    int st = pclose(f);
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

static int pg_action(const char *verb)
{
    char args[700];
    snprintf(args, sizeof(args), "%s '%s'", verb, pg_dir);
    return pgtmp(args, NULL, 0);
}

static int group_setup(void **state)
{
    if (pgtmp("start", pg_dir, sizeof(pg_dir)) != 0 || pg_dir[0] != '/') {
        fprintf(stderr, "test_store: FAILED: cannot start PostgreSQL with %s/scripts/pgtmp.sh start "
                        "(needs postgresql-15: scripts/install-deps.sh); its messages are above\n",
                PW_SOURCE_DIR);
        pg_dir[0] = '\0';
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    if (pg_dir[0] != '\0' && pg_action("stop") != 0)
        fprintf(stderr, "test_store: could not remove %s\n", pg_dir);
    return 0;
}

static void quiet_notice(void *arg, const char *message)
{
}

/* new_db creates (or recreates) database name and writes a connection string for it. */
static void new_db(const char *name, char *conninfo, size_t n)
{
    char admin[700];
    snprintf(admin, sizeof(admin), "host='%s' user=postgres dbname=postgres", pg_dir);
    PGconn *c = PQconnectdb(admin);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PQsetNoticeProcessor(c, quiet_notice, NULL);
    char *id = PQescapeIdentifier(c, name, strlen(name));
    char sql[256];
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s", id);
    PQclear(PQexec(c, sql));
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", id);
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        fail_msg("create database %s: %s", name, PQresultErrorMessage(r));
    PQclear(r);
    PQfreemem(id);
    PQfinish(c);
    snprintf(conninfo, n, "host='%s' user=postgres dbname=%s", pg_dir, name);
}

/* query runs sql with text params on a fresh connection and returns row 0 column 0 in out
 * ("" when there is no row, "<null>" for NULL). */
static void query(const char *conninfo, char *out, size_t outlen, const char *sql, int n, ...)
{
    const char *params[8];
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n && i < 8; i++)
        params[i] = va_arg(ap, const char *);
    va_end(ap);
    PGconn *c = PQconnectdb(conninfo);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PGresult *r = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK)
        fail_msg("%s: %s", sql, PQresultErrorMessage(r));
    if (st == PGRES_TUPLES_OK && PQntuples(r) > 0)
        snprintf(out, outlen, "%s", PQgetisnull(r, 0, 0) ? "<null>" : PQgetvalue(r, 0, 0));
    else
        snprintf(out, outlen, "%s", "");
    PQclear(r);
    PQfinish(c);
}

static long long query_ll(const char *conninfo, const char *sql, int n, const char *p1, const char *p2)
{
    char v[128];
    query(conninfo, v, sizeof(v), sql, n, p1, p2);
    return v[0] == '\0' ? -1 : strtoll(v, NULL, 10);
}

/* ---- running the loop until something holds ---- */

struct waiter {
    uv_timer_t timer;
    int (*pred)(void *arg);
    void *arg;
    int64_t deadline;
    int ok;
};

static void on_wait_tick(uv_timer_t *t)
{
    struct waiter *w = pw_container_of(t, struct waiter, timer);
    if (w->pred(w->arg))
        w->ok = 1;
    if (w->ok || pw_now_mono_ms() > w->deadline)
        uv_stop(t->loop);
}

/* wait_for runs loop until pred(arg) holds or timeout_ms pass; returns whether it held. */
static int wait_for(uv_loop_t *loop, int (*pred)(void *), void *arg, int64_t timeout_ms)
{
    struct waiter w = {.pred = pred, .arg = arg, .deadline = pw_now_mono_ms() + timeout_ms};
    uv_timer_init(loop, &w.timer);
    uv_timer_start(&w.timer, on_wait_tick, 0, 10);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&w.timer, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return w.ok;
}

static int always_false(void *arg)
{
    return 0;
}

static void run_for(uv_loop_t *loop, int64_t ms)
{
    wait_for(loop, always_false, NULL, ms);
}

struct done {
    int called;
    int err;
    char msg[256];
};

static void on_done(void *arg, int err, const char *msg)
{
    struct done *d = arg;
    d->called++;
    d->err = err;
    snprintf(d->msg, sizeof(d->msg), "%s", msg != NULL ? msg : "");
}

static int done_called(void *arg)
{
    return ((struct done *)arg)->called > 0;
}

struct stats_wait {
    struct pw_store *s;
    uint64_t flushed_at_least;
    int connected; /* -1: any */
};

static int stats_reached(void *arg)
{
    struct stats_wait *w = arg;
    struct pw_store_stats st;
    pw_store_stats(w->s, &st);
    return st.flushed_rows >= w->flushed_at_least && (w->connected < 0 || st.connected == w->connected);
}

static void wait_stats(uv_loop_t *loop, struct pw_store *s, uint64_t flushed, int connected)
{
    struct stats_wait w = {.s = s, .flushed_at_least = flushed, .connected = connected};
    if (!wait_for(loop, stats_reached, &w, WAIT_MS)) {
        struct pw_store_stats st;
        pw_store_stats(s, &st);
        fail_msg("store did not reach flushed >= %llu, connected %d within %d ms (flushed %llu, "
                 "connected %d, buffered %llu)",
                 (unsigned long long)flushed, connected, WAIT_MS, (unsigned long long)st.flushed_rows,
                 st.connected, (unsigned long long)st.buffered_rows);
    }
}

/* ---- store helpers ---- */

static struct pw_store *open_store(uv_loop_t *loop, const char *conninfo, struct pw_store_options *o,
                                   uint64_t *epoch)
{
    struct pw_store_options def;
    if (o == NULL) {
        pw_store_options_default(&def);
        o = &def;
    }
    o->conninfo = conninfo;
    struct pw_store *s = NULL;
    char err[512] = "";
    int rv = pw_store_open(loop, o, &s, err, sizeof(err));
    if (rv != PW_OK)
        fail_msg("pw_store_open: %s: %s", pw_strerror(rv), err);
    if (epoch != NULL)
        *epoch = 0; /* epochs come from leader election now (test_leader) */
    return s;
}

static void close_store(uv_loop_t *loop, struct pw_store *s)
{
    pw_store_close(s);
    uv_run(loop, UV_RUN_DEFAULT); /* runs the close callbacks, which free s */
}

static void put_sync(uv_loop_t *loop, struct pw_store *s, const struct pw_function_spec *spec,
                     const char *actor, struct done *d)
{
    memset(d, 0, sizeof(*d));
    pw_store_put_function(s, spec, actor, on_done, d);
    assert_true(wait_for(loop, done_called, d, WAIT_MS));
    assert_int_equal(d->called, 1);
}

static void delete_sync(uv_loop_t *loop, struct pw_store *s, const char *name, const char *actor,
                        struct done *d)
{
    memset(d, 0, sizeof(*d));
    pw_store_delete_function(s, name, actor, on_done, d);
    assert_true(wait_for(loop, done_called, d, WAIT_MS));
    assert_int_equal(d->called, 1);
}

struct loaded {
    struct pw_function_spec fns[8];
    size_t n;
    char hosts[8][PW_NAME_MAX];
    size_t nhosts;
};

static void on_function(void *arg, const struct pw_function_spec *spec)
{
    struct loaded *l = arg;
    assert_true(l->n < PW_ARRAY_LEN(l->fns));
    l->fns[l->n++] = *spec;
}

static void on_host(void *arg, const char *id)
{
    struct loaded *l = arg;
    assert_true(l->nhosts < PW_ARRAY_LEN(l->hosts));
    snprintf(l->hosts[l->nhosts++], PW_NAME_MAX, "%s", id);
}

static void make_spec(struct pw_function_spec *f, const char *name, const char *image, uint32_t mem,
                      enum pw_policy_kind kind, uint32_t min, uint32_t max, int64_t keepalive_ms)
{
    memset(f, 0, sizeof(*f));
    snprintf(f->name, sizeof(f->name), "%s", name);
    snprintf(f->image, sizeof(f->image), "%s", image);
    f->memory_mb = mem;
    f->vcpus = 2;
    f->pool.kind = kind;
    f->pool.min = min;
    f->pool.max = max;
    f->pool.keepalive_ms = keepalive_ms;
    f->pool.quantile = 0.99;
}

static void assert_spec_equal(const struct pw_function_spec *a, const struct pw_function_spec *b)
{
    assert_string_equal(a->name, b->name);
    assert_string_equal(a->image, b->image);
    assert_int_equal(a->memory_mb, b->memory_mb);
    assert_int_equal(a->vcpus, b->vcpus);
    assert_int_equal(a->pool.kind, b->pool.kind);
    assert_int_equal(a->pool.min, b->pool.min);
    assert_int_equal(a->pool.max, b->pool.max);
    assert_int_equal(a->pool.keepalive_ms, b->pool.keepalive_ms);
    assert_true(a->pool.quantile == b->pool.quantile);
    const struct pw_placement_spec *p = &a->placement, *q = &b->placement;
    assert_int_equal(p->nclouds, q->nclouds);
    for (size_t i = 0; i < p->nclouds; i++)
        assert_string_equal(p->clouds[i], q->clouds[i]);
    assert_int_equal(p->nregions, q->nregions);
    for (size_t i = 0; i < p->nregions; i++)
        assert_string_equal(p->regions[i], q->regions[i]);
    assert_int_equal(p->nzones, q->nzones);
    for (size_t i = 0; i < p->nzones; i++)
        assert_string_equal(p->zones[i], q->zones[i]);
    /* Exact, not approximately: the shares must come back bit for bit. */
    if (memcmp(&p->max_host_share, &q->max_host_share, sizeof(double)) != 0 ||
        memcmp(&p->max_zone_share, &q->max_zone_share, sizeof(double)) != 0)
        fail_msg("shares differ: host %.17g vs %.17g, zone %.17g vs %.17g", p->max_host_share, q->max_host_share,
                 p->max_zone_share, q->max_zone_share);
}

struct drained {
    char hosts[8][PW_NAME_MAX];
    int alive[8];
    size_t n;
};

static void on_drain(void *arg, const char *id, int alive)
{
    struct drained *l = arg;
    assert_true(l->n < PW_ARRAY_LEN(l->hosts));
    snprintf(l->hosts[l->n], PW_NAME_MAX, "%s", id);
    l->alive[l->n++] = alive;
}

static void load_drains(struct pw_store *s, struct drained *l)
{
    memset(l, 0, sizeof(*l));
    assert_int_equal(pw_store_load_drains(s, on_drain, l), PW_OK);
}

static void drain_sync(uv_loop_t *loop, struct pw_store *s, const char *host, int drain, const char *actor,
                       struct done *d)
{
    memset(d, 0, sizeof(*d));
    pw_store_set_host_drain(s, host, drain, actor, on_done, d);
    assert_true(wait_for(loop, done_called, d, WAIT_MS));
    assert_int_equal(d->called, 1);
}

/* ---- tests ---- */

static void test_open_unreachable(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    char conninfo[700];
    snprintf(conninfo, sizeof(conninfo), "host='%s/nonexistent' user=postgres dbname=postgres", pg_dir);
    struct pw_store_options o;
    pw_store_options_default(&o);
    o.conninfo = conninfo;
    struct pw_store *s = NULL;
    char err[512] = "";
    assert_int_equal(pw_store_open(&loop, &o, &s, err, sizeof(err)), PW_ERR_STORE);
    assert_null(s);
    assert_non_null(strstr(err, "connect"));
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_migrations_idempotent(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    char ci[700], applied[64], v[64];
    new_db("t_migrations", ci, sizeof(ci));

    uint64_t e1 = 0, e2 = 0;
    struct pw_store *s = open_store(&loop, ci, NULL, &e1);
    struct pw_store_stats st;
    pw_store_stats(s, &st);
    assert_int_equal(st.migrations_ok, 1);
    assert_int_equal(st.connected, 1);
    close_store(&loop, s);

    assert_int_equal(query_ll(ci, "SELECT count(*) FROM schema_migrations", 0, NULL, NULL),
                     (long long)pw_migrations_count);
    assert_int_equal(query_ll(ci,
                              "SELECT count(*) FROM information_schema.tables WHERE table_schema = "
                              "'public' AND table_name IN ('functions', 'pool_policies', 'hosts', "
                              "'invocation_minutes', 'forecasts', 'models', 'audit_log', "
                              "'schema_migrations')",
                              0, NULL, NULL),
                     8);
    char want[64];
    query(ci, want, sizeof(want), "SELECT md5($1)", 1, pw_migrations[0].sql);
    query(ci, v, sizeof(v), "SELECT checksum FROM schema_migrations WHERE name = $1", 1,
          pw_migrations[0].name);
    assert_string_equal(v, want);
    query(ci, applied, sizeof(applied), "SELECT applied_at::text FROM schema_migrations WHERE name = $1",
          1, pw_migrations[0].name);

    /* Second start: nothing applied again. */
    s = open_store(&loop, ci, NULL, &e2);
    close_store(&loop, s);
    assert_int_equal(query_ll(ci, "SELECT count(*) FROM schema_migrations", 0, NULL, NULL),
                     (long long)pw_migrations_count);
    query(ci, v, sizeof(v), "SELECT applied_at::text FROM schema_migrations WHERE name = $1", 1,
          pw_migrations[0].name);
    assert_string_equal(v, applied);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_checksum_mismatch(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    char ci[700], v[8];
    new_db("t_checksum", ci, sizeof(ci));
    close_store(&loop, open_store(&loop, ci, NULL, NULL));

    query(ci, v, sizeof(v), "UPDATE schema_migrations SET checksum = 'tampered' WHERE name = $1", 1,
          pw_migrations[0].name);
    struct pw_store_options o;
    pw_store_options_default(&o);
    o.conninfo = ci;
    struct pw_store *s = NULL;
    char err[512] = "";
    assert_int_equal(pw_store_open(&loop, &o, &s, err, sizeof(err)), PW_ERR_STORE);
    assert_null(s);
    if (strstr(err, pw_migrations[0].name) == NULL || strstr(err, "checksum") == NULL)
        fail_msg("error does not name the migration and the checksum: %s", err);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

struct opener {
    const char *conninfo;
    pthread_barrier_t *barrier;
    int rv;
    uint64_t epoch;
    char err[512];
};

static void *open_on_thread(void *arg)
{
    struct opener *o = arg;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct pw_store_options opt;
    pw_store_options_default(&opt);
    opt.conninfo = o->conninfo;
    struct pw_store *s = NULL;
    pthread_barrier_wait(o->barrier);
    o->rv = pw_store_open(&loop, &opt, &s, o->err, sizeof(o->err));
    if (o->rv == PW_OK) {
        pw_store_close(s);
        uv_run(&loop, UV_RUN_DEFAULT);
    }
    uv_loop_close(&loop);
    return NULL;
}

static void test_concurrent_open(void **state)
{
    for (int round = 0; round < 3; round++) {
        char ci[700], name[32];
        snprintf(name, sizeof(name), "t_concurrent_%d", round);
        new_db(name, ci, sizeof(ci));
        pthread_barrier_t barrier;
        pthread_barrier_init(&barrier, NULL, 2);
        struct opener o[2];
        pthread_t t[2];
        for (int i = 0; i < 2; i++) {
            memset(&o[i], 0, sizeof(o[i]));
            o[i].conninfo = ci;
            o[i].barrier = &barrier;
            assert_int_equal(pthread_create(&t[i], NULL, open_on_thread, &o[i]), 0);
        }
        for (int i = 0; i < 2; i++)
            pthread_join(t[i], NULL);
        pthread_barrier_destroy(&barrier);
        for (int i = 0; i < 2; i++)
            if (o[i].rv != PW_OK)
                fail_msg("concurrent open %d failed: %s", i, o[i].err);
        assert_int_equal(query_ll(ci, "SELECT count(*) FROM schema_migrations", 0, NULL, NULL),
                         (long long)pw_migrations_count);
    }
}

static void test_functions(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    char ci[700], v[256];
    new_db("t_functions", ci, sizeof(ci));
    struct pw_store *s = open_store(&loop, ci, NULL, NULL);
    struct done d;
    struct loaded l;
    struct pw_function_spec a, a2, b, bad;

    make_spec(&a, "fn-a", "img:a", 256, PW_POLICY_FIXED, 2, 10, 60000);
    put_sync(&loop, s, &a, "alice", &d);
    assert_int_equal(d.err, PW_OK);
    memset(&l, 0, sizeof(l));
    assert_int_equal(pw_store_load_functions(s, on_function, &l), PW_OK);
    assert_int_equal(l.n, 1);
    assert_spec_equal(&l.fns[0], &a);

    /* Update: every field changes. */
    make_spec(&a2, "fn-a", "img:a2", 512, PW_POLICY_KEEPALIVE, 1, 5, 30000);
    a2.vcpus = 4;
    put_sync(&loop, s, &a2, "alice", &d);
    assert_int_equal(d.err, PW_OK);
    make_spec(&b, "fn-b", "img:b", 128, PW_POLICY_FIXED, 0, 100, 0);
    put_sync(&loop, s, &b, "bob", &d);
    assert_int_equal(d.err, PW_OK);
    memset(&l, 0, sizeof(l));
    assert_int_equal(pw_store_load_functions(s, on_function, &l), PW_OK);
    assert_int_equal(l.n, 2);
    assert_spec_equal(&l.fns[0], &a2);
    assert_spec_equal(&l.fns[1], &b);

    /* A row the database refuses fails the job, rolls back, and leaves the store working. */
    make_spec(&bad, "fn-bad", "img", 0, PW_POLICY_FIXED, 0, 1, 0);
    struct pw_store_stats st;
    pw_store_stats(s, &st);
    uint64_t errors = st.errors;
    put_sync(&loop, s, &bad, "alice", &d);
    assert_int_equal(d.err, PW_ERR_STORE);
    assert_true(d.msg[0] != '\0');
    pw_store_stats(s, &st);
    assert_true(st.errors > errors);
    assert_int_equal(query_ll(ci, "SELECT count(*) FROM functions WHERE name = $1", 1, "fn-bad", NULL), 0);
    assert_int_equal(query_ll(ci, "SELECT count(*) FROM audit_log WHERE subject = $1", 1, "fn-bad", NULL), 0);

    delete_sync(&loop, s, "fn-a", "carol", &d);
    assert_int_equal(d.err, PW_OK);
    delete_sync(&loop, s, "nope", "carol", &d);
    assert_int_equal(d.err, PW_OK);
    memset(&l, 0, sizeof(l));
    assert_int_equal(pw_store_load_functions(s, on_function, &l), PW_OK);
    assert_int_equal(l.n, 1);
    assert_spec_equal(&l.fns[0], &b);
    assert_int_equal(query_ll(ci, "SELECT count(*) FROM pool_policies WHERE function = $1", 1, "fn-a", NULL), 0);

    /* The audit trail, in order. */
    query(ci, v, sizeof(v),
          "SELECT string_agg(actor || ':' || action, ',' ORDER BY id) FROM audit_log WHERE subject = $1", 1,
          "fn-a");
    assert_string_equal(v, "alice:function.put,alice:function.put,carol:function.delete");
    query(ci, v, sizeof(v),
          "SELECT detail->'pool'->>'policy' || '/' || (detail->>'memory_mb') FROM audit_log "
          "WHERE subject = $1 AND action = 'function.put' ORDER BY id DESC LIMIT 1",
          1, "fn-a");
    assert_string_equal(v, "keepalive/512");
    query(ci, v, sizeof(v), "SELECT detail->>'existed' FROM audit_log WHERE subject = $1", 1, "nope");
    assert_string_equal(v, "false");
    query(ci, v, sizeof(v), "SELECT detail->>'existed' FROM audit_log WHERE subject = $1 AND "
          "action = 'function.delete'", 1, "fn-a");
    assert_string_equal(v, "true");

    pw_store_stats(s, &st);
    assert_int_equal(st.queue_depth, 0);
    close_store(&loop, s);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_placement(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    char ci[700], v[512];
    new_db("t_placement", ci, sizeof(ci));
    struct pw_store *s = open_store(&loop, ci, NULL, NULL);
    struct done d;
    struct loaded l;
    struct pw_function_spec a, b, bad;

    /* Every list used, one of them full, and shares that only survive a lossless round trip. */
    make_spec(&a, "fn-a", "img:a", 256, PW_POLICY_FIXED, 1, 10, 60000);
    struct pw_placement_spec *p = &a.placement;
    snprintf(p->clouds[0], PW_NAME_MAX, "aws");
    snprintf(p->clouds[1], PW_NAME_MAX, "gcp");
    p->nclouds = 2;
    snprintf(p->regions[0], PW_NAME_MAX, "eu-west-1");
    p->nregions = 1;
    for (size_t i = 0; i < PW_PLACE_MAX_SEL; i++)
        snprintf(p->zones[i], PW_NAME_MAX, "zone_%zu.x-z", i);
    snprintf(p->zones[3], PW_NAME_MAX, "NULL"); /* a valid name that an unquoted array literal would lose */
    snprintf(p->zones[7], PW_NAME_MAX, "%s", "z123456789012345678901234567890123456789012345678901234567890ab");
    assert_int_equal(strlen(p->zones[7]), PW_NAME_MAX - 1);
    p->nzones = PW_PLACE_MAX_SEL;
    p->max_host_share = 1.0 / 3.0;
    p->max_zone_share = 0.1;
    put_sync(&loop, s, &a, "alice", &d);
    if (d.err != PW_OK)
        fail_msg("put with placement: %s", d.msg);
    /* b has no constraints at all. */
    make_spec(&b, "fn-b", "img:b", 128, PW_POLICY_KEEPALIVE, 0, 5, 1000);
    put_sync(&loop, s, &b, "alice", &d);
    assert_int_equal(d.err, PW_OK);
    memset(&l, 0, sizeof(l));
    assert_int_equal(pw_store_load_functions(s, on_function, &l), PW_OK);
    assert_int_equal(l.n, 2);
    assert_spec_equal(&l.fns[0], &a);
    assert_spec_equal(&l.fns[1], &b);
    query(ci, v, sizeof(v), "SELECT placement_zones[4] || ' ' || array_length(placement_zones, 1) FROM functions "
          "WHERE name = $1", 1, "fn-a");
    assert_string_equal(v, "NULL 8");

    /* The audit row carries the placement. */
    query(ci, v, sizeof(v),
          "SELECT (detail->'placement'->'clouds')::text || ' ' || (detail->'placement'->>'max_zone_share') "
          "FROM audit_log WHERE subject = $1 AND action = 'function.put'", 1, "fn-a");
    assert_string_equal(v, "[\"aws\", \"gcp\"] 0.1");

    /* An update replaces the constraints, including clearing them. */
    memset(&a.placement, 0, sizeof(a.placement));
    snprintf(a.placement.zones[0], PW_NAME_MAX, "b");
    a.placement.nzones = 1;
    a.placement.max_host_share = 0.5;
    put_sync(&loop, s, &a, "bob", &d);
    assert_int_equal(d.err, PW_OK);
    memset(&l, 0, sizeof(l));
    assert_int_equal(pw_store_load_functions(s, on_function, &l), PW_OK);
    assert_spec_equal(&l.fns[0], &a);
    memset(&a.placement, 0, sizeof(a.placement));
    put_sync(&loop, s, &a, "bob", &d);
    assert_int_equal(d.err, PW_OK);
    memset(&l, 0, sizeof(l));
    assert_int_equal(pw_store_load_functions(s, on_function, &l), PW_OK);
    assert_spec_equal(&l.fns[0], &a);

    /* A list longer than the limit fails the write; the stored function is untouched. */
    bad = a;
    bad.placement.nregions = PW_PLACE_MAX_SEL + 1;
    for (size_t i = 0; i < PW_PLACE_MAX_SEL; i++)
        snprintf(bad.placement.regions[i], PW_NAME_MAX, "r%zu", i);
    bad.placement.max_host_share = 0.25;
    put_sync(&loop, s, &bad, "mallory", &d);
    assert_int_equal(d.err, PW_ERR_STORE);
    assert_non_null(strstr(d.msg, "placement"));
    /* So do values only the database checks: a share above 1 and a name that is not a name. */
    bad = a;
    bad.placement.max_zone_share = 1.5;
    put_sync(&loop, s, &bad, "mallory", &d);
    assert_int_equal(d.err, PW_ERR_STORE);
    bad = a;
    snprintf(bad.placement.clouds[0], PW_NAME_MAX, "no spaces");
    bad.placement.nclouds = 1;
    put_sync(&loop, s, &bad, "mallory", &d);
    assert_int_equal(d.err, PW_ERR_STORE);
    bad = a;
    snprintf(bad.placement.zones[0], PW_NAME_MAX, "we\"ird\\");
    bad.placement.nzones = 1;
    put_sync(&loop, s, &bad, "mallory", &d);
    assert_int_equal(d.err, PW_ERR_STORE);
    assert_int_equal(query_ll(ci, "SELECT count(*) FROM audit_log WHERE actor = $1", 1, "mallory", NULL), 0);
    memset(&l, 0, sizeof(l));
    assert_int_equal(pw_store_load_functions(s, on_function, &l), PW_OK);
    assert_int_equal(l.n, 2);
    assert_spec_equal(&l.fns[0], &a);

    close_store(&loop, s);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* test_upgrade: a database at migration 0002 with a function in it gets 0003 at the next open;
 * the function keeps everything and has no placement constraints. */
static void test_upgrade(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    char ci[700], v[64];
    new_db("t_upgrade", ci, sizeof(ci));
    size_t old = 0;
    while (old < pw_migrations_count && strncmp(pw_migrations[old].name, "0003", 4) != 0)
        old++;
    assert_int_equal(old, 2);
    PGconn *c = PQconnectdb(ci);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PQsetNoticeProcessor(c, quiet_notice, NULL);
    PQclear(PQexec(c, "CREATE TABLE schema_migrations (name text PRIMARY KEY, checksum text NOT NULL, "
                      "applied_at timestamptz NOT NULL DEFAULT now())"));
    for (size_t i = 0; i < old; i++) {
        PGresult *r = PQexec(c, pw_migrations[i].sql);
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            fail_msg("%s: %s", pw_migrations[i].name, PQresultErrorMessage(r));
        PQclear(r);
        const char *params[2] = {pw_migrations[i].name, pw_migrations[i].sql};
        r = PQexecParams(c, "INSERT INTO schema_migrations (name, checksum) VALUES ($1, md5($2))", 2, NULL,
                         params, NULL, NULL, 0);
        assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
        PQclear(r);
    }
    PQclear(PQexec(c, "INSERT INTO functions (name, image, memory_mb, vcpus) VALUES ('old', 'img:old', 512, 2)"));
    PQclear(PQexec(c, "INSERT INTO pool_policies (function, policy, min, max, keepalive_ms, quantile) "
                      "VALUES ('old', 'predictive', 1, 7, 9000, 0.95)"));
    PQclear(PQexec(c, "INSERT INTO hosts (id, alive, last_seen) VALUES ('h-old', true, now())"));
    PQfinish(c);

    struct pw_store *s = open_store(&loop, ci, NULL, NULL);
    assert_int_equal(query_ll(ci, "SELECT count(*) FROM schema_migrations", 0, NULL, NULL),
                     (long long)pw_migrations_count);
    struct loaded l;
    memset(&l, 0, sizeof(l));
    assert_int_equal(pw_store_load_functions(s, on_function, &l), PW_OK);
    assert_int_equal(l.n, 1);
    struct pw_function_spec want;
    make_spec(&want, "old", "img:old", 512, PW_POLICY_PREDICTIVE, 1, 7, 9000);
    want.pool.quantile = 0.95;
    assert_spec_equal(&l.fns[0], &want);
    struct drained dr;
    load_drains(s, &dr);
    assert_int_equal(dr.n, 0);
    query(ci, v, sizeof(v), "SELECT draining::text FROM hosts WHERE id = $1", 1, "h-old");
    assert_string_equal(v, "false");
    close_store(&loop, s);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_drains(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    char ci[700], v[256], since[64];
    new_db("t_drains", ci, sizeof(ci));
    struct pw_store_options o;
    pw_store_options_default(&o);
    o.flush_interval_ms = 50;
    struct pw_store *s = open_store(&loop, ci, &o, NULL);
    struct done d;
    struct drained l;

    load_drains(s, &l);
    assert_int_equal(l.n, 0);

    /* A host with a row, and one the database has never heard of. */
    pw_store_put_host(s, "h-known", 1, 1700000000000LL);
    wait_stats(&loop, s, 1, 1);
    drain_sync(&loop, s, "h-known", 1, "alice", &d);
    if (d.err != PW_OK)
        fail_msg("drain h-known: %s", d.msg);
    drain_sync(&loop, s, "h-new", 1, "alice", &d);
    assert_int_equal(d.err, PW_OK);
    load_drains(s, &l);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.hosts[0], "h-known");
    assert_int_equal(l.alive[0], 1);
    assert_string_equal(l.hosts[1], "h-new");
    assert_int_equal(l.alive[1], 0);
    query(ci, v, sizeof(v), "SELECT drain_changed_by || ' ' || alive::text FROM hosts WHERE id = $1", 1, "h-new");
    assert_string_equal(v, "alice false");
    /* A host drained before being seen is not expected at start... */
    struct loaded hosts;
    memset(&hosts, 0, sizeof(hosts));
    assert_int_equal(pw_store_load_hosts(s, on_host, &hosts), PW_OK);
    assert_int_equal(hosts.nhosts, 1);
    assert_string_equal(hosts.hosts[0], "h-known");
    /* ...until its telemetry arrives, which keeps the drain. */
    pw_store_put_host(s, "h-new", 1, 1700000001000LL);
    wait_stats(&loop, s, 2, 1);
    load_drains(s, &l);
    assert_int_equal(l.n, 2);
    assert_int_equal(l.alive[1], 1);
    query(ci, v, sizeof(v), "SELECT extract(epoch FROM last_seen)::bigint FROM hosts WHERE id = $1", 1, "h-new");
    assert_string_equal(v, "1700000001");
    /* Telemetry saying a host died keeps the drain too. */
    pw_store_put_host(s, "h-known", 0, 1700000002000LL);
    wait_stats(&loop, s, 3, 1);
    load_drains(s, &l);
    assert_int_equal(l.n, 2);
    assert_int_equal(l.alive[0], 0);

    /* Draining again changes nothing but the audit trail: who and since when stay. */
    query(ci, since, sizeof(since), "SELECT drain_changed_at::text FROM hosts WHERE id = $1", 1, "h-known");
    drain_sync(&loop, s, "h-known", 1, "bob", &d);
    assert_int_equal(d.err, PW_OK);
    query(ci, v, sizeof(v), "SELECT drain_changed_at::text || ' ' || drain_changed_by FROM hosts WHERE id = $1", 1,
          "h-known");
    char want[128];
    snprintf(want, sizeof(want), "%s alice", since);
    assert_string_equal(v, want);

    /* Undrain: gone from the drained list; an undrain of an unknown host creates no row. */
    drain_sync(&loop, s, "h-known", 0, "carol", &d);
    assert_int_equal(d.err, PW_OK);
    drain_sync(&loop, s, "h-ghost", 0, "carol", &d);
    assert_int_equal(d.err, PW_OK);
    load_drains(s, &l);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.hosts[0], "h-new");
    assert_int_equal(query_ll(ci, "SELECT count(*) FROM hosts WHERE id = $1", 1, "h-ghost", NULL), 0);
    query(ci, v, sizeof(v), "SELECT draining::text || ' ' || drain_changed_by FROM hosts WHERE id = $1", 1,
          "h-known");
    assert_string_equal(v, "false carol");

    /* An id that is not a name is refused before any SQL. */
    struct pw_store_stats st;
    pw_store_stats(s, &st);
    drain_sync(&loop, s, "bad id", 1, "mallory", &d);
    assert_int_equal(d.err, PW_ERR_STORE);
    assert_non_null(strstr(d.msg, "not a valid name"));
    assert_int_equal(query_ll(ci, "SELECT count(*) FROM audit_log WHERE actor = $1", 1, "mallory", NULL), 0);

    /* The audit trail, in order, with whether each call changed anything. */
    query(ci, v, sizeof(v),
          "SELECT string_agg(actor || ':' || action || ':' || (detail->>'changed'), ',' ORDER BY id) "
          "FROM audit_log WHERE subject = $1", 1, "h-known");
    assert_string_equal(v, "alice:host.drain:true,bob:host.drain:false,carol:host.undrain:true");
    query(ci, v, sizeof(v),
          "SELECT string_agg(actor || ':' || action || ':' || (detail->>'changed'), ',' ORDER BY id) "
          "FROM audit_log WHERE subject = $1", 1, "h-ghost");
    assert_string_equal(v, "carol:host.undrain:false");

    /* A drain survives a restart of the store. */
    close_store(&loop, s);
    s = open_store(&loop, ci, NULL, NULL);
    load_drains(s, &l);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.hosts[0], "h-new");
    pw_store_stats(s, &st);
    assert_int_equal(st.queue_depth, 0);
    close_store(&loop, s);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static long long minute_count(const char *ci, const char *fn, const char *minute)
{
    return query_ll(ci, "SELECT count FROM invocation_minutes WHERE function = $1 AND minute = $2", 2,
                    fn, minute);
}

static void test_telemetry(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    char ci[700], v[64];
    new_db("t_telemetry", ci, sizeof(ci));
    struct pw_store_options o;
    pw_store_options_default(&o);
    o.flush_interval_ms = 50;
    struct pw_store *s = open_store(&loop, ci, &o, NULL);
    struct pw_store_stats st;

    pw_store_add_invocations(s, "f", 100, 3);
    pw_store_add_invocations(s, "f", 100, 4);
    pw_store_add_invocations(s, "g", 100, 1);
    pw_store_add_invocations(s, "f", 101, 2);
    pw_store_put_host(s, "h1", 1, 1700000000000LL);
    pw_store_put_host(s, "h2", 1, 1700000000000LL);
    pw_store_put_host(s, "h2", 0, 1700000005000LL);
    pw_store_put_host(s, "h2", 1, 1700000001000LL); /* older than the last: ignored */
    pw_store_stats(s, &st);
    assert_int_equal(st.buffered_rows, 5);
    wait_stats(&loop, s, 5, 1);
    pw_store_stats(s, &st);
    assert_int_equal(st.buffered_rows, 0);
    assert_int_equal(st.dropped_rows, 0);
    assert_int_equal(minute_count(ci, "f", "100"), 7);
    assert_int_equal(minute_count(ci, "g", "100"), 1);
    assert_int_equal(minute_count(ci, "f", "101"), 2);
    query(ci, v, sizeof(v), "SELECT alive::text || '@' || extract(epoch FROM last_seen)::bigint FROM hosts "
          "WHERE id = $1", 1, "h1");
    assert_string_equal(v, "true@1700000000");
    query(ci, v, sizeof(v), "SELECT alive::text || '@' || extract(epoch FROM last_seen)::bigint FROM hosts "
          "WHERE id = $1", 1, "h2");
    assert_string_equal(v, "false@1700000005");

    /* A second flush adds to the stored count. */
    pw_store_add_invocations(s, "f", 100, 5);
    wait_stats(&loop, s, 6, 1);
    assert_int_equal(minute_count(ci, "f", "100"), 12);

    /* More rows than one statement takes. */
    for (int m = 0; m < 1200; m++)
        pw_store_add_invocations(s, "bulk", m, 1);
    pw_store_add_invocations(s, "bulk", 7, 1);
    wait_stats(&loop, s, 1206, 1);
    assert_int_equal(query_ll(ci, "SELECT count(*) FROM invocation_minutes WHERE function = $1", 1, "bulk", NULL), 1200);
    assert_int_equal(query_ll(ci, "SELECT sum(count) FROM invocation_minutes WHERE function = $1", 1, "bulk", NULL), 1201);

    struct loaded l;
    memset(&l, 0, sizeof(l));
    assert_int_equal(pw_store_load_hosts(s, on_host, &l), PW_OK);
    assert_int_equal(l.nhosts, 1);
    assert_string_equal(l.hosts[0], "h1");

    /* Close flushes what is still buffered. */
    pw_store_add_invocations(s, "at-close", 9, 9);
    close_store(&loop, s);
    assert_int_equal(minute_count(ci, "at-close", "9"), 9);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_store_down(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    char ci[700];
    new_db("t_down", ci, sizeof(ci));
    struct pw_store_options o;
    pw_store_options_default(&o);
    o.flush_interval_ms = 50;
    o.telemetry_max_rows = 5;
    o.connect_timeout_ms = 2000;
    struct pw_store *s = open_store(&loop, ci, &o, NULL);
    struct pw_store_stats st;
    struct done d;
    struct pw_function_spec f;
    make_spec(&f, "fn-down", "img", 128, PW_POLICY_FIXED, 1, 2, 1000);

    pw_store_add_invocations(s, "d", 1, 1);
    wait_stats(&loop, s, 1, 1);

    if (pg_action("halt") != 0)
        fail_msg("pgtmp.sh halt failed");
    wait_stats(&loop, s, 1, 0); /* the idle connection is noticed gone */
    put_sync(&loop, s, &f, "alice", &d);
    assert_int_equal(d.err, PW_ERR_STORE);
    assert_true(d.msg[0] != '\0');
    print_message("put while down: %s\n", d.msg);
    drain_sync(&loop, s, "h-down", 1, "alice", &d);
    assert_int_equal(d.err, PW_ERR_STORE);
    struct drained dr;
    assert_int_equal(pw_store_load_drains(s, on_drain, &dr), PW_ERR_STORE);

    /* Telemetry stays buffered while down... */
    pw_store_add_invocations(s, "d", 2, 1);
    pw_store_add_invocations(s, "d", 3, 1);
    pw_store_add_invocations(s, "d", 4, 1);
    run_for(&loop, 300);
    pw_store_stats(s, &st);
    assert_int_equal(st.buffered_rows, 3);
    assert_int_equal(st.flushed_rows, 1);
    assert_int_equal(st.dropped_rows, 0);
    assert_int_equal(st.connected, 0);
    /* ...within the bound: beyond it the oldest rows go. */
    for (int m = 5; m <= 8; m++)
        pw_store_add_invocations(s, "d", m, 1);
    pw_store_add_invocations(s, "d", 8, 1); /* merges: no new row */
    pw_store_stats(s, &st);
    assert_int_equal(st.buffered_rows, 5);
    assert_int_equal(st.dropped_rows, 2);

    if (pg_action("restart") != 0)
        fail_msg("pgtmp.sh restart failed");
    wait_stats(&loop, s, 6, 1);
    pw_store_stats(s, &st);
    assert_int_equal(st.buffered_rows, 0);
    assert_int_equal(query_ll(ci, "SELECT count(*) FROM invocation_minutes WHERE function = $1", 1, "d", NULL), 6);
    assert_int_equal(minute_count(ci, "d", "2"), -1);
    assert_int_equal(minute_count(ci, "d", "3"), -1);
    assert_int_equal(minute_count(ci, "d", "4"), 1);
    assert_int_equal(minute_count(ci, "d", "8"), 2);

    /* Config writes work again; the drain refused while down was not written. */
    put_sync(&loop, s, &f, "alice", &d);
    assert_int_equal(d.err, PW_OK);
    assert_int_equal(query_ll(ci, "SELECT count(*) FROM hosts WHERE id = $1", 1, "h-down", NULL), 0);
    drain_sync(&loop, s, "h-down", 1, "alice", &d);
    assert_int_equal(d.err, PW_OK);
    load_drains(s, &dr);
    assert_int_equal(dr.n, 1);
    close_store(&loop, s);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- the model registry ---- */

struct model_list {
    struct pw_model_row rows[8];
    size_t n;
};

static void on_model(void *arg, const struct pw_model_row *m)
{
    struct model_list *l = arg;
    if (l->n < 8)
        l->rows[l->n++] = *m;
}

static void make_model(struct pw_model_row *m, const char *version, char shachar, enum pw_model_source src)
{
    memset(m, 0, sizeof(*m));
    pw_strlcpy(m->version, version, sizeof(m->version));
    snprintf(m->path, sizeof(m->path), "/models/%s.json", version);
    memset(m->sha256, shachar, 64);
    m->source = src;
    m->rows = src == PW_MODEL_FILE ? -1 : 1440;
    m->functions = src == PW_MODEL_FILE ? -1 : 6;
    m->minutes = src == PW_MODEL_FILE ? -1 : 360;
}

static void model_sync(uv_loop_t *loop, struct pw_store *s, const struct pw_model_row *m, int activate,
                       const char *activate_version, struct done *d)
{
    memset(d, 0, sizeof(*d));
    if (m != NULL)
        pw_store_put_model(s, m, activate, "alice", on_done, d);
    else
        pw_store_activate_model(s, activate_version, "bob", on_done, d);
    assert_true(wait_for(loop, done_called, d, WAIT_MS));
    assert_int_equal(d->called, 1);
}

static void test_models(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    char ci[700], v[256];
    new_db("t_models", ci, sizeof(ci));
    struct pw_store *s = open_store(&loop, ci, NULL, NULL);
    struct done d;
    struct model_list l;
    memset(&l, 0, sizeof(l));
    assert_int_equal(pw_store_load_models(s, on_model, &l), PW_OK);
    assert_int_equal(l.n, 0);

    struct pw_model_row a, b;
    make_model(&a, "file-aaaaaaaaaaaa", 'a', PW_MODEL_FILE);
    make_model(&b, "20261122-000000-bbbbbbbb", 'b', PW_MODEL_TRAINED);
    model_sync(&loop, s, &a, 1, NULL, &d);
    assert_int_equal(d.err, PW_OK);
    model_sync(&loop, s, &b, 0, NULL, &d);
    assert_int_equal(d.err, PW_OK);
    /* Registering the same bytes again is a no-op; other bytes under the same version are refused. */
    model_sync(&loop, s, &b, 0, NULL, &d);
    assert_int_equal(d.err, PW_OK);
    struct pw_model_row b2 = b;
    memset(b2.sha256, 'c', 64);
    model_sync(&loop, s, &b2, 1, NULL, &d);
    assert_int_equal(d.err, PW_ERR_CONFLICT);
    /* A bad version never reaches SQL; the database would refuse it too. */
    struct pw_model_row bad = b;
    pw_strlcpy(bad.version, "bad version", sizeof(bad.version));
    model_sync(&loop, s, &bad, 0, NULL, &d);
    assert_int_equal(d.err, PW_ERR_STORE);

    memset(&l, 0, sizeof(l));
    assert_int_equal(pw_store_load_models(s, on_model, &l), PW_OK);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.rows[0].version, a.version);
    assert_int_equal(l.rows[0].active, 1);
    assert_int_equal(l.rows[0].source, PW_MODEL_FILE);
    assert_int_equal(l.rows[0].rows, -1);
    assert_true(l.rows[0].activated_ms > 0);
    assert_string_equal(l.rows[1].version, b.version);
    assert_int_equal(l.rows[1].active, 0);
    assert_int_equal(l.rows[1].rows, 1440);
    assert_int_equal(l.rows[1].functions, 6);
    assert_int_equal(l.rows[1].minutes, 360);
    assert_memory_equal(l.rows[1].sha256, b.sha256, 65);
    assert_true(l.rows[1].created_ms > 1700000000000LL);

    /* Activation moves the one active flag, with an audit row; an unknown version changes nothing. */
    model_sync(&loop, s, NULL, 0, b.version, &d);
    assert_int_equal(d.err, PW_OK);
    model_sync(&loop, s, NULL, 0, "20990101-000000-00000000", &d);
    assert_int_equal(d.err, PW_ERR_NOTFOUND);
    query(ci, v, sizeof(v), "SELECT string_agg(version, ',') FROM models WHERE active", 0);
    assert_string_equal(v, b.version);
    assert_int_equal(query_ll(ci, "SELECT count(*) FROM audit_log WHERE action = 'model.activate' AND actor = $1", 1,
                              "bob", NULL),
                     1);
    assert_int_equal(query_ll(ci, "SELECT count(*) FROM audit_log WHERE action = 'model.register'", 0, NULL, NULL),
                     2);
    /* Exactly one row is active. */
    query(ci, v, sizeof(v), "SELECT count(*) FROM models WHERE active", 0);
    assert_string_equal(v, "1");
    close_store(&loop, s);
    uv_loop_close(&loop);
}

/* ---- leader election and fencing (leader.h) ---- */

struct lead {
    int elected, lost;
    uint64_t epoch;
};

static void on_lead(void *arg, enum pw_leader_event ev, uint64_t epoch)
{
    struct lead *l = arg;
    if (ev == PW_LEADER_ELECTED) {
        l->elected = 1;
        l->epoch = epoch;
    } else {
        l->lost = 1;
    }
}

static int lead_elected(void *arg)
{
    return ((struct lead *)arg)->elected;
}

static struct pw_leader *start_leader(uv_loop_t *loop, const char *ci, const char *holder, struct lead *l)
{
    struct pw_leader_options o;
    pw_leader_options_default(&o);
    o.conninfo = ci;
    o.holder = holder;
    o.renew_ms = 100;
    o.lease_ms = 400;
    o.takeover_ms = 800;
    struct pw_leader *x = NULL;
    char err[256] = "";
    if (pw_leader_new(loop, &o, on_lead, l, &x, err, sizeof(err)) != PW_OK)
        fail_msg("pw_leader_new: %s", err);
    return x;
}

static void test_leader_fencing(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    char ci[700], v[256];
    new_db("t_leader", ci, sizeof(ci));
    struct pw_store *s = open_store(&loop, ci, NULL, NULL);
    struct lead la = {0}, lb = {0}, lc = {0};
    struct pw_leader *a = start_leader(&loop, ci, "replica-a", &la);
    assert_true(wait_for(&loop, lead_elected, &la, WAIT_MS));
    assert_true(pw_leader_may_act(a));
    assert_true(la.epoch >= 1);
    /* A second replica follows while the first renews. */
    struct pw_leader *b = start_leader(&loop, ci, "replica-b", &lb);
    run_for(&loop, 1000);
    assert_int_equal(lb.elected, 0);
    assert_false(pw_leader_may_act(b));
    struct pw_leader_status st;
    pw_leader_status(b, &st);
    assert_string_equal(st.current_holder, "replica-a");
    assert_int_equal(st.current_epoch, la.epoch);

    /* Writes fenced with a's epoch go through while a leads. */
    struct pw_function_spec f;
    make_spec(&f, "f1", "img", 128, PW_POLICY_FIXED, 1, 2, 0);
    struct done d;
    pw_store_set_epoch(s, la.epoch);
    put_sync(&loop, s, &f, "alice", &d);
    assert_int_equal(d.err, PW_OK);

    /* a goes away (its session, and the lock, with it): b leads with a newer epoch. */
    pw_leader_close(a);
    assert_true(wait_for(&loop, lead_elected, &lb, WAIT_MS));
    assert_true(lb.epoch > la.epoch);
    query(ci, v, sizeof(v), "SELECT holder || ' ' || epoch FROM pw_leader", 0);
    char want[128];
    snprintf(want, sizeof(want), "replica-b %llu", (unsigned long long)lb.epoch);
    assert_string_equal(v, want);
    /* The store still fenced with a's epoch refuses, and changes nothing. */
    make_spec(&f, "f2", "img", 128, PW_POLICY_FIXED, 1, 2, 0);
    put_sync(&loop, s, &f, "alice", &d);
    assert_int_equal(d.err, PW_ERR_STALE);
    assert_non_null(strstr(d.msg, "fenced"));
    struct pw_store_stats ss;
    pw_store_stats(s, &ss);
    assert_int_equal(ss.fenced, 1);
    assert_int_equal(query_ll(ci, "SELECT count(*) FROM functions WHERE name = 'f2'", 0, NULL, NULL), 0);
    pw_store_set_epoch(s, lb.epoch);
    put_sync(&loop, s, &f, "bob", &d);
    assert_int_equal(d.err, PW_OK);

    /* A silent leader — a session holding the lock whose renewals stopped (a process stopped
     * with SIGSTOP) — is ended by a follower, which then leads. */
    pw_leader_close(b);
    run_for(&loop, 200);
    PGconn *silent = PQconnectdb(ci);
    assert_int_equal(PQstatus(silent), CONNECTION_OK);
    PGresult *r = PQexec(silent, "SELECT pg_advisory_lock(7306355)");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    PQclear(r);
    r = PQexec(silent, "UPDATE pw_leader SET holder = 'silent', epoch = nextval('pw_epoch_seq'), "
                       "backend_pid = pg_backend_pid(), renewed_at = now() - interval '10 seconds'");
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    struct pw_leader *c = start_leader(&loop, ci, "replica-c", &lc);
    assert_true(wait_for(&loop, lead_elected, &lc, WAIT_MS));
    assert_true(lc.epoch > lb.epoch + 1);
    pw_leader_status(c, &st);
    assert_int_equal(st.takeovers, 1);
    r = PQexec(silent, "SELECT 1");
    assert_int_not_equal(PQresultStatus(r), PGRES_TUPLES_OK); /* its session was ended */
    PQclear(r);
    PQfinish(silent);

    pw_leader_close(c);
    close_store(&loop, s);
    assert_int_equal(la.lost + lb.lost + lc.lost, 0);
    uv_loop_close(&loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_unreachable),
        cmocka_unit_test(test_migrations_idempotent),
        cmocka_unit_test(test_checksum_mismatch),
        cmocka_unit_test(test_concurrent_open),
        cmocka_unit_test(test_functions),
        cmocka_unit_test(test_placement),
        cmocka_unit_test(test_upgrade),
        cmocka_unit_test(test_drains),
        cmocka_unit_test(test_telemetry),
        cmocka_unit_test(test_models),
        cmocka_unit_test(test_leader_fencing),
        cmocka_unit_test(test_store_down),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
