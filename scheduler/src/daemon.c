/* daemon.c — prewarmd's loop: startup, the agent long poll, action execution, the tick. */
#include "daemon.h"

#include "predict.h"
#include "tlsfront.h"

#include "pw/error.h"
#include "pw/log.h"

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TICK_MS 100

static int held_eq(const struct pw_hnode *n, const void *key)
{
    return strcmp(pw_container_of(n, struct held_poll, hnode)->agent_id, key) == 0;
}

int64_t pw_daemon_now(const struct pw_daemon *d)
{
    return (int64_t)uv_now(d->loop);
}

static struct held_poll *held_find(struct pw_daemon *d, const char *agent_id)
{
    struct pw_hnode *n = pw_htab_find(&d->held, pw_hash_str(agent_id), agent_id, held_eq);
    return n ? pw_container_of(n, struct held_poll, hnode) : NULL;
}

static void on_held_timer(uv_timer_t *t);

/* answer_held replies to an agent's held long poll with whatever the core has for it now. */
static void answer_held(struct pw_daemon *d, struct held_poll *hp)
{
    struct pw_msg reply;
    if (pw_core_agent_reply(d->core, hp->agent_id, &reply) != PW_OK) {
        pw_msg_init(&reply, PW_MSG_ERROR);
        pw_strlcpy(reply.u.error.code, "rehello", sizeof(reply.u.error.code));
        pw_strlcpy(reply.u.error.message, "unknown agent session: send hello", sizeof(reply.u.error.message));
    }
    pw_agentlink_reply(hp->req, &reply);
    pw_msg_fini(&reply);
    pw_htab_remove(&d->held, &hp->hnode);
    pw_list_remove(&hp->qlink);
    free(hp);
}

/* Held polls due within this much after now are answered together, a little early: one
 * wakeup for every agent due in the window instead of one per agent (at 1,000 agents a 1 ms
 * timer per agent raised prewarmd's CPU per message by half). */
#define HELD_SLACK_MS 10

/* answer_due answers the held polls whose heartbeat has passed (or passes within
 * HELD_SLACK_MS) and arms held_timer for the next one. Before, they waited for the 100 ms
 * tick: every agent's period became heartbeat + up to 100 ms (1.1 s at a 1 s heartbeat), and
 * agents answered by the same tick reported, were held and were answered together again. */
static void answer_due(struct pw_daemon *d, int64_t now)
{
    struct pw_list *e;
    while ((e = pw_list_head(&d->held_q)) != NULL) {
        struct held_poll *hp = pw_container_of(e, struct held_poll, qlink);
        if (hp->until > now + HELD_SLACK_MS) {
            uv_timer_start(&d->held_timer, on_held_timer, (uint64_t)(hp->until - now), 0);
            return;
        }
        answer_held(d, hp);
    }
}

static void on_held_timer(uv_timer_t *t)
{
    struct pw_daemon *d = t->data;
    if (!pw_leader_may_act(d->leader)) {
        /* As the tick: nothing is answered until leadership is confirmed again. */
        uv_timer_start(&d->held_timer, on_held_timer, TICK_MS, 0);
        return;
    }
    answer_due(d, pw_daemon_now(d));
}

/* ---- actions ---- */

static void wake_agent(struct pw_daemon *d, const char *host)
{
    struct held_poll *hp = held_find(d, host);
    if (hp != NULL && pw_core_agent_has_cmds(d->core, host)) {
        d->wakeups++;
        answer_held(d, hp);
    }
}

