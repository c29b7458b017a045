/* main.c — bench-gateway-load: an open-loop load generator that acts as a FaaS gateway
 * against a running prewarmd (docs/gateway.md, "Load benchmark").
 *
 * For each step (a target rate), it takes the Azure trace's arrivals from its first minutes,
 * scales time so that they come at the target rate, maps the trace's functions onto the
 * functions registered beforehand (lg-0 .. lg-(N-1)) and, at each arrival's scheduled time,
 * sends POST /v1/functions/{fn}/acquire over keep-alive connections; once answered it holds the
 * lease for the invocation's duration (from the trace, sped up by the same factor) and sends
 * POST /v1/leases/{id}/release, on connections of its own as prewarm-gateway does. Latency runs
 * from the scheduled send time, not from when a connection was free (no coordinated omission).
 * The same step is run against GET /livez, which does no work in prewarmd: that is the floor.
 * prewarmd's CPU time per step comes from /proc/<pid>/task/<tid>/schedstat (ns), or
 * /proc/<pid>/stat (ticks) without it. After an acquire step that left leases out (overload),
 * the generator releases them and waits until the pools are whole before the next step. */
#include <dirent.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "pw/error.h"
#include "pw/hclient.h"
#include "pw/log.h"
#include "pw/trace.h"
#include "pw/util.h"

#define TICK_MS 1
#define DRAIN_MS 15000

enum mode { MODE_FLOOR, MODE_ACQUIRE };
static const char *const mode_names[] = {"floor", "acquire"};

struct arrival {
    uint64_t at_ns; /* from the step's start */
    uint32_t fn;    /* registered function index */
    uint32_t hold_us;
};

struct pending_release {
    uint64_t due_ns;
    char lease_id[17];
    uint32_t hold_ms;
    int in_window;
};

struct result {
    enum mode mode;
    const char *label;
    double offered, achieved;
    double p50_us, p99_us, p999_us;
    double cpu_us_per_op;
    uint64_t sent, ok, errors, refused, releases_failed;
};

struct opts {
    char scheduler[128];
    int pid;
    char trace[512];
    int functions;
    int conns;
    double seconds;
    double max_hold_ms;
    int real_durations;
    int spread; /* arrival i goes to function i mod N instead of hash(trace function) mod N */
    double rates[16];
    int nrates;
    double max_offer;  /* the highest rate the saturation search offers; 0: no search */
    double max_start;  /* its first rate (0: the highest of rates) */
    double max_factor; /* rate growth per probe while probes pass */
    int max_refine;    /* probes between the last pass and the first failure */
    int only; /* -1: both modes; else only that mode */
    double recover_s; /* how long recover_pools may wait for the pools after a step */
    char json[512];
};

struct step {
    uv_loop_t *loop;
    struct pw_hclient *cl;  /* acquires (or floor requests) */
    struct pw_hclient *rcl; /* releases, on connections of their own as in prewarm-gateway */
    const struct opts *o;
    enum mode mode;
    struct arrival *arr;
    size_t narr, next;
    uint64_t t0, window_ns;
    uint64_t *lat;
    size_t nlat;
    struct pending_release *heap;
    size_t nheap, capheap;
    char (*lost)[17];     /* leases acquired but not released: their release failed or was */
    size_t nlost, caplost; /* never sent (recover_pools releases them after the step) */
    uint64_t outstanding; /* requests not yet answered */
    uint64_t sent, ok, errors, refused, releases_failed, in_window_done;
    uv_timer_t tick;
    int done;
};

struct req_ctx {
    struct step *s;
    uint64_t sched_ns;
    uint32_t hold_us;
    int release;
    int in_window;
    char lease_id[17]; /* a release's lease */
};

static void lost_add(struct step *s, const char *lease_id)
{
    if (s->nlost == s->caplost) {
        s->caplost = s->caplost ? s->caplost * 2 : 1024;
        s->lost = pw_xrealloc(s->lost, s->caplost * sizeof(*s->lost));
    }
    pw_strlcpy(s->lost[s->nlost++], lease_id, sizeof(s->lost[0]));
}

/* ---- a binary heap of releases by due time ---- */

