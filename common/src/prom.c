/* prom.c — Prometheus text exposition format 0.0.4; see prom.h. */
#include "pw/prom.h"

#include "pw/error.h"

#include <assert.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

const double pw_prom_latency_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                         0.5,   1,      2.5,   5,    10,    30,   60};
const size_t pw_prom_latency_nbounds = sizeof(pw_prom_latency_bounds) / sizeof(pw_prom_latency_bounds[0]);

static const char *type_str(enum pw_prom_type t)
{
    switch (t) {
    case PW_PROM_COUNTER:
        return "counter";
    case PW_PROM_GAUGE:
        return "gauge";
    case PW_PROM_HISTOGRAM:
        return "histogram";
    }
    return "untyped";
}

void pw_prom_init(struct pw_prom *w, struct pw_buf *b)
{
    w->b = b;
    w->err = PW_OK;
}

int pw_prom_err(const struct pw_prom *w)
{
    return w->err;
}

/* note keeps the first error. */
static void note(struct pw_prom *w, int rv)
{
    if (w->err == PW_OK && rv != PW_OK)
        w->err = rv;
}

static int escape(struct pw_buf *b, const char *s, int quote)
{
    int rv = PW_OK;
    const char *run = s;
    for (; *s != '\0' && rv == PW_OK; s++) {
        const char *rep = NULL;
        if (*s == '\\')
            rep = "\\\\";
        else if (*s == '\n')
            rep = "\\n";
        else if (*s == '"' && quote)
            rep = "\\\"";
        if (rep == NULL)
            continue;
        rv = pw_buf_add(b, run, (size_t)(s - run));
        if (rv == PW_OK)
            rv = pw_buf_adds(b, rep);
        run = s + 1;
    }
    if (rv == PW_OK)
        rv = pw_buf_add(b, run, strlen(run));
    return rv;
}

int pw_prom_escape_label(struct pw_buf *b, const char *s)
{
    return escape(b, s, 1);
}

int pw_prom_escape_help(struct pw_buf *b, const char *s)
{
    return escape(b, s, 0);
}

void pw_prom_family(struct pw_prom *w, const char *name, enum pw_prom_type type, const char *help)
{
    if (w->err != PW_OK)
        return;
    size_t mark = w->b->len;
    int rv = pw_buf_printf(w->b, "# HELP %s ", name);
    if (rv == PW_OK)
        rv = pw_prom_escape_help(w->b, help);
    if (rv == PW_OK)
        rv = pw_buf_printf(w->b, "\n# TYPE %s %s\n", name, type_str(type));
    if (rv != PW_OK) {
        /* Never leave half a line behind. */
        w->b->len = mark;
        w->b->data[mark] = '\0';
    }
    note(w, rv);
}

static void format_double(char *out, size_t n, double v)
{
    if (isnan(v))
        snprintf(out, n, "NaN");
    else if (isinf(v))
        snprintf(out, n, v > 0 ? "+Inf" : "-Inf");
    else
        snprintf(out, n, "%.15g", v);
}

/* write_line writes name{labels[,le="le"]} value\n, all or nothing. */
static void write_line(struct pw_prom *w, const char *name, const char *suffix, const struct pw_prom_label *labels,
                       size_t nlabels, const char *le, const char *value)
{
    if (w->err != PW_OK)
        return;
    size_t mark = w->b->len;
    int rv = pw_buf_printf(w->b, "%s%s", name, suffix);
    if (rv == PW_OK && (nlabels > 0 || le != NULL)) {
        rv = pw_buf_adds(w->b, "{");
        for (size_t i = 0; i < nlabels && rv == PW_OK; i++) {
            rv = pw_buf_printf(w->b, "%s%s=\"", i ? "," : "", labels[i].name);
            if (rv == PW_OK)
                rv = pw_prom_escape_label(w->b, labels[i].value != NULL ? labels[i].value : "");
            if (rv == PW_OK)
                rv = pw_buf_adds(w->b, "\"");
        }
        if (rv == PW_OK && le != NULL)
            rv = pw_buf_printf(w->b, "%sle=\"%s\"", nlabels ? "," : "", le);
        if (rv == PW_OK)
            rv = pw_buf_adds(w->b, "}");
    }
    if (rv == PW_OK)
        rv = pw_buf_printf(w->b, " %s\n", value);
    if (rv != PW_OK) {
        w->b->len = mark;
        w->b->data[mark] = '\0';
    }
    note(w, rv);
}

void pw_prom_sample(struct pw_prom *w, const char *name, const struct pw_prom_label *labels, size_t nlabels,
                    double value)
{
    char v[64];
    format_double(v, sizeof(v), value);
    write_line(w, name, "", labels, nlabels, NULL, v);
}

void pw_prom_sample_u64(struct pw_prom *w, const char *name, const struct pw_prom_label *labels, size_t nlabels,
                        uint64_t value)
{
    char v[32];
    snprintf(v, sizeof(v), "%" PRIu64, value);
    write_line(w, name, "", labels, nlabels, NULL, v);
}

void pw_prom_hist_write(struct pw_prom *w, const char *name, const struct pw_prom_label *labels, size_t nlabels,
                        const struct pw_prom_hist *h)
{
    uint64_t cum = 0;
    char le[64], v[64];
    for (size_t i = 0; i < h->nbounds; i++) {
        cum += h->counts[i];
        format_double(le, sizeof(le), h->bounds[i]);
        snprintf(v, sizeof(v), "%" PRIu64, cum);
        write_line(w, name, "_bucket", labels, nlabels, le, v);
    }
    cum += h->counts[h->nbounds];
    snprintf(v, sizeof(v), "%" PRIu64, cum);
    write_line(w, name, "_bucket", labels, nlabels, "+Inf", v);
    format_double(v, sizeof(v), h->sum);
    write_line(w, name, "_sum", labels, nlabels, NULL, v);
    /* _count is the +Inf bucket by construction. */
    snprintf(v, sizeof(v), "%" PRIu64, cum);
    write_line(w, name, "_count", labels, nlabels, NULL, v);
}

void pw_prom_hist_init(struct pw_prom_hist *h, const double *bounds, size_t n)
{
    assert(n <= PW_PROM_MAX_BOUNDS);
    memset(h, 0, sizeof(*h));
    for (size_t i = 0; i < n; i++) {
        assert(i == 0 || bounds[i] > bounds[i - 1]);
        h->bounds[i] = bounds[i];
    }
    h->nbounds = n;
}

void pw_prom_hist_observe(struct pw_prom_hist *h, double v)
{
    if (isnan(v))
        return;
    size_t i = 0;
    while (i < h->nbounds && v > h->bounds[i])
        i++;
    h->counts[i]++;
    h->sum += v;
    h->count++;
}