void pw_daemon_metrics_init(struct pw_daemon *d)
{
    for (size_t i = 0; i < PW_ARRAY_LEN(d->acquire_hist); i++)
        pw_prom_hist_init(&d->acquire_hist[i], pw_prom_latency_bounds, pw_prom_latency_nbounds);
    pw_prom_hist_init(&d->restore_hist, pw_prom_latency_bounds, pw_prom_latency_nbounds);
    static const double place_bounds[] = {0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001,
                                          0.0025,  0.005,    0.01,    0.025,  0.05,    0.1,    0.25, 1};
    pw_prom_hist_init(&d->placement_hist, place_bounds, PW_ARRAY_LEN(place_bounds));
    d->metrics_top_n = 20;
    const char *env = getenv("PREWARM_METRICS_TOP_FUNCTIONS");
    if (env != NULL && env[0] != '\0') {
        char *end;
        unsigned long n = strtoul(env, &end, 10);
        if (*end == '\0' && n <= 1000)
            d->metrics_top_n = (size_t)n;
        else
            pw_log_warn("prewarmd", "PREWARM_METRICS_TOP_FUNCTIONS=%s is not 0..1000; using 20", env);
    }
}

/* observe_metric folds a metric action's value into the histograms /metrics shows. */
static void observe_metric(struct pw_daemon *d, const struct pw_action *a)
{
    double v = a->u.metric.value;
    switch (a->u.metric.id) {
    case PW_METRIC_HOST_CORDONED:
        /* Self-healing (core health.c): the reason rides in the function field. */
        d->cordons[strcmp(a->function, "restore_slow") == 0 ? 1 : 0]++;
        pw_log_warn("health", "host %s cordoned: %s (%s %.0f) against the fleet; its pools are refilled elsewhere",
                    a->host, a->function, strcmp(a->function, "restore_slow") == 0 ? "median restore ms" : "failures in a row",
                    v);
        break;
    case PW_METRIC_HOST_UNCORDONED:
        pw_log_info("health", "host %s uncordoned: healthy again on probation after %.0f ms", a->host, v);
        break;
    case PW_METRIC_ACQUIRE_WARM:
        pw_prom_hist_observe(&d->acquire_hist[0], v / 1000.0);
        break;
    case PW_METRIC_ACQUIRE_COLD:
        pw_prom_hist_observe(&d->acquire_hist[1], v / 1000.0);
        break;
    case PW_METRIC_ACQUIRE_TIMEOUT:
        pw_prom_hist_observe(&d->acquire_hist[2], v / 1000.0);
        break;
    case PW_METRIC_RESTORE_DONE:
        pw_prom_hist_observe(&d->restore_hist, v / 1000.0);
        break;
    case PW_METRIC_NO_CAPACITY: {
        /* A placement that found no room while an acquire of the function waits for a VM. */
        if (a->function[0] != '\0' && pw_core_pool_waiters(d->core, a->function) > 0)
            d->cold_no_capacity += a->u.metric.count;
        break;
    }
    default:
        break;
    }
}

/* placement_observe records how long a loop step took (since t0_ns, its actions executed)
 * when it placed at least one VM: the core is pure and has no clock, so the shell times the
 * steps that can place (HTTP requests, agent messages, the tick). */
static void placement_observe(struct pw_daemon *d, uint64_t t0_ns, uint64_t cmds_before)
{
    if (d->prewarm_cmds > cmds_before)
        pw_prom_hist_observe(&d->placement_hist, (double)(uv_hrtime() - t0_ns) / 1e9);
}

/* on_http times each API request for the placement histogram around api.c's handler. */
static void on_http(void *arg, struct pw_http_req *req)
{
    struct pw_daemon *d = arg;
    uint64_t cmds0 = d->prewarm_cmds, t0 = uv_hrtime();
    pw_api_handle(d, req);
    placement_observe(d, t0, cmds0);
}