static void heap_push(struct step *s, const struct pending_release *r)
{
    if (s->nheap == s->capheap) {
        s->capheap = s->capheap ? s->capheap * 2 : 1024;
        s->heap = pw_xrealloc(s->heap, s->capheap * sizeof(*s->heap));
    }
    size_t i = s->nheap++;
    while (i > 0 && s->heap[(i - 1) / 2].due_ns > r->due_ns) {
        s->heap[i] = s->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    s->heap[i] = *r;
}

static struct pending_release heap_pop(struct step *s)
{
    struct pending_release top = s->heap[0], last = s->heap[--s->nheap];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= s->nheap)
            break;
        if (c + 1 < s->nheap && s->heap[c + 1].due_ns < s->heap[c].due_ns)
            c++;
        if (s->heap[c].due_ns >= last.due_ns)
            break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (s->nheap > 0)
        s->heap[i] = last;
    return top;
}

/* ---- requests ---- */

static void on_answer(void *arg, int err, const struct pw_hresp *resp);

static void send_release(struct step *s, const struct pending_release *r)
{
    struct req_ctx *c = pw_xcalloc(1, sizeof(*c));
    c->s = s;
    c->release = 1;
    c->in_window = r->in_window;
    pw_strlcpy(c->lease_id, r->lease_id, sizeof(c->lease_id));
    char path[64], body[80];
    snprintf(path, sizeof(path), "/v1/leases/%s/release", r->lease_id);
    int n = snprintf(body, sizeof(body), "{\"duration_ms\":%u,\"outcome\":\"ok\"}", r->hold_ms);
    s->outstanding++;
    pw_hclient_request(s->rcl, "POST", path, "Content-Type: application/json\r\n", body, (size_t)n, 10000,
                       on_answer, c);
}

static void on_answer(void *arg, int err, const struct pw_hresp *resp)
{
    struct req_ctx *c = arg;
    struct step *s = c->s;
    uint64_t now = uv_hrtime();
    s->outstanding--;
    int ok = err == PW_OK && resp->status == 200;
    if (c->release) {
        if (!ok) {
            s->releases_failed++;
            /* Refused by the queue or timed out: the lease may still be out. A release of a
             * lease that did end just answers 404 in recover_pools. */
            lost_add(s, c->lease_id);
        } else if (c->in_window)
            s->in_window_done++;
        free(c);
        return;
    }
    if (err == PW_ERR_LIMIT)
        s->refused++;
    else if (!ok)
        s->errors++;
    if (ok) {
        s->ok++;
        s->lat[s->nlat++] = now - (s->t0 + c->sched_ns);
        int in_window = now <= s->t0 + s->window_ns;
        if (s->mode == MODE_FLOOR) {
            s->in_window_done += (uint64_t)in_window;
        } else {
            const char *p = resp->body_len > 0 ? strstr(resp->body, "\"lease_id\":\"") : NULL;
            if (p == NULL || strlen(p + 12) < 16) {
                s->errors++;
            } else {
                struct pending_release r = {.due_ns = now + (uint64_t)c->hold_us * 1000,
                                            .hold_ms = c->hold_us / 1000,
                                            .in_window = in_window};
                memcpy(r.lease_id, p + 12, 16);
                r.lease_id[16] = '\0';
                heap_push(s, &r);
            }
        }
    }
    free(c);
}

static void send_arrival(struct step *s, const struct arrival *a)
{
    static const char *acquire_body = "{\"timeout_ms\":5000}";
    struct req_ctx *c = pw_xcalloc(1, sizeof(*c));
    c->s = s;
    c->sched_ns = a->at_ns;
    c->hold_us = a->hold_us;
    s->sent++;
    s->outstanding++;
    if (s->mode == MODE_FLOOR) {
        pw_hclient_request(s->cl, "GET", "/livez", NULL, NULL, 0, 10000, on_answer, c);
        return;
    }
    char path[80];
    snprintf(path, sizeof(path), "/v1/functions/lg-%u/acquire", a->fn);
    pw_hclient_request(s->cl, "POST", path, "Content-Type: application/json\r\n", acquire_body,
                       strlen(acquire_body), 10000, on_answer, c);
}

