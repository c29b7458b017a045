/* metrics.c — renders prewarmd's /metrics from the daemon's counters, the core's views, the
 * store, the predictor and the link; see metrics.h and docs/metrics.md. */
#include "metrics.h"

#include "daemon.h"
#include "predict.h"

#include "pw/error.h"
#include "pw/prom.h"

#include <stdlib.h>
#include <string.h>

#ifndef PW_VERSION_STRING
#define PW_VERSION_STRING "0.1.0"
#endif

#define OTHER "other"

/* One function's pool, as ranked for the top-N. */
struct pool_row {
    char name[PW_NAME_MAX];
    uint64_t acquires;
    uint64_t size, target_idle, idle, leased, restoring, waiters;
};

struct pool_rows {
    struct pool_row *rows;
    size_t n, cap;
};

static void collect_fn(void *arg, const struct pw_function_spec *f)
{
    struct pool_rows *pr = arg;
    if (pr->n == pr->cap) {
        pr->cap = pr->cap ? pr->cap * 2 : 64;
        pr->rows = pw_xrealloc(pr->rows, pr->cap * sizeof(*pr->rows));
    }
    memset(&pr->rows[pr->n], 0, sizeof(pr->rows[pr->n]));
    pw_strlcpy(pr->rows[pr->n].name, f->name, sizeof(pr->rows[pr->n].name));
    pr->n++;
}

/* by_acquires ranks busier pools first; ties by name so the set is stable. A function that is
 * itself named "other" always goes to the aggregate, so no series is written twice. */
static int by_acquires(const void *pa, const void *pb)
{
    const struct pool_row *a = pa, *b = pb;
    int ao = strcmp(a->name, OTHER) == 0, bo = strcmp(b->name, OTHER) == 0;
    if (ao != bo)
        return ao - bo;
    if (a->acquires != b->acquires)
        return a->acquires > b->acquires ? -1 : 1;
    return strcmp(a->name, b->name);
}

static void render_pools(struct pw_daemon *d, struct pw_prom *w)
{
    struct pool_rows pr = {0};
    pw_core_function_each(d->core, collect_fn, &pr);
    for (size_t i = 0; i < pr.n; i++) {
        struct pw_pool_view v;
        if (pw_core_pool_view(d->core, pr.rows[i].name, &v) != PW_OK)
            continue;
        struct pool_row *r = &pr.rows[i];
        r->acquires = v.acquires;
        r->restoring = v.restoring;
        r->idle = v.idle;
        r->leased = v.leased;
        r->size = (uint64_t)v.restoring + v.idle + v.leased;
        r->target_idle = v.target_idle;
        r->waiters = v.waiters;
    }
    if (pr.n > 0)
        qsort(pr.rows, pr.n, sizeof(*pr.rows), by_acquires);
    size_t top = PW_MIN(d->metrics_top_n, (size_t)PW_METRICS_MAX_TOP_FUNCTIONS);
    size_t named = 0;
    while (named < pr.n && named < top && strcmp(pr.rows[named].name, OTHER) != 0)
        named++;
    struct pool_row other = {.name = OTHER};
    for (size_t i = named; i < pr.n; i++) {
        other.acquires += pr.rows[i].acquires;
        other.size += pr.rows[i].size;
        other.target_idle += pr.rows[i].target_idle;
        other.idle += pr.rows[i].idle;
        other.leased += pr.rows[i].leased;
        other.restoring += pr.rows[i].restoring;
        other.waiters += pr.rows[i].waiters;
    }
    int with_other = named < pr.n;
    static const struct {
        const char *name, *help;
        size_t off;
    } fams[] = {
        {"prewarm_pool_size", "VMs in the pool (restoring, idle and leased), per function.",
         offsetof(struct pool_row, size)},
        {"prewarm_pool_target_idle", "Idle VMs the pool aims for now, per function.",
         offsetof(struct pool_row, target_idle)},
        {"prewarm_pool_idle", "Idle VMs ready for an acquire, per function.", offsetof(struct pool_row, idle)},
        {"prewarm_pool_leased", "VMs serving an invocation, per function.", offsetof(struct pool_row, leased)},
        {"prewarm_pool_restoring", "VMs being restored, per function.", offsetof(struct pool_row, restoring)},
        {"prewarm_pool_waiters", "Acquires waiting for a VM, per function.", offsetof(struct pool_row, waiters)},
    };
    for (size_t f = 0; f < PW_ARRAY_LEN(fams); f++) {
        pw_prom_family(w, fams[f].name, PW_PROM_GAUGE, fams[f].help);
        for (size_t i = 0; i <= named; i++) {
            const struct pool_row *r = i < named ? &pr.rows[i] : &other;
            if (i == named && !with_other)
                break;
            struct pw_prom_label l = {"function", r->name};
            pw_prom_sample_u64(w, fams[f].name, &l, 1, *(const uint64_t *)(const void *)((const char *)r + fams[f].off));
        }
    }
    free(pr.rows);
}