void pw_daemon_drain(struct pw_daemon *d)
{
    struct pw_action a;
    /* Agents to wake, deduplicated: one reply carries every queued command. */
    char wake[64][PW_NAME_MAX];
    size_t nwake = 0;
    int wake_overflow = 0;
    while (pw_core_next_action(d->core, &a)) {
        switch (a.type) {
        case PW_ACT_AGENT_CMD: {
            int dup = 0;
            for (size_t i = 0; i < nwake; i++)
                dup |= strcmp(wake[i], a.host) == 0;
            if (!dup) {
                if (nwake < PW_ARRAY_LEN(wake))
                    pw_strlcpy(wake[nwake++], a.host, PW_NAME_MAX);
                else
                    wake_overflow = 1;
            }
            if (a.u.cmd.type == PW_CMD_PREWARM)
                d->prewarm_cmds++;
            pw_log_debug("core", "command %s vm %016" PRIx64 " -> %s", pw_cmd_type_str(a.u.cmd.type), a.u.cmd.vm_id,
                         a.host);
            break;
        }
        case PW_ACT_ACQUIRE_ANSWER:
            pw_api_answer(d, &a);
            break;
        case PW_ACT_STORE_HOST:
            pw_store_put_host(d->store, a.host, a.u.host.alive, pw_now_wall_ms());
            pw_log_info("core", "agent %s is %s", a.host, a.u.host.alive ? "alive" : "dead");
            break;
        case PW_ACT_STORE_INVOCATION:
            pw_store_add_invocations(d->store, a.function, pw_now_wall_ms() / 60000, 1);
            pw_predict_invocation(d->predict, a.function);
            break;
        case PW_ACT_METRIC:
            d->metrics[a.u.metric.id] += a.u.metric.count;
            observe_metric(d, &a);
            break;
        default:
            break;
        }
    }
    for (size_t i = 0; i < nwake; i++)
        wake_agent(d, wake[i]);
    if (wake_overflow) {
        /* Many agents at once: check every held poll. */
        size_t b = 0;
        struct pw_hnode *n = NULL, *e;
        while ((e = pw_htab_next(&d->held, &b, &n)) != NULL) {
            struct held_poll *hp = pw_container_of(e, struct held_poll, hnode);
            if (pw_core_agent_has_cmds(d->core, hp->agent_id))
                answer_held(d, hp);
        }
    }
}

/* ---- agent messages ---- */

static void on_agent_msg(void *arg, struct pw_agentlink_req *req, const struct pw_msg *msg)
{
    struct pw_daemon *d = arg;
    if (!pw_leader_may_act(d->leader)) {
        /* Deposed, or leadership not confirmed lately: no reply that could carry commands. */
        struct pw_msg e;
        pw_msg_init(&e, PW_MSG_ERROR);
        pw_strlcpy(e.u.error.code, "not_leader", sizeof(e.u.error.code));
        pw_strlcpy(e.u.error.message, "this scheduler is not the leader now", sizeof(e.u.error.message));
        pw_agentlink_reply(req, &e);
        return;
    }
    int64_t now = pw_daemon_now(d);
    const char *agent_id = msg->type == PW_MSG_HELLO ? msg->u.hello.agent_id : msg->u.report.agent_id;
    /* One outstanding request per agent: a new one supersedes a held one (the agent gave up on
     * it, e.g. to report new events at once). */
    struct held_poll *old = held_find(d, agent_id);
    if (old != NULL)
        answer_held(d, old);

    struct pw_msg reply;
    memset(&reply, 0, sizeof(reply));
    uint64_t cmds0 = d->prewarm_cmds, t0 = uv_hrtime();
    if (msg->type == PW_MSG_HELLO) {
        pw_core_agent_hello(d->core, now, &msg->u.hello, &reply);
        pw_log_info("agentlink", "hello from %s (%zu NUMA nodes, %zu VMs, driver %s)", agent_id, msg->u.hello.nnuma,
                    msg->u.hello.nvms, msg->u.hello.driver);
    } else {
        pw_core_agent_report(d->core, now, &msg->u.report, &reply);
    }
    /* Hold a report with nothing to deliver: it is answered when commands come or at the
     * heartbeat. Everything else is answered now. */
    int hold = msg->type == PW_MSG_REPORT && reply.type == PW_MSG_REPLY && reply.u.reply.ncmds == 0 &&
               !d->stopping;
    if (hold) {
        struct held_poll *hp = pw_xcalloc(1, sizeof(*hp));
        pw_strlcpy(hp->agent_id, agent_id, sizeof(hp->agent_id));
        hp->req = req;
        hp->until = now + d->cfg.heartbeat_ms;
        pw_htab_insert(&d->held, &hp->hnode, pw_hash_str(hp->agent_id));
        pw_list_push_tail(&d->held_q, &hp->qlink);
        if (!uv_is_active((uv_handle_t *)&d->held_timer))
            uv_timer_start(&d->held_timer, on_held_timer, (uint64_t)d->cfg.heartbeat_ms, 0);
    } else {
        pw_agentlink_reply(req, &reply);
    }
    pw_msg_fini(&reply);
    pw_daemon_drain(d);
    placement_observe(d, t0, cmds0);
}