static void on_tick(uv_timer_t *t)
{
    struct step *s = t->data;
    uint64_t now = uv_hrtime();
    while (s->next < s->narr && s->t0 + s->arr[s->next].at_ns <= now)
        send_arrival(s, &s->arr[s->next++]);
    while (s->nheap > 0 && s->heap[0].due_ns <= now) {
        struct pending_release r = heap_pop(s);
        send_release(s, &r);
    }
    int all_sent = s->next == s->narr;
    int drained = s->outstanding == 0 && s->nheap == 0;
    if ((all_sent && drained) || now > s->t0 + s->window_ns + (uint64_t)DRAIN_MS * 1000000) {
        if (!(all_sent && drained))
            fprintf(stderr, "step gave up draining: %" PRIu64 " requests unanswered, %zu releases pending\n",
                    s->outstanding, s->nheap);
        while (s->nheap > 0) {
            struct pending_release r = heap_pop(s);
            lost_add(s, r.lease_id);
        }
        s->done = 1;
        uv_timer_stop(&s->tick);
        /* Idle keep-alive connections would hold uv_run for the client's idle timeout. */
        uv_stop(s->loop);
    }
}

/* ---- the schedule from the trace ---- */

/* build_schedule takes the trace's first arrivals (uniform within their minute, deterministic),
 * n of them, and scales their times to span seconds. Returns the speed-up factor. */
static double build_schedule(const struct pw_trace *tr, const struct opts *o, size_t n, double seconds,
                             struct arrival *out)
{
    uint64_t rng = 42;
    size_t got = 0;
    struct {
        double t_s;
        uint32_t fi;
    } *tmp = NULL;
    size_t cap = 0;
    for (size_t m = 0; got < n; m = (m + 1) % tr->nminutes) {
        size_t start = got;
        for (size_t f = 0; f < tr->nfns; f++) {
            uint32_t cnt = tr->fns[f].minutes[m];
            for (uint32_t k = 0; k < cnt; k++) {
                if (got == cap) {
                    cap = cap ? cap * 2 : 65536;
                    tmp = pw_xrealloc(tmp, cap * sizeof(*tmp));
                }
                tmp[got].t_s = 60.0 * (double)m + 60.0 * pw_rng_unit(&rng);
                tmp[got].fi = (uint32_t)f;
                got++;
            }
        }
        size_t len = got - start;
        if (len > 1) {
            /* Order this minute's arrivals by time: a counting sort on 1 ms buckets. */
            size_t nb = 60000;
            size_t *cnt = pw_xcalloc(nb + 1, sizeof(size_t));
            for (size_t i = start; i < got; i++)
                cnt[(size_t)((tmp[i].t_s - 60.0 * (double)m) * 1000.0) + 1]++;
            for (size_t b = 1; b <= nb; b++)
                cnt[b] += cnt[b - 1];
            void *sorted = pw_xmalloc(len * sizeof(*tmp));
            for (size_t i = start; i < got; i++) {
                size_t b = (size_t)((tmp[i].t_s - 60.0 * (double)m) * 1000.0);
                memcpy((char *)sorted + cnt[b]++ * sizeof(*tmp), &tmp[i], sizeof(*tmp));
            }
            memcpy(&tmp[start], sorted, len * sizeof(*tmp));
            free(sorted);
            free(cnt);
        }
        if (m + 1 == tr->nminutes && got == 0)
            break; /* an empty trace */
    }
    double span = got >= n && n > 0 ? tmp[n - 1].t_s : 1.0;
    double speedup = span / seconds;
    if (speedup < 1e-9)
        speedup = 1e-9;
    for (size_t i = 0; i < n && i < got; i++) {
        const struct pw_trace_fn *f = &tr->fns[tmp[i].fi];
        double hold = pw_trace_draw_duration_ms(f, pw_rng_unit(&rng));
        if (!o->real_durations)
            hold /= speedup;
        hold = PW_MIN(hold, o->max_hold_ms);
        out[i].at_ns = (uint64_t)(tmp[i].t_s / speedup * 1e9);
        out[i].fn = (uint32_t)((o->spread ? (uint64_t)i : pw_hash_str(f->name)) % (uint64_t)o->functions);
        out[i].hold_us = (uint32_t)(hold * 1000.0);
    }
    free(tmp);
    return speedup;
}