struct agents_ctx {
    struct pw_prom *w;
    size_t n;
    size_t cordoned; /* hosts cordoned now (probation included) */
};

static void agent_up(void *arg, const struct pw_host_view *h)
{
    struct agents_ctx *c = arg;
    c->cordoned += h->cordoned != 0;
    if (c->n++ >= PW_METRICS_MAX_AGENTS)
        return;
    struct pw_prom_label l[] = {{"agent", h->id}, {"driver", h->driver}};
    pw_prom_sample_u64(c->w, "prewarm_agent_up", l, 2, h->state == PW_HOST_ALIVE);
}

static void counter(struct pw_prom *w, const char *name, const char *help, uint64_t v)
{
    pw_prom_family(w, name, PW_PROM_COUNTER, help);
    pw_prom_sample_u64(w, name, NULL, 0, v);
}

static void gauge(struct pw_prom *w, const char *name, const char *help, double v)
{
    pw_prom_family(w, name, PW_PROM_GAUGE, help);
    pw_prom_sample(w, name, NULL, 0, v);
}

/* process_metrics: leadership, the store's fencing and the build, which a follower has too. */
static void process_metrics(struct pw_daemon *d, struct pw_prom *w)
{
    struct pw_leader_status ls;
    pw_leader_status(d->leader, &ls);
    gauge(w, "prewarm_leader", "1 while this replica is the elected leader and may act.", ls.may_act ? 1.0 : 0.0);
    gauge(w, "prewarm_leader_epoch", "Fencing epoch of this scheduler (0 while a follower).", (double)d->epoch);
    counter(w, "prewarm_leader_takeovers_total", "Sessions of silent leaders this replica ended to take over.",
            ls.takeovers);
    struct pw_store_stats st;
    pw_store_stats(d->store, &st);
    counter(w, "prewarm_store_fenced_total", "Store writes refused because another epoch leads.", st.fenced);
    gauge(w, "prewarm_start_time_seconds", "Start time of prewarmd, Unix seconds.", (double)d->started_wall_ms / 1000.0);
    pw_prom_family(w, "prewarm_build_info", PW_PROM_GAUGE, "Build information.");
    struct pw_prom_label bl = {"version", PW_VERSION_STRING};
    pw_prom_sample_u64(w, "prewarm_build_info", &bl, 1, 1);
}