/* ---- tick ---- */

static void on_tick(uv_timer_t *t)
{
    struct pw_daemon *d = t->data;
    if (!pw_leader_may_act(d->leader))
        return; /* nothing moves until leadership is confirmed again (or lost: exit) */
    int64_t now = pw_daemon_now(d);
    uint64_t cmds0 = d->prewarm_cmds, t0 = uv_hrtime();
    pw_core_tick(d->core, now);
    pw_daemon_drain(d);
    placement_observe(d, t0, cmds0);
    pw_predict_tick(d->predict, pw_now_wall_ms());
    answer_due(d, now); /* normally held_timer's work already */
    pw_api_sweep(d);
    pw_daemon_drain(d);
}

/* ---- startup and shutdown ---- */

static void shutdown_all(struct pw_daemon *d);

static void on_signal(uv_signal_t *s, int signum)
{
    struct pw_daemon *d = s->data;
    if (d->stopping)
        return;
    pw_log_info("prewarmd", "signal %d: shutting down", signum);
    shutdown_all(d);
}

/* shutdown_all answers what is pending and closes everything, so the loop runs out. */
static void shutdown_all(struct pw_daemon *d)
{
    d->stopping = 1;
    if (d->leading) {
        uv_timer_stop(&d->tick);
        uv_timer_stop(&d->held_timer);
    }
    /* Answer held polls so agents do not wait for a dead socket. */
    size_t b = 0;
    struct pw_hnode *n = NULL, *e;
    while ((e = pw_htab_next(&d->held, &b, &n)) != NULL)
        answer_held(d, pw_container_of(e, struct held_poll, hnode));
    pw_predict_stop(d->predict);
    pw_api_sweep(d); /* parked acquires get 503 now, while their connections are open */
    pw_http_server_close(d->http);
    d->http = NULL;
    if (d->link != NULL)
        pw_agentlink_close(d->link);
    d->link = NULL;
    pw_tlsfront_close(d->https); /* its connections end as the HTTP server closes theirs */
    d->https = NULL;
    pw_leader_close(d->leader); /* releases the lock with its session */
    d->leader = NULL;
    pw_store_close(d->store);
    d->store = NULL;
    if (d->leading) {
        uv_close((uv_handle_t *)&d->tick, NULL);
        uv_close((uv_handle_t *)&d->held_timer, NULL);
    }
    uv_close((uv_handle_t *)&d->sigint, NULL);
    uv_close((uv_handle_t *)&d->sigterm, NULL);
}

static void load_fn(void *arg, const struct pw_function_spec *spec)
{
    struct pw_daemon *d = arg;
    if (pw_core_function_put(d->core, pw_daemon_now(d), spec) != PW_OK)
        pw_log_warn("prewarmd", "stored function %s is invalid; skipped", spec->name);
}

static void load_host(void *arg, const char *host_id)
{
    struct pw_daemon *d = arg;
    pw_core_expect_host(d->core, host_id);
}

/* load_drain applies a persisted operator drain before the host can say hello: to the host the
 * core already expects, else remembered for when it comes. */
static void load_drain(void *arg, const char *host_id, int alive)
{
    struct pw_daemon *d = arg;
    if (pw_core_host_drain(d->core, pw_daemon_now(d), host_id, 1) != PW_OK)
        pw_core_host_remember_drain(d->core, host_id);
    pw_log_info("prewarmd", "host %s is drained by an operator (last known %s)", host_id, alive ? "alive" : "dead");
}

