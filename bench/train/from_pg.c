/* from_pg.c — prewarm-train --pg: train the model from the invocation history prewarmd keeps in
 * PostgreSQL (table invocation_minutes, memory from functions), with the same rows as the
 * forecaster (pw_train_series). Execution times are not stored there: every function gets
 * --pg-duration-ms (default 1000). No held-out evaluation: that needs a trace directory. */
#include "from_pg.h"

#include "pw/error.h"
#include "pw/train.h"
#include "pw/util.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct fnrow {
    struct pw_hnode hnode;
    char name[PW_NAME_MAX];
    size_t index;
};

static int fn_eq(const struct pw_hnode *n, const void *key)
{
    return strcmp(pw_container_of(n, struct fnrow, hnode)->name, key) == 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

int pw_train_from_pg(const struct pw_pg_train *o)
{
    int code = 1;
    PGconn *c = PQconnectdb(o->conninfo);
    PGresult *r = NULL, *mem = NULL;
    struct pw_htab fns;
    pw_htab_init(&fns);
    struct fnrow **list = NULL;
    uint32_t *counts = NULL;
    struct pw_series *series = NULL;
    struct pw_model *m = NULL;
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "prewarm-train: cannot connect to PostgreSQL: %s", PQerrorMessage(c));
        goto out;
    }
    char minutes[32];
    snprintf(minutes, sizeof(minutes), "%zu", o->minutes);
    const char *params[1] = {minutes};
    r = PQexecParams(c,
                     "SELECT function, minute, count FROM invocation_minutes "
                     "WHERE minute > (SELECT max(minute) FROM invocation_minutes) - $1::bigint ORDER BY function, minute",
                     1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, "prewarm-train: reading invocation_minutes: %s", PQerrorMessage(c));
        goto out;
    }
    mem = PQexec(c, "SELECT name, memory_mb FROM functions");
    if (PQresultStatus(mem) != PGRES_TUPLES_OK) {
        fprintf(stderr, "prewarm-train: reading functions: %s", PQerrorMessage(c));
        goto out;
    }
    int n = PQntuples(r);
    if (n == 0) {
        fprintf(stderr, "prewarm-train: invocation_minutes is empty: nothing to train on\n");
        goto out;
    }
    /* One window for every function: the last `minutes` minutes that have rows. */
    long long lo = 0, hi = 0;
    for (int i = 0; i < n; i++) {
        long long mi = strtoll(PQgetvalue(r, i, 1), NULL, 10);
        if (i == 0 || mi < lo)
            lo = mi;
        if (i == 0 || mi > hi)
            hi = mi;
    }
    size_t w = (size_t)(hi - lo + 1);
    size_t nf = 0, cap = 0;
    for (int i = 0; i < n; i++) {
        const char *name = PQgetvalue(r, i, 0);
        if (strlen(name) >= PW_NAME_MAX)
            continue;
        struct pw_hnode *h = pw_htab_find(&fns, pw_hash_str(name), name, fn_eq);
        struct fnrow *f = h ? pw_container_of(h, struct fnrow, hnode) : NULL;
        if (f == NULL) {
            if (nf == cap) {
                cap = cap ? cap * 2 : 256;
                list = pw_xrealloc(list, cap * sizeof(*list));
                counts = pw_xrealloc(counts, cap * w * sizeof(*counts));
            }
            f = pw_xcalloc(1, sizeof(*f));
            pw_strlcpy(f->name, name, sizeof(f->name));
            f->index = nf;
            memset(counts + nf * w, 0, w * sizeof(*counts));
            pw_htab_insert(&fns, &f->hnode, pw_hash_str(f->name));
            list[nf++] = f;
        }
        long long mi = strtoll(PQgetvalue(r, i, 1), NULL, 10);
        long long cnt = strtoll(PQgetvalue(r, i, 2), NULL, 10);
        counts[f->index * w + (size_t)(mi - lo)] = cnt < 0 ? 0 : cnt > UINT32_MAX ? UINT32_MAX : (uint32_t)cnt;
    }
    series = pw_xcalloc(nf ? nf : 1, sizeof(*series));
    for (size_t i = 0; i < nf; i++) {
        series[i] = (struct pw_series){.counts = counts + i * w, .n = w, .first_minute = lo,
                                       .st = {.dur_ms = o->duration_ms, .mem_mb = 256.0}};
    }
    for (int i = 0; i < PQntuples(mem); i++) {
        struct pw_hnode *h = pw_htab_find(&fns, pw_hash_str(PQgetvalue(mem, i, 0)), PQgetvalue(mem, i, 0), fn_eq);
        if (h != NULL)
            series[pw_container_of(h, struct fnrow, hnode)->index].st.mem_mb = atof(PQgetvalue(mem, i, 1));
    }
    printf("PostgreSQL: %zu functions x %zu minutes [%lld, %lld], %d stored minutes\n", nf, w, lo, hi, n);
    struct pw_train_opts to;
    pw_train_opts_default(&to);
    to.model = o->model;
    to.zero_keep = o->zero_keep;
    to.seed = o->model.seed;
    to.min_rows = o->min_rows;
    size_t rows = 0;
    double t0 = now_s();
    int rv = pw_train_series(series, nf, &to, &m, &rows);
    if (rv != PW_OK) {
        fprintf(stderr, "prewarm-train: not trained: %s (fewer than %zu minutes with invocations after the %d-minute "
                        "feature window?)\n",
                pw_strerror((enum pw_err)rv), o->min_rows, 120);
        goto out;
    }
    printf("trained %d trees on %zu rows in %.1f s\n", o->model.trees, rows, now_s() - t0);
    if (pw_model_save(m, o->out) != PW_OK) {
        fprintf(stderr, "prewarm-train: cannot save %s\n", o->out);
        goto out;
    }
    printf("saved %s\n", o->out);
    code = 0;
out:
    pw_model_free(m);
    free(series);
    free(counts);
    for (size_t i = 0; list != NULL && i < nf; i++)
        free(list[i]);
    free(list);
    pw_htab_fini(&fns);
    PQclear(r);
    PQclear(mem);
    PQfinish(c);
    return code;
}