int pw_metrics_render(struct pw_daemon *d, struct pw_buf *b)
{
    struct pw_prom w;
    pw_prom_init(&w, b);
    if (!d->leading) {
        /* A follower has no core, pools or agents: only what it is. */
        process_metrics(d, &w);
        return pw_prom_err(&w);
    }
    const uint64_t *m = d->metrics;

    /* Acquires. */
    static const char *results[] = {"warm", "cold", "timeout"};
    uint64_t by[] = {m[PW_METRIC_ACQUIRE_WARM], m[PW_METRIC_ACQUIRE_COLD], m[PW_METRIC_ACQUIRE_TIMEOUT]};
    pw_prom_family(&w, "prewarm_acquires_total", PW_PROM_COUNTER, "Acquire requests answered, by result.");
    for (size_t i = 0; i < 3; i++) {
        struct pw_prom_label l = {"result", results[i]};
        pw_prom_sample_u64(&w, "prewarm_acquires_total", &l, 1, by[i]);
    }
    pw_prom_family(&w, "prewarm_acquire_duration_seconds", PW_PROM_HISTOGRAM,
                   "Time from an acquire to its answer, by result.");
    for (size_t i = 0; i < 3; i++) {
        struct pw_prom_label l = {"result", results[i]};
        pw_prom_hist_write(&w, "prewarm_acquire_duration_seconds", &l, 1, &d->acquire_hist[i]);
    }
    /* Indices as in daemon.h (not found, limit, ...); api.c counts acquires in the first two. */
    static const char *reasons[] = {"not_found", "limit"};
    pw_prom_family(&w, "prewarm_acquire_errors_total", PW_PROM_COUNTER, "Acquire requests refused, by reason.");
    for (size_t i = 0; i < PW_ARRAY_LEN(reasons); i++) {
        struct pw_prom_label l = {"reason", reasons[i]};
        pw_prom_sample_u64(&w, "prewarm_acquire_errors_total", &l, 1, d->acquire_errors[i]);
    }
    /* Indices as enum pw_auth_fail (auth.h). */
    static const char *auth_reasons[PW_AUTH_FAIL__COUNT] = {"missing", "invalid", "forbidden"};
    pw_prom_family(&w, "prewarm_http_auth_failures_total", PW_PROM_COUNTER,
                   "API requests refused: no bearer token, an unknown one, or a role too low.");
    for (size_t i = 0; i < PW_AUTH_FAIL__COUNT; i++) {
        struct pw_prom_label l = {"reason", auth_reasons[i]};
        pw_prom_sample_u64(&w, "prewarm_http_auth_failures_total", &l, 1, d->auth_failures[i]);
    }
    pw_prom_family(&w, "prewarm_cold_starts_total", PW_PROM_COUNTER,
                   "Cold starts, by reason: no_idle_vm (a restore placed for a waiting acquire), no_capacity "
                   "(a placement for a waiting acquire found no room).");
    struct pw_prom_label cl[] = {{"reason", "no_idle_vm"}, {"reason", "no_capacity"}};
    pw_prom_sample_u64(&w, "prewarm_cold_starts_total", &cl[0], 1, m[PW_METRIC_COLD_START]);
    pw_prom_sample_u64(&w, "prewarm_cold_starts_total", &cl[1], 1, d->cold_no_capacity);

    /* Restores, VMs, placement. */
    counter(&w, "prewarm_restores_total", "Restores completed.", m[PW_METRIC_RESTORE_DONE]);
    pw_prom_family(&w, "prewarm_restore_duration_seconds", PW_PROM_HISTOGRAM,
                   "Restore time of completed restores, as measured by the agent.");
    pw_prom_hist_write(&w, "prewarm_restore_duration_seconds", NULL, 0, &d->restore_hist);
    counter(&w, "prewarm_restore_failures_total", "Restores that failed.", m[PW_METRIC_RESTORE_FAILED]);
    counter(&w, "prewarm_lease_expirations_total", "Leases reclaimed at their TTL.", m[PW_METRIC_LEASE_EXPIRED]);
    counter(&w, "prewarm_vm_keepalive_expirations_total", "Idle VMs destroyed by keep-alive.",
            m[PW_METRIC_VM_EXPIRED]);
    counter(&w, "prewarm_vms_lost_total", "VMs that disappeared without being asked to.", m[PW_METRIC_VM_LOST]);
    counter(&w, "prewarm_vms_moved_total", "Idle VMs on draining hosts replaced elsewhere.", m[PW_METRIC_VM_MOVED]);
    counter(&w, "prewarm_placement_no_capacity_total", "Placements that found no room.", m[PW_METRIC_NO_CAPACITY]);
    pw_prom_family(&w, "prewarm_placement_duration_seconds", PW_PROM_HISTOGRAM,
                   "Duration of loop steps (API request, agent message, tick) in which the core placed at least one VM.");
    pw_prom_hist_write(&w, "prewarm_placement_duration_seconds", NULL, 0, &d->placement_hist);

    /* The core's state. */
    struct pw_core_stats cs;
    pw_core_stats(d->core, &cs);
    pw_prom_family(&w, "prewarm_agents", PW_PROM_GAUGE, "Agents known, by state.");
    struct pw_prom_label al[] = {{"state", "alive"}, {"state", "dead"}};
    pw_prom_sample_u64(&w, "prewarm_agents", &al[0], 1, cs.hosts_alive);
    pw_prom_sample_u64(&w, "prewarm_agents", &al[1], 1, cs.hosts_dead);
    pw_prom_family(&w, "prewarm_agent_up", PW_PROM_GAUGE,
                   "1 while an agent reports, 0 once it is declared dead (first 256 agents).");
    struct agents_ctx ac = {.w = &w};
    pw_core_host_each(d->core, agent_up, &ac);
    counter(&w, "prewarm_agent_deaths_total", "Agents declared dead.", m[PW_METRIC_AGENT_DEAD]);
    gauge(&w, "prewarm_hosts_cordoned", "Hosts cordoned by self-healing now (on probation included).",
          (double)ac.cordoned);
    pw_prom_family(&w, "prewarm_host_cordons_total", PW_PROM_COUNTER,
                   "Hosts cordoned by self-healing: restores failing, or slow, against the fleet's own.");
    struct pw_prom_label cr[] = {{"reason", "restore_failures"}, {"reason", "restore_slow"}};
    pw_prom_sample_u64(&w, "prewarm_host_cordons_total", &cr[0], 1, d->cordons[0]);
    pw_prom_sample_u64(&w, "prewarm_host_cordons_total", &cr[1], 1, d->cordons[1]);
    counter(&w, "prewarm_host_uncordons_total", "Cordoned hosts healthy again after probation.",
            m[PW_METRIC_HOST_UNCORDONED]);
    counter(&w, "prewarm_agent_protocol_errors_total", "Agent reports that did not fit the scheduler's state.",
            m[PW_METRIC_AGENT_PROTO_ERROR]);
    gauge(&w, "prewarm_functions", "Functions registered.", (double)cs.functions);
    gauge(&w, "prewarm_vms", "VMs the scheduler tracks.", (double)cs.vms);
    gauge(&w, "prewarm_leases", "Leases outstanding.", (double)cs.leases);
    gauge(&w, "prewarm_acquires_waiting", "Acquires parked for a restore.", (double)cs.waiters);
    gauge(&w, "prewarm_adoption_grace", "1 while VMs of agents that were alive before the start are adopted.",
          cs.in_grace);
    render_pools(d, &w);

    /* The predictor. */
    struct pw_predict_error pe;
    pw_predict_error_stats(d->predict, &pe);
    counter(&w, "prewarm_forecast_evaluations_total", "Closed minutes compared with their forecast.", pe.minutes);
    counter(&w, "prewarm_forecast_function_evaluations_total", "(function, minute) pairs compared with their forecast.",
            pe.function_minutes);
    pw_prom_family(&w, "prewarm_forecast_absolute_error_total", PW_PROM_COUNTER,
                   "Sum over compared (function, minute) pairs of |forecast - actual| invocations.");
    pw_prom_sample(&w, "prewarm_forecast_absolute_error_total", NULL, 0, pe.abs_error_sum);
    pw_prom_family(&w, "prewarm_forecast_actual_invocations_total", PW_PROM_COUNTER,
                   "Invocations counted in the compared (function, minute) pairs.");
    pw_prom_sample(&w, "prewarm_forecast_actual_invocations_total", NULL, 0, pe.actual_sum);
    gauge(&w, "prewarm_forecast_error_ratio",
          "Latest compared minute: sum of |forecast - actual| over sum of actual invocations.",
          pe.last_minute_ratio);
    uint64_t retrains = 0;
    const char *model = pw_predict_model_name(d->predict, &retrains);
    pw_prom_family(&w, "prewarm_model_info", PW_PROM_GAUGE,
                   "The forecast model in use: its file, or source heuristic when none loaded.");
    struct pw_prom_label ml[] = {{"model", model}, {"source", model[0] ? "model" : "heuristic"}};
    pw_prom_sample_u64(&w, "prewarm_model_info", ml, 2, 1);
    counter(&w, "prewarm_model_retrains_total", "Retrained models swapped in.", retrains);

    /* The store. */
    struct pw_store_stats st;
    pw_store_stats(d->store, &st);
    gauge(&w, "prewarm_store_up", "Whether the last store connection attempt succeeded.", st.connected);
    gauge(&w, "prewarm_store_queue_depth", "Config writes waiting for the store.", (double)st.queue_depth);
    gauge(&w, "prewarm_store_buffered_rows", "Telemetry rows waiting to be written.", (double)st.buffered_rows);
    counter(&w, "prewarm_store_dropped_rows_total", "Telemetry rows dropped at the buffer bound.", st.dropped_rows);
    counter(&w, "prewarm_store_errors_total", "Failed store statements.", st.errors);
    counter(&w, "prewarm_store_flushed_rows_total", "Telemetry rows written.", st.flushed_rows);

    /* HTTP and the agent link. */
    struct pw_http_stats hs;
    pw_http_server_stats(d->http, &hs);
    gauge(&w, "prewarm_http_connections", "Open HTTP connections.", (double)hs.connections);
    counter(&w, "prewarm_http_requests_total", "HTTP requests handled.", hs.requests);
    counter(&w, "prewarm_http_rejected_total", "HTTP requests refused by the server (parse, size, limits).",
            hs.rejected);
    struct pw_agentlink_stats as;
    pw_agentlink_stats(d->link, &as);
    /* Every limit that refuses work, in one family: limit="..." says which (docs/metrics.md). */
    pw_prom_family(&w, "prewarm_limit_refusals_total", PW_PROM_COUNTER,
                   "Work refused at a limit: http_malformed (not HTTP), http_headers (16 KiB, 64 headers), "
                   "http_body (--max-body-bytes), http_connections (--max-connections), agents (--max-agents), "
                   "functions (--max-functions), waiters (--max-waiters per function).");
    {
        const struct {
            const char *name;
            uint64_t v;
        } lim[] = {
            {"http_malformed", hs.rejected_by[PW_HTTP_REJECT_MALFORMED]},
            {"http_headers", hs.rejected_by[PW_HTTP_REJECT_HEADERS]},
            {"http_body", hs.rejected_by[PW_HTTP_REJECT_BODY]},
            {"http_connections", hs.rejected_by[PW_HTTP_REJECT_CONNECTIONS]},
            {"agents", as.busy},
            {"functions", d->functions_refused},
            {"waiters", d->acquire_errors[1]},
        };
        for (size_t i = 0; i < PW_ARRAY_LEN(lim); i++) {
            struct pw_prom_label l = {"limit", lim[i].name};
            pw_prom_sample_u64(&w, "prewarm_limit_refusals_total", &l, 1, lim[i].v);
        }
    }
    counter(&w, "prewarm_agent_messages_total", "Agent messages received.", as.received);
    counter(&w, "prewarm_agent_messages_malformed_total", "Agent messages rejected as malformed.", as.malformed);
    counter(&w, "prewarm_agent_messages_unauthenticated_total",
            "TLS agent link: hellos without a valid certificate proof, reports off their connection's agent.",
            as.unauthenticated);
    gauge(&w, "prewarm_agent_polls_held", "Agent long polls held now.", (double)as.held);
    counter(&w, "prewarm_agent_wakeups_total", "Held agent polls answered early with commands.", d->wakeups);

    process_metrics(d, &w);
    return pw_prom_err(&w);
}