static void on_leader(void *arg, enum pw_leader_event ev, uint64_t epoch);

int pw_daemon_run(const struct pw_sched_config *cfg)
{
    signal(SIGPIPE, SIG_IGN);
    struct pw_daemon *d = pw_xcalloc(1, sizeof(*d));
    d->cfg = *cfg;
    d->loop = uv_default_loop();
    d->started_wall_ms = pw_now_wall_ms();
    pw_daemon_metrics_init(d);
    pw_htab_init(&d->held);
    pw_list_init(&d->held_q);
    pw_htab_init(&d->parked);
    int code = 1;
    char err[512] = "";

    struct pw_store_options so;
    pw_store_options_default(&so);
    so.conninfo = cfg->pg_conninfo;
    so.telemetry_max_rows = cfg->telemetry_max_rows;
    if (pw_store_open(d->loop, &so, &d->store, err, sizeof(err)) != PW_OK) {
        pw_log_error("prewarmd", "cannot open the store: %s", err);
        goto out;
    }
    /* HTTP first: a follower answers /livez, and /readyz with 503, while it waits. */
    struct pw_http_limits lim;
    pw_http_limits_default(&lim);
    lim.max_body_bytes = cfg->max_body_bytes;
    lim.max_connections = cfg->max_connections;
    if (pw_http_server_new(d->loop, cfg->http_host, cfg->http_port, &lim, on_http, d, &d->http) != PW_OK) {
        pw_log_error("prewarmd", "cannot listen for HTTP on %s:%d", cfg->http_host, cfg->http_port);
        goto out_store;
    }
    if (cfg->https[0] != '\0' &&
        pw_tlsfront_new(cfg->https, cfg->https_cert, pw_http_server_port(d->http), cfg->max_connections, 60000,
                        &d->https, err, sizeof(err)) != PW_OK) {
        pw_log_error("prewarmd", "%s", err);
        pw_http_server_close(d->http);
        goto out_store;
    }
    struct pw_leader_options lo;
    pw_leader_options_default(&lo);
    lo.conninfo = cfg->pg_conninfo;
    lo.holder = cfg->replica_name;
    lo.renew_ms = cfg->leader_renew_ms;
    lo.lease_ms = cfg->leader_lease_ms;
    lo.takeover_ms = cfg->leader_takeover_ms;
    if (pw_leader_new(d->loop, &lo, on_leader, d, &d->leader, err, sizeof(err)) != PW_OK) {
        pw_log_error("prewarmd", "%s", err);
        pw_http_server_close(d->http);
        goto out_store;
    }
    uv_signal_init(d->loop, &d->sigint);
    uv_signal_init(d->loop, &d->sigterm);
    d->sigint.data = d->sigterm.data = d;
    uv_signal_start(&d->sigint, on_signal, SIGINT);
    uv_signal_start(&d->sigterm, on_signal, SIGTERM);
    pw_log_info("prewarmd", "replica %s serving HTTP on %s:%d; waiting to lead (agents on %s once elected)",
                cfg->replica_name, cfg->http_host, pw_http_server_port(d->http), cfg->agents_url);
    d->exit_code = 0;
    uv_run(d->loop, UV_RUN_DEFAULT);
    code = d->exit_code;
    goto out;

out_store:
    pw_store_close(d->store);
    uv_run(d->loop, UV_RUN_DEFAULT);
out:
    pw_predict_free(d->predict);
    pw_core_free(d->core);
    /* Parked acquires and held polls are owned by the HTTP server and link, closed above. */
    size_t b = 0;
    struct pw_hnode *n = NULL, *e;
    while ((e = pw_htab_next(&d->parked, &b, &n)) != NULL)
        free(pw_container_of(e, struct parked, hnode));
    pw_htab_fini(&d->held);
    pw_htab_fini(&d->parked);
    uv_loop_close(d->loop);
    free(d);
    pw_log_info("prewarmd", "stopped");
    return code;
}

/* become_leader builds the leader's half once elected: the core from PostgreSQL, the
 * predictor, the agent link and the tick. Returns PW_OK, or an error after which prewarmd
 * stops. */
