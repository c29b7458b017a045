/* trace.c — loading Azure-2019-layout traces strictly, and the deterministic RNG. */
#include "pw/trace.h"

#include "pw/error.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const double pw_trace_pct_points[PW_TRACE_NPCT] = {0, 1, 25, 50, 75, 99, 100};

#define MAX_FIELDS (PW_TRACE_MAX_MINUTES + 16)

uint64_t pw_rng_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

double pw_rng_unit(uint64_t *state)
{
    return (double)(pw_rng_next(state) >> 11) * (1.0 / 9007199254740992.0);
}

double pw_trace_draw_duration_ms(const struct pw_trace_fn *f, double u)
{
    double p = u * 100.0;
    for (int i = 1; i < PW_TRACE_NPCT; i++) {
        if (p <= pw_trace_pct_points[i]) {
            double p0 = pw_trace_pct_points[i - 1], p1 = pw_trace_pct_points[i];
            double v0 = f->dur_pct_ms[i - 1], v1 = f->dur_pct_ms[i];
            return v0 + (v1 - v0) * (p - p0) / (p1 - p0);
        }
    }
    return f->dur_pct_ms[PW_TRACE_NPCT - 1];
}

size_t pw_trace_split(char *line, char **fields, size_t max)
{
    size_t n = 0;
    char *p = line;
    /* Strip the line end (LF or CRLF). */
    size_t len = strlen(line);
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
        line[--len] = '\0';
    for (;;) {
        if (n < max)
            fields[n] = p;
        n++;
        char *comma = strchr(p, ',');
        if (comma == NULL)
            break;
        *comma = '\0';
        p = comma + 1;
    }
    return n;
}

/* ---- strict field parsing ---- */

static int parse_u32(const char *s, uint32_t *out)
{
    if (*s == '\0' || *s == '-' || *s == '+' || *s == ' ')
        return 0;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v > UINT32_MAX)
        return 0;
    *out = (uint32_t)v;
    return 1;
}

static int parse_nonneg(const char *s, double *out)
{
    if (*s == '\0' || *s == ' ')
        return 0;
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (errno != 0 || *end != '\0' || !isfinite(v) || v < 0)
        return 0;
    *out = v;
    return 1;
}

/* ---- name table ---- */

struct name_node {
    struct pw_hnode hnode;
    const char *key;
    size_t index;
};

static int name_eq(const struct pw_hnode *n, const void *key)
{
    return strcmp(pw_container_of(n, struct name_node, hnode)->key, key) == 0;
}

static struct name_node *name_find(struct pw_htab *t, const char *key)
{
    struct pw_hnode *n = pw_htab_find(t, pw_hash_str(key), key, name_eq);
    return n ? pw_container_of(n, struct name_node, hnode) : NULL;
}

static void name_free_all(struct pw_htab *t)
{
    size_t b = 0;
    struct pw_hnode *n = NULL, *e;
    while ((e = pw_htab_next(t, &b, &n)) != NULL)
        free(pw_container_of(e, struct name_node, hnode));
    pw_htab_fini(t);
}

/* ---- loading ---- */

struct loader {
    char path[4096];
    FILE *f;
    char *line;
    size_t cap;
    long lineno;
    char **fields;
};

static int open_file(struct loader *l, const char *dir, const char *name, char *errbuf, size_t errlen)
{
    snprintf(l->path, sizeof(l->path), "%s/%s", dir, name);
    l->f = fopen(l->path, "r");
    l->lineno = 0;
    if (l->f == NULL) {
        snprintf(errbuf, errlen, "%s: %s", l->path, strerror(errno));
        return PW_ERR_IO;
    }
    return PW_OK;
}

/* next_line reads one line and splits it; returns the field count, 0 at the end. */
static size_t next_line(struct loader *l)
{
    ssize_t n = getline(&l->line, &l->cap, l->f);
    if (n < 0)
        return 0;
    l->lineno++;
    if (n > 0 && memchr(l->line, '\0', (size_t)n) != NULL)
        l->line[0] = '\0'; /* embedded NUL: an empty line, refused by the caller */
    return pw_trace_split(l->line, l->fields, MAX_FIELDS);
}