/* ---- one step ---- */

/* read_cpu_ns reads the CPU time prewarmd's threads have used, in ns: the sum of the first
 * field of /proc/<pid>/task/<tid>/schedstat (exact), or utime+stime from /proc/<pid>/stat
 * (10 ms ticks) where schedstat is missing. */
static int read_cpu_ns(int pid, uint64_t *out)
{
    char path[64], buf[2048];
    snprintf(path, sizeof(path), "/proc/%d/task", pid);
    DIR *dir = opendir(path);
    if (dir != NULL) {
        uint64_t sum = 0;
        int n = 0;
        struct dirent *e;
        while ((e = readdir(dir)) != NULL) {
            if (e->d_name[0] < '0' || e->d_name[0] > '9')
                continue;
            char tp[320];
            snprintf(tp, sizeof(tp), "/proc/%d/task/%s/schedstat", pid, e->d_name);
            FILE *f = fopen(tp, "r");
            unsigned long long ns;
            if (f == NULL)
                continue;
            if (fscanf(f, "%llu", &ns) == 1) {
                sum += ns;
                n++;
            }
            fclose(f);
        }
        closedir(dir);
        if (n > 0) {
            *out = sum;
            return 0;
        }
    }
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');
    if (p == NULL)
        return -1;
    unsigned long long ut = 0, st = 0;
    /* Fields after the command: state(3) ... utime(14) stime(15). */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    *out = (ut + st) * (uint64_t)(1000000000 / sysconf(_SC_CLK_TCK));
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct_us(const uint64_t *v, size_t n, double q)
{
    if (n == 0)
        return NAN;
    size_t i = (size_t)ceil(q * (double)n);
    i = i == 0 ? 0 : i - 1;
    return (double)v[PW_MIN(i, n - 1)] / 1000.0;
}

/* ---- recovery after an overloaded step ---- */

/* A batch of requests run to completion: the loop runs until every answer is in. */
struct batch {
    size_t pending, ok, gone, failed;
    long leased, restoring; /* summed over pool answers */
};

static void on_batch_answer(void *arg, int err, const struct pw_hresp *resp)
{
    struct batch *b = arg;
    b->pending--;
    if (err != PW_OK || (resp->status != 200 && resp->status != 404)) {
        b->failed++;
        return;
    }
    if (resp->status == 404) {
        b->gone++;
        return;
    }
    b->ok++;
    const char *l = strstr(resp->body, "\"leased\":"), *r = strstr(resp->body, "\"restoring\":");
    if (l != NULL)
        b->leased += atol(l + 9);
    if (r != NULL)
        b->restoring += atol(r + 12);
}

static struct pw_hclient *batch_client(uv_loop_t *loop, const struct opts *o, const struct sockaddr *sa, size_t n)
{
    struct pw_hclient_opts co;
    pw_hclient_opts_default(&co);
    co.max_conns = (size_t)o->conns;
    co.max_queue = n + 16;
    co.max_body = 64 * 1024;
    struct pw_hclient *cl;
    pw_hclient_new(loop, sa, &co, &cl);
    return cl;
}

static void batch_run(uv_loop_t *loop, struct pw_hclient *cl, struct batch *b)
{
    while (b->pending > 0)
        uv_run(loop, UV_RUN_ONCE);
    pw_hclient_close(cl);
    uv_run(loop, UV_RUN_DEFAULT);
}

/* recover_pools puts the cluster back where a step found it, so that the next step (a probe of
 * the saturation search above all) is not measured against pools an overloaded step left
 * dry: it releases the leases the step could not release, then waits until no VM of the
 * lg-* functions is leased or restoring (leases whose acquire answer was lost end with their
 * TTL). Returns 0 once recovered, -1 if that took longer than o->recover_s. */
static int recover_pools(uv_loop_t *loop, const struct opts *o, const struct sockaddr *sa, const struct step *s)
{
    uint64_t t0 = uv_hrtime();
    struct batch b = {0};
    if (s->nlost > 0) {
        struct pw_hclient *cl = batch_client(loop, o, sa, s->nlost);
        static const char body[] = "{\"duration_ms\":0,\"outcome\":\"ok\"}";
        for (size_t i = 0; i < s->nlost; i++) {
            char path[64];
            snprintf(path, sizeof(path), "/v1/leases/%s/release", s->lost[i]);
            b.pending++;
            pw_hclient_request(cl, "POST", path, "Content-Type: application/json\r\n", body, sizeof(body) - 1,
                               10000, on_batch_answer, &b);
        }
        batch_run(loop, cl, &b);
    }
    for (;;) {
        struct batch p = {0};
        struct pw_hclient *cl = batch_client(loop, o, sa, (size_t)o->functions);
        for (int i = 0; i < o->functions; i++) {
            char path[64];
            snprintf(path, sizeof(path), "/v1/functions/lg-%d/pool", i);
            p.pending++;
            pw_hclient_request(cl, "GET", path, NULL, NULL, 0, 10000, on_batch_answer, &p);
        }
        batch_run(loop, cl, &p);
        double took = (double)(uv_hrtime() - t0) / 1e9;
        if (p.failed == 0 && p.gone == 0 && p.leased == 0 && p.restoring == 0) {
            fprintf(stderr, "  recovered in %.1f s: %zu leases released after the step (%zu had ended, %zu failed)\n",
                    took, b.ok, b.gone, b.failed);
            return 0;
        }
        if (took > o->recover_s) {
            fprintf(stderr, "  not recovered after %.0f s: %ld VMs leased, %ld restoring, %zu pool reads failed\n",
                    took, p.leased, p.restoring, p.failed + p.gone);
            return -1;
        }
        uv_sleep(200);
    }
}

static int run_step(uv_loop_t *loop, const struct opts *o, const struct sockaddr *sa, const struct pw_trace *tr,
                    enum mode mode, double rate, const char *label, struct result *res)
{
    struct step s = {.loop = loop, .o = o, .mode = mode};
    s.narr = (size_t)(rate * o->seconds);
    s.arr = pw_xcalloc(s.narr + 1, sizeof(*s.arr));
    double speedup = build_schedule(tr, o, s.narr, o->seconds, s.arr);
    s.lat = pw_xmalloc((s.narr + 1) * sizeof(uint64_t));
    struct pw_hclient_opts co;
    pw_hclient_opts_default(&co);
    co.max_conns = (size_t)o->conns;
    co.max_queue = (size_t)o->conns * 64;
    co.max_body = 64 * 1024;
    pw_hclient_new(loop, sa, &co, &s.cl);
    co.max_conns = PW_MAX(co.max_conns / 4, (size_t)4);
    pw_hclient_new(loop, sa, &co, &s.rcl);
    uv_timer_init(loop, &s.tick);
    s.tick.data = &s;
    s.window_ns = (uint64_t)(o->seconds * 1e9);
    uint64_t cpu0 = 0, cpu1 = 0;
    int cpu_ok = read_cpu_ns(o->pid, &cpu0) == 0;
    s.t0 = uv_hrtime() + 2000000;
    uv_timer_start(&s.tick, on_tick, 0, TICK_MS);
    uv_run(loop, UV_RUN_DEFAULT);
    /* uv_run returns when the tick stopped: connections may still be open. */
    cpu_ok = cpu_ok && read_cpu_ns(o->pid, &cpu1) == 0;
    qsort(s.lat, s.nlat, sizeof(uint64_t), cmp_u64);
    /* Per acquire+release pair, or per floor request. */
    uint64_t ops = mode == MODE_ACQUIRE ? s.ok - PW_MIN(s.ok, s.releases_failed) : s.ok;
    *res = (struct result){
        .mode = mode,
        .label = label,
        .offered = rate,
        .achieved = (double)s.in_window_done / o->seconds,
        .p50_us = pct_us(s.lat, s.nlat, 0.50),
        .p99_us = pct_us(s.lat, s.nlat, 0.99),
        .p999_us = pct_us(s.lat, s.nlat, 0.999),
        .cpu_us_per_op = cpu_ok && ops > 0 ? (double)(cpu1 - cpu0) / 1e3 / (double)ops : NAN,
        .sent = s.sent,
        .ok = s.ok,
        .errors = s.errors,
        .refused = s.refused,
        .releases_failed = s.releases_failed,
    };
    fprintf(stderr, "step %-7s %-8s offered %8.0f/s (trace x%.1f): sent %" PRIu64 " ok %" PRIu64 " err %" PRIu64
                    " refused %" PRIu64 " release-fail %" PRIu64 "\n",
            label, mode_names[mode], rate, speedup, s.sent, s.ok, s.errors, s.refused, s.releases_failed);
    pw_hclient_close(s.cl);
    pw_hclient_close(s.rcl);
    uv_close((uv_handle_t *)&s.tick, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    int rv = 0;
    if (mode == MODE_ACQUIRE && (s.nlost > 0 || s.errors > 0 || s.refused > 0))
        rv = recover_pools(loop, o, sa, &s);
    free(s.arr);
    free(s.lat);
    free(s.heap);
    free(s.lost);
    return rv;
}

/* ---- the saturation search ---- */

/* probe_ok: the rate was sustained — at least 99% of it achieved, no errors, nothing refused. */
static int probe_ok(const struct result *r)
{
    return r->errors == 0 && r->refused == 0 && r->achieved >= 0.99 * r->offered;
}

/* probe runs one step of the search. Returns 1 (passed), 0 (failed) or -1 (failed and the
 * pools did not recover: any later probe would measure the wreckage, so the search stops). */
static int probe(uv_loop_t *loop, const struct opts *o, const struct sockaddr *sa, const struct pw_trace *tr,
                 enum mode mode, double rate, struct result *r)
{
    int whole = run_step(loop, o, sa, tr, mode, rate, "max", r) == 0;
    int ok = probe_ok(r);
    fprintf(stderr, "  max %-7s probe %8.0f/s: achieved %8.0f/s, p99 %.0f us: %s\n", mode_names[mode], rate,
            r->achieved, r->p99_us, ok ? "pass" : "fail");
    return whole ? ok : -1;
}

/* search_max finds the highest rate the path sustains: it offers start and multiplies the rate
 * by max_factor while probes pass (up to max_offer), then bisects max_refine times between the
 * last pass and the first failure (geometric midpoints). *best is the highest passing probe, or
 * the first probe when none passed. */
static void search_max(uv_loop_t *loop, const struct opts *o, const struct sockaddr *sa, const struct pw_trace *tr,
                       enum mode mode, double start, struct result *best)
{
    struct result r;
    double lo = 0, hi = 0, rate = start;
    for (;;) {
        int ok = probe(loop, o, sa, tr, mode, rate, &r);
        if (ok > 0 || lo == 0)
            *best = r;
        if (ok < 0)
            return;
        if (!ok) {
            hi = rate;
            break;
        }
        lo = rate;
        if (rate >= o->max_offer)
            return; /* the cap held: the path sustains at least this much */
        rate = PW_MIN(rate * o->max_factor, o->max_offer);
    }
    if (lo == 0)
        return; /* the first rate already failed: reported as it was */
    for (int i = 0; i < o->max_refine; i++) {
        rate = sqrt(lo * hi);
        if (rate - lo < 0.01 * lo)
            break;
        uv_sleep(1000); /* let the server settle after the failed probe */
        int ok = probe(loop, o, sa, tr, mode, rate, &r);
        if (ok < 0)
            return;
        if (ok) {
            *best = r;
            lo = rate;
        } else {
            hi = rate;
        }
    }
}

/* ---- output ---- */

static void print_row(const struct result *r)
{
    printf("| %-7s | %-7s | %8.0f | %9.0f | %8.0f | %8.0f | %8.0f | %8.1f | %6" PRIu64 " |\n", r->label,
           mode_names[r->mode], r->offered, r->achieved, r->p50_us, r->p99_us, r->p999_us, r->cpu_us_per_op,
           r->errors + r->refused);
}

static void json_num(FILE *f, const char *k, double v, int last)
{
    if (isnan(v))
        fprintf(f, "\"%s\":null%s", k, last ? "" : ",");
    else
        fprintf(f, "\"%s\":%.1f%s", k, v, last ? "" : ",");
}

static void write_json(const struct opts *o, const struct result *rs, size_t n)
{
    FILE *f = fopen(o->json, "w");
    if (f == NULL) {
        perror(o->json);
        return;
    }
    fprintf(f, "{\"bench\":\"bench-gateway-load\",\"seconds_per_step\":%.1f,\"connections\":%d,\"functions\":%d,"
               "\"floor\":\"GET /livez\",\"steps\":[\n",
            o->seconds, o->conns, o->functions);
    for (size_t i = 0; i < n; i++) {
        const struct result *r = &rs[i];
        fprintf(f, "  {\"label\":\"%s\",\"mode\":\"%s\",", r->label, mode_names[r->mode]);
        json_num(f, "offered_per_s", r->offered, 0);
        json_num(f, "achieved_per_s", r->achieved, 0);
        json_num(f, "p50_us", r->p50_us, 0);
        json_num(f, "p99_us", r->p99_us, 0);
        json_num(f, "p999_us", r->p999_us, 0);
        json_num(f, "server_cpu_us_per_op", r->cpu_us_per_op, 0);
        fprintf(f, "\"sent\":%" PRIu64 ",\"ok\":%" PRIu64 ",\"errors\":%" PRIu64 ",\"refused\":%" PRIu64
                   ",\"releases_failed\":%" PRIu64 "}%s\n",
                r->sent, r->ok, r->errors, r->refused, r->releases_failed, i + 1 < n ? "," : "");
    }
    fprintf(f, "]}\n");
    fclose(f);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: bench-gateway-load --scheduler IP:PORT --pid PID [flags]\n"
               "  --trace DIR          Azure 2019 trace directory (default ../shared/data/azure2019)\n"
               "  --functions N        registered functions lg-0..lg-(N-1) (default 32)\n"
               "  --conns N            keep-alive connections (default 64)\n"
               "  --seconds S          length of each step (default 5)\n"
               "  --rates A,B,..       acquires/s per step (default 1000,5000,10000)\n"
               "  --max-offer R        the saturation search ('max' row) offers at most R/s (default\n"
               "                       400000; 0: no search)\n"
               "  --max-start R        its first offered rate (default: the highest of --rates)\n"
               "  --max-factor F       it multiplies the rate by F while probes pass (default 1.4)\n"
               "  --max-refine N       then bisects N times between the last pass and the first\n"
               "                       failure (default 2). A probe passes when it achieves >= 99%%\n"
               "                       of its offered rate with no errors and nothing refused; the\n"
               "                       'max' row is the highest passing probe, for each path\n"
               "  --only floor|acquire run one path only\n"
               "  --recover-s S        after an acquire step with errors or unreleased leases, release\n"
               "                       them and wait up to S s for the pools to be whole again before\n"
               "                       the next step (default 90; the search stops if they are not)\n"
               "  --max-hold-ms MS     cap on a lease's hold time (default 1000)\n"
               "  --real-durations     hold leases for the trace's durations unscaled\n"
               "  --spread             spread arrivals evenly over the functions (default: a trace\n"
               "                       function always maps to the same one, hot ones included)\n"
               "  --json FILE          write the results as JSON\n");
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        {"scheduler", required_argument, NULL, 's'}, {"pid", required_argument, NULL, 'p'},
        {"trace", required_argument, NULL, 't'},     {"functions", required_argument, NULL, 'f'},
        {"conns", required_argument, NULL, 'c'},     {"seconds", required_argument, NULL, 'S'},
        {"rates", required_argument, NULL, 'r'},     {"max-offer", required_argument, NULL, 'm'},
        {"max-start", required_argument, NULL, 'M'},   {"max-factor", required_argument, NULL, 'F'},
        {"max-refine", required_argument, NULL, 'B'},
        {"max-hold-ms", required_argument, NULL, 'H'}, {"real-durations", no_argument, NULL, 'R'},
        {"only", required_argument, NULL, 'O'},      {"recover-s", required_argument, NULL, 'W'},      {"json", required_argument, NULL, 'j'},      {"spread", no_argument, NULL, 'P'},      {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct opts o = {.functions = 32, .conns = 64, .seconds = 5, .max_hold_ms = 1000, .max_offer = 400000,
                     .max_factor = 1.4, .max_refine = 2, .only = -1, .recover_s = 90};
    pw_strlcpy(o.trace, "../shared/data/azure2019", sizeof(o.trace));
    o.rates[0] = 1000, o.rates[1] = 5000, o.rates[2] = 10000, o.nrates = 3;
    int ch;
    while ((ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (ch) {
        case 's': pw_strlcpy(o.scheduler, optarg, sizeof(o.scheduler)); break;
        case 'p': o.pid = atoi(optarg); break;
        case 't': pw_strlcpy(o.trace, optarg, sizeof(o.trace)); break;
        case 'f': o.functions = atoi(optarg); break;
        case 'c': o.conns = atoi(optarg); break;
        case 'S': o.seconds = atof(optarg); break;
        case 'm': o.max_offer = atof(optarg); break;
        case 'M': o.max_start = atof(optarg); break;
        case 'F': o.max_factor = atof(optarg); break;
        case 'B': o.max_refine = atoi(optarg); break;
        case 'H': o.max_hold_ms = atof(optarg); break;
        case 'R': o.real_durations = 1; break;
        case 'P': o.spread = 1; break;
        case 'W': o.recover_s = atof(optarg); break;
        case 'j': pw_strlcpy(o.json, optarg, sizeof(o.json)); break;
        case 'O': o.only = strcmp(optarg, "floor") == 0 ? MODE_FLOOR : strcmp(optarg, "acquire") == 0 ? MODE_ACQUIRE : -2; break;
        case 'r': {
            o.nrates = 0;
            char *save = NULL, *copy = pw_xstrdup(optarg);
            for (char *tok = strtok_r(copy, ",", &save); tok && o.nrates < 16; tok = strtok_r(NULL, ",", &save))
                o.rates[o.nrates++] = atof(tok);
            free(copy);
            break;
        }
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    struct sockaddr_storage sa;
    if (o.scheduler[0] == '\0' || o.pid <= 0 || o.functions <= 0 || o.conns <= 0 || o.seconds <= 0 ||
        pw_hclient_parse_addr(o.scheduler, &sa) != PW_OK) {
        usage(stderr);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    pw_log_set_level(PW_LOG_WARN);
    struct pw_trace tr;
    char err[512];
    if (pw_trace_load(o.trace, &tr, err, sizeof(err)) != PW_OK) {
        fprintf(stderr, "bench-gateway-load: %s\n", err);
        return 1;
    }
    uv_loop_t *loop = uv_default_loop();
    struct result rs[40];
    if (o.max_factor <= 1.0 || o.max_refine < 0) {
        usage(stderr);
        return 2;
    }
    size_t n = 0;
    printf("| step    | path    | offered/s | achieved/s | p50 µs | p99 µs | p99.9 µs | server CPU µs/op | errors |\n");
    printf("|---|---|---|---|---|---|---|---|---|\n");
    for (int i = 0; i < o.nrates; i++) {
        static char labels[16][16];
        snprintf(labels[i], sizeof(labels[i]), "%.0fk", o.rates[i] / 1000.0);
        for (int m = MODE_FLOOR; m <= MODE_ACQUIRE; m++) {
            if (o.only >= 0 && m != o.only)
                continue;
            run_step(loop, &o, (const struct sockaddr *)&sa, &tr, (enum mode)m, o.rates[i], labels[i], &rs[n]);
            print_row(&rs[n]);
            fflush(stdout);
            n++;
        }
    }
    if (o.max_offer > 0) {
        double start = o.max_start;
        for (int i = 0; o.max_start <= 0 && i < o.nrates; i++)
            start = PW_MAX(start, o.rates[i]);
        if (start <= 0)
            start = 1000;
        start = PW_MIN(start, o.max_offer);
        for (int m = MODE_FLOOR; m <= MODE_ACQUIRE; m++) {
            if (o.only >= 0 && m != o.only)
                continue;
            search_max(loop, &o, (const struct sockaddr *)&sa, &tr, (enum mode)m, start, &rs[n]);
            print_row(&rs[n]);
            fflush(stdout);
            n++;
        }
    }
    if (o.json[0])
        write_json(&o, rs, n);
    pw_trace_free(&tr);
    uv_loop_close(loop);
    return 0;
}