static int become_leader(struct pw_daemon *d, uint64_t epoch)
{
    const struct pw_sched_config *cfg = &d->cfg;
    char err[512] = "";
    d->epoch = epoch;
    pw_store_set_epoch(d->store, epoch);
    pw_log_info("prewarmd", "elected leader, epoch %" PRIu64 "; loading state", d->epoch);

    struct pw_core_config cc;
    pw_core_config_default(&cc);
    cc.epoch = d->epoch;
    cc.id_base = d->epoch << 40; /* ids of this run never collide with an earlier run's */
    cc.heartbeat_ms = cfg->heartbeat_ms;
    cc.lease_ttl_ms = cfg->lease_ttl_ms;
    cc.adopt_grace_ms = cfg->adopt_grace_ms;
    cc.max_waiters_per_fn = cfg->max_waiters_per_fn;
    cc.placement = cfg->placement;
    cc.cordon_ms = cfg->cordon_ms;
    uv_update_time(d->loop);
    d->core = pw_core_new(&cc, pw_daemon_now(d));
    pw_log_info("prewarmd", "placement weights cost %g fit %g spread %g snapshot %g load %g, candidates %u, "
                "scan budget %u", cc.placement.w.cost, cc.placement.w.fit, cc.placement.w.spread,
                cc.placement.w.snapshot, cc.placement.w.load, cc.placement.candidates, cc.placement.scan_budget);
    /* Hosts first, so functions loaded next wait for their VMs to be adopted; drains before
     * functions, so no VM is placed on a drained host in between. */
    if (pw_store_load_hosts(d->store, load_host, d) != PW_OK ||
        pw_store_load_drains(d->store, load_drain, d) != PW_OK ||
        pw_store_load_functions(d->store, load_fn, d) != PW_OK) {
        pw_log_error("prewarmd", "cannot load state from the store");
        return PW_ERR_STORE;
    }
    pw_daemon_drain(d);
    pw_log_info("prewarmd", "loaded %zu functions", pw_core_function_count(d->core));
    d->predict = pw_predict_new(d, cfg->model_path, cfg->restore_ms);

    struct pw_agentlink_tls tls = {cfg->agents_tls_cert[0] != '\0' ? cfg->agents_tls_cert : NULL,
                                   cfg->agents_tls_ca[0] != '\0' ? cfg->agents_tls_ca : NULL};
    int use_tls = cfg->agents_tls_cert[0] != '\0' || cfg->agents_tls_ca[0] != '\0';
    if (pw_agentlink_new(d->loop, cfg->agents_url, cfg->max_agents, use_tls ? &tls : NULL, on_agent_msg, d, &d->link,
                         err, sizeof(err)) != PW_OK) {
        pw_log_error("prewarmd", "%s", err);
        return PW_ERR_IO;
    }
    uv_timer_init(d->loop, &d->tick);
    d->tick.data = d;
    uv_timer_start(&d->tick, on_tick, TICK_MS, TICK_MS);
    uv_timer_init(d->loop, &d->held_timer);
    d->held_timer.data = d;
    d->leading = 1;
    pw_log_info("prewarmd", "leading (epoch %" PRIu64 "): agents on %s", d->epoch, cfg->agents_url);
    return PW_OK;
}

static void on_leader(void *arg, enum pw_leader_event ev, uint64_t epoch)
{
    struct pw_daemon *d = arg;
    if (d->stopping)
        return;
    if (ev == PW_LEADER_ELECTED) {
        if (become_leader(d, epoch) != PW_OK) {
            d->exit_code = 1;
            shutdown_all(d);
        }
        return;
    }
    /* Deposed: another replica leads with a newer epoch. Stop at once; the supervisor starts
     * this one again, as a follower. */
    pw_log_error("prewarmd", "no longer the leader (epoch %" PRIu64 "): stopping so this replica restarts as a follower",
                 epoch);
    d->exit_code = 3;
    shutdown_all(d);
}