static int fail(char *errbuf, size_t errlen, const struct loader *l, const char *why)
{
    snprintf(errbuf, errlen, "%s:%ld: %s", l->path, l->lineno, why);
    return PW_ERR_PARSE;
}

static int col(char **fields, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(fields[i], name) == 0)
            return (int)i;
    return -1;
}

static void make_name(struct pw_trace_fn *fn, size_t index, struct pw_htab *names, struct name_node **nodes)
{
    char base[PW_NAME_MAX] = "f";
    size_t k = 1;
    for (const char *p = fn->hash; *p && k < 25; p++)
        if ((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z'))
            base[k++] = *p;
    base[k] = '\0';
    if (k == 1)
        snprintf(base, sizeof(base), "f%zu", index);
    pw_strlcpy(fn->name, base, sizeof(fn->name));
    if (name_find(names, fn->name) != NULL) {
        char dup[PW_NAME_MAX + 24];
        snprintf(dup, sizeof(dup), "%s-%zu", base, index); /* base is at most 25 bytes */
        pw_strlcpy(fn->name, dup, sizeof(fn->name));
    }
    struct name_node *nn = pw_xcalloc(1, sizeof(*nn));
    nn->key = fn->name;
    nn->index = index;
    pw_htab_insert(names, &nn->hnode, pw_hash_str(nn->key));
    *nodes = nn;
}

static int load_invocations(struct loader *l, const char *dir, struct pw_trace *t, char *errbuf, size_t errlen)
{
    int rv = open_file(l, dir, "invocations_per_minute.csv", errbuf, errlen);
    if (rv != PW_OK)
        return rv;
    size_t n = next_line(l);
    if (n < 4 || strcmp(l->fields[0], "HashFunction") != 0 || strcmp(l->fields[1], "HashApp") != 0 ||
        strcmp(l->fields[2], "HashOwner") != 0) {
        fclose(l->f);
        return fail(errbuf, errlen, l, "header must be HashFunction,HashApp,HashOwner,<minutes...>");
    }
    if (n > MAX_FIELDS) {
        fclose(l->f);
        snprintf(errbuf, errlen, "%s: more than %d minutes", l->path, PW_TRACE_MAX_MINUTES);
        return PW_ERR_TOOBIG;
    }
    t->nminutes = n - 3;
    struct pw_htab names;
    pw_htab_init(&names);
    size_t cap = 0;
    rv = PW_OK;
    while ((n = next_line(l)) > 0) {
        if (n == 1 && l->fields[0][0] == '\0')
            continue; /* blank line */
        if (n != t->nminutes + 3) {
            char why[128];
            snprintf(why, sizeof(why), "%zu fields, expected %zu", n, t->nminutes + 3);
            rv = fail(errbuf, errlen, l, why);
            break;
        }
        if (l->fields[0][0] == '\0' || strlen(l->fields[0]) > 64 || strlen(l->fields[1]) > 64) {
            rv = fail(errbuf, errlen, l, "HashFunction and HashApp must be 1-64 characters");
            break;
        }
        if (t->nfns >= PW_TRACE_MAX_FUNCTIONS) {
            snprintf(errbuf, errlen, "%s: more than %d functions", l->path, PW_TRACE_MAX_FUNCTIONS);
            rv = PW_ERR_TOOBIG;
            break;
        }
        if (t->nfns == cap) {
            cap = cap ? cap * 2 : 256;
            t->fns = pw_xrealloc(t->fns, cap * sizeof(*t->fns));
        }
        struct pw_trace_fn *fn = &t->fns[t->nfns];
        memset(fn, 0, sizeof(*fn));
        pw_strlcpy(fn->hash, l->fields[0], sizeof(fn->hash));
        pw_strlcpy(fn->app, l->fields[1], sizeof(fn->app));
        fn->minutes = pw_xmalloc(t->nminutes * sizeof(*fn->minutes));
        t->nfns++;
        for (size_t m = 0; m < t->nminutes; m++) {
            if (!parse_u32(l->fields[3 + m], &fn->minutes[m])) {
                char why[128];
                snprintf(why, sizeof(why), "minute %zu: \"%.20s\" is not a count", m + 1, l->fields[3 + m]);
                rv = fail(errbuf, errlen, l, why);
                break;
            }
            fn->total += fn->minutes[m];
        }
        if (rv != PW_OK)
            break;
        t->total += fn->total;
        struct name_node *nn;
        make_name(fn, t->nfns - 1, &names, &nn);
    }
    fclose(l->f);
    name_free_all(&names);
    if (rv == PW_OK && t->nfns == 0) {
        snprintf(errbuf, errlen, "%s: no functions", l->path);
        rv = PW_ERR_PARSE;
    }
    return rv;
}

static int load_durations(struct loader *l, const char *dir, struct pw_trace *t, struct pw_htab *by_hash,
                          char *errbuf, size_t errlen)
{
    int rv = open_file(l, dir, "durations_ms.csv", errbuf, errlen);
    if (rv != PW_OK)
        return rv;
    size_t n = next_line(l);
    static const char *pct_cols[PW_TRACE_NPCT] = {"percentile_Average_0",  "percentile_Average_1",
                                                  "percentile_Average_25", "percentile_Average_50",
                                                  "percentile_Average_75", "percentile_Average_99",
                                                  "percentile_Average_100"};
    int c_hash = col(l->fields, PW_MIN(n, (size_t)MAX_FIELDS), "HashFunction");
    int c_avg = col(l->fields, PW_MIN(n, (size_t)MAX_FIELDS), "Average");
    int c_pct[PW_TRACE_NPCT];
    int ok = c_hash >= 0 && c_avg >= 0;
    for (int i = 0; i < PW_TRACE_NPCT; i++) {
        c_pct[i] = col(l->fields, PW_MIN(n, (size_t)MAX_FIELDS), pct_cols[i]);
        ok &= c_pct[i] >= 0;
    }
    if (!ok) {
        fclose(l->f);
        return fail(errbuf, errlen, l, "header needs HashFunction, Average and percentile_Average_{0,1,25,50,75,99,100}");
    }
    size_t nhdr = n;
    while ((n = next_line(l)) > 0) {
        if (n == 1 && l->fields[0][0] == '\0')
            continue;
        if (n != nhdr) {
            rv = fail(errbuf, errlen, l, "field count differs from the header");
            break;
        }
        struct name_node *nn = name_find(by_hash, l->fields[c_hash]);
        double avg, pct[PW_TRACE_NPCT];
        if (!parse_nonneg(l->fields[c_avg], &avg)) {
            rv = fail(errbuf, errlen, l, "Average is not a non-negative number");
            break;
        }
        for (int i = 0; i < PW_TRACE_NPCT && rv == PW_OK; i++)
            if (!parse_nonneg(l->fields[c_pct[i]], &pct[i]))
                rv = fail(errbuf, errlen, l, "a percentile is not a non-negative number");
        if (rv != PW_OK)
            break;
        if (nn == NULL)
            continue; /* a function with no invocations row: nothing to replay */
        /* Every function with this hash (duplicates are separate functions). */
        for (size_t i = nn->index; i < t->nfns; i++) {
            struct pw_trace_fn *fn = &t->fns[i];
            if (strcmp(fn->hash, l->fields[c_hash]) != 0 || fn->dur_known)
                continue;
            fn->dur_avg_ms = avg;
            double prev = 0;
            for (int k = 0; k < PW_TRACE_NPCT; k++) {
                /* Percentiles are averages over days, so they may dip; keep them monotone. */
                prev = pct[k] > prev ? pct[k] : prev;
                fn->dur_pct_ms[k] = prev;
            }
            fn->dur_known = 1;
        }
    }
    fclose(l->f);
    return rv;
}

static int load_memory(struct loader *l, const char *dir, struct pw_trace *t, char *errbuf, size_t errlen)
{
    int rv = open_file(l, dir, "memory_mb.csv", errbuf, errlen);
    if (rv != PW_OK)
        return rv;
    size_t n = next_line(l);
    int c_app = col(l->fields, PW_MIN(n, (size_t)MAX_FIELDS), "HashApp");
    int c_mem = col(l->fields, PW_MIN(n, (size_t)MAX_FIELDS), "AverageAllocatedMb");
    if (c_app < 0 || c_mem < 0) {
        fclose(l->f);
        return fail(errbuf, errlen, l, "header needs HashApp and AverageAllocatedMb");
    }
    struct pw_htab apps;
    pw_htab_init(&apps);
    for (size_t i = 0; i < t->nfns; i++) {
        if (name_find(&apps, t->fns[i].app) != NULL)
            continue;
        struct name_node *nn = pw_xcalloc(1, sizeof(*nn));
        nn->key = t->fns[i].app;
        nn->index = i;
        pw_htab_insert(&apps, &nn->hnode, pw_hash_str(nn->key));
    }
    size_t nhdr = n;
    while ((n = next_line(l)) > 0) {
        if (n == 1 && l->fields[0][0] == '\0')
            continue;
        if (n != nhdr) {
            rv = fail(errbuf, errlen, l, "field count differs from the header");
            break;
        }
        double mem;
        if (!parse_nonneg(l->fields[c_mem], &mem)) {
            rv = fail(errbuf, errlen, l, "AverageAllocatedMb is not a non-negative number");
            break;
        }
        struct name_node *nn = name_find(&apps, l->fields[c_app]);
        if (nn == NULL)
            continue;
        for (size_t i = nn->index; i < t->nfns; i++) {
            if (!t->fns[i].mem_known && strcmp(t->fns[i].app, l->fields[c_app]) == 0) {
                t->fns[i].mem_mb = mem;
                t->fns[i].mem_known = 1;
            }
        }
    }
    fclose(l->f);
    name_free_all(&apps);
    return rv;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* fill_missing gives functions without a durations or memory row the trace's median. */
static void fill_missing(struct pw_trace *t)
{
    double *v = pw_xmalloc((t->nfns + 1) * sizeof(*v));
    size_t k = 0;
    for (size_t i = 0; i < t->nfns; i++)
        if (t->fns[i].dur_known)
            v[k++] = t->fns[i].dur_avg_ms;
    qsort(v, k, sizeof(*v), cmp_double);
    double dur = k ? v[k / 2] : 1000.0;
    k = 0;
    for (size_t i = 0; i < t->nfns; i++)
        if (t->fns[i].mem_known)
            v[k++] = t->fns[i].mem_mb;
    qsort(v, k, sizeof(*v), cmp_double);
    double mem = k ? v[k / 2] : 256.0;
    free(v);
    for (size_t i = 0; i < t->nfns; i++) {
        struct pw_trace_fn *fn = &t->fns[i];
        if (!fn->dur_known) {
            t->dur_missing++;
            fn->dur_avg_ms = dur;
            for (int p = 0; p < PW_TRACE_NPCT; p++)
                fn->dur_pct_ms[p] = dur;
        }
        if (!fn->mem_known) {
            t->mem_missing++;
            fn->mem_mb = mem;
        }
    }
}

int pw_trace_load(const char *dir, struct pw_trace *out, char *errbuf, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    struct loader l;
    memset(&l, 0, sizeof(l));
    l.fields = pw_xmalloc(MAX_FIELDS * sizeof(*l.fields));
    int rv = load_invocations(&l, dir, out, errbuf, errlen);
    struct pw_htab by_hash;
    pw_htab_init(&by_hash);
    if (rv == PW_OK) {
        for (size_t i = 0; i < out->nfns; i++) {
            if (name_find(&by_hash, out->fns[i].hash) != NULL)
                continue; /* the first of duplicates; load_durations scans on from it */
            struct name_node *nn = pw_xcalloc(1, sizeof(*nn));
            nn->key = out->fns[i].hash;
            nn->index = i;
            pw_htab_insert(&by_hash, &nn->hnode, pw_hash_str(nn->key));
        }
        rv = load_durations(&l, dir, out, &by_hash, errbuf, errlen);
    }
    if (rv == PW_OK)
        rv = load_memory(&l, dir, out, errbuf, errlen);
    name_free_all(&by_hash);
    free(l.line);
    free(l.fields);
    if (rv != PW_OK) {
        pw_trace_free(out);
        return rv;
    }
    fill_missing(out);
    return PW_OK;
}

void pw_trace_free(struct pw_trace *t)
{
    for (size_t i = 0; i < t->nfns; i++)
        free(t->fns[i].minutes);
    free(t->fns);
    memset(t, 0, sizeof(*t));
}
