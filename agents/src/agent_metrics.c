/* agent_metrics.c — the agent's /metrics; see agent_metrics.h. */
#include "agent_metrics.h"

#include "pw/error.h"
#include "pw/log.h"

#include <string.h>

#define METRICS_MAX_BYTES (256u << 10)

void pw_agent_metrics_init(struct pw_agent_metrics *m, pw_agent_metrics_state_fn fn, void *arg)
{
    memset(m, 0, sizeof(*m));
    pw_prom_hist_init(&m->restore_hist, pw_prom_latency_bounds, pw_prom_latency_nbounds);
    m->state_fn = fn;
    m->state_arg = arg;
}

static void counter(struct pw_prom *w, const char *name, const char *help, uint64_t v)
{
    pw_prom_family(w, name, PW_PROM_COUNTER, help);
    pw_prom_sample_u64(w, name, NULL, 0, v);
}

static void gauge(struct pw_prom *w, const char *name, const char *help, uint64_t v)
{
    pw_prom_family(w, name, PW_PROM_GAUGE, help);
    pw_prom_sample_u64(w, name, NULL, 0, v);
}

int pw_agent_metrics_render(const struct pw_agent_metrics *m, const struct pw_agent_metrics_state *st,
                            struct pw_buf *b)
{
    struct pw_prom w;
    pw_prom_init(&w, b);
    pw_prom_family(&w, "prewarm_agent_info", PW_PROM_GAUGE, "The agent: its host id, VMM driver and accelerator.");
    struct pw_prom_label il[] = {{"agent", st->id},
                                 {"driver", st->driver},
                                 {"accelerator", st->accelerator},
                                 {"version", st->version}};
    pw_prom_sample_u64(&w, "prewarm_agent_info", il, PW_ARRAY_LEN(il), 1);
    /* The inventory holds VMs restoring, running or stopping; gone and failed ones leave it. */
    static const enum pw_avm_state shown[] = {PW_AVM_RESTORING, PW_AVM_RUNNING, PW_AVM_STOPPING};
    pw_prom_family(&w, "prewarm_agent_vms", PW_PROM_GAUGE, "VMs on this host, by state.");
    for (size_t i = 0; i < PW_ARRAY_LEN(shown); i++) {
        struct pw_prom_label l = {"state", pw_avm_state_str(shown[i])};
        pw_prom_sample_u64(&w, "prewarm_agent_vms", &l, 1, st->vms[shown[i]]);
    }
    counter(&w, "prewarm_agent_restores_total", "Restores that brought a VM up.", m->restores);
    counter(&w, "prewarm_agent_restore_failures_total", "Restores or VMs that failed.", m->restore_failures);
    counter(&w, "prewarm_agent_vms_gone_total", "VMs destroyed or gone.", m->vms_gone);
    pw_prom_family(&w, "prewarm_agent_restore_duration_seconds", PW_PROM_HISTOGRAM,
                   "Restore time of VMs that came up, as the driver measured it.");
    pw_prom_hist_write(&w, "prewarm_agent_restore_duration_seconds", NULL, 0, &m->restore_hist);
    counter(&w, "prewarm_agent_commands_total", "Commands from the scheduler executed.", m->commands);
    pw_prom_family(&w, "prewarm_agent_requests_total", PW_PROM_COUNTER, "Requests sent to the scheduler, by kind.");
    struct pw_prom_label rl[] = {{"kind", "hello"}, {"kind", "report"}};
    pw_prom_sample_u64(&w, "prewarm_agent_requests_total", &rl[0], 1, m->hellos_sent);
    pw_prom_sample_u64(&w, "prewarm_agent_requests_total", &rl[1], 1, m->reports_sent);
    counter(&w, "prewarm_agent_replies_total", "Replies received from the scheduler.", m->replies);
    counter(&w, "prewarm_agent_link_errors_total", "Requests to the scheduler that failed or timed out.",
            m->link_errors);
    gauge(&w, "prewarm_agent_scheduler_connected", "1 when the last request to the scheduler got an answer.",
          (uint64_t)(st->connected != 0));
    static const char *link_states[] = {"idle", "sending", "receiving", "closed"};
    pw_prom_family(&w, "prewarm_agent_link_state", PW_PROM_GAUGE,
                   "State of the link to the scheduler (1 for the current state).");
    for (size_t i = 0; i < PW_ARRAY_LEN(link_states); i++) {
        struct pw_prom_label l = {"state", link_states[i]};
        pw_prom_sample_u64(&w, "prewarm_agent_link_state", &l, 1, strcmp(st->link_state, link_states[i]) == 0);
    }
    gauge(&w, "prewarm_agent_draining", "1 while the agent asks for no new VMs.", (uint64_t)(st->draining != 0));
    gauge(&w, "prewarm_agent_outbox_events", "Events waiting for the scheduler's acknowledgement.", st->outbox);
    return pw_prom_err(&w);
}

static void on_request(void *arg, struct pw_http_req *r)
{
    struct pw_agent_metrics *m = arg;
    if (strcmp(pw_http_req_path(r), "/metrics") != 0) {
        pw_http_respond_error(r, 404, "not_found", "only /metrics is served here", NULL);
        return;
    }
    if (strcmp(pw_http_req_method(r), "GET") != 0) {
        pw_http_respond_error(r, 405, "method_not_allowed", "use GET", "Allow: GET\r\n");
        return;
    }
    struct pw_agent_metrics_state st;
    memset(&st, 0, sizeof(st));
    m->state_fn(m->state_arg, &st);
    struct pw_buf b;
    pw_buf_init(&b, METRICS_MAX_BYTES);
    if (pw_agent_metrics_render(m, &st, &b) != PW_OK)
        pw_http_respond_error(r, 500, "internal", "the metrics exposition exceeds its bound", NULL);
    else
        pw_http_respond(r, 200, PW_PROM_CONTENT_TYPE, b.data, b.len, NULL);
    pw_buf_fini(&b);
}

int pw_agent_metrics_listen(struct pw_agent_metrics *m, uv_loop_t *loop, const char *host, int port,
                            char *errbuf, size_t errlen)
{
    struct pw_http_limits lim;
    pw_http_limits_default(&lim);
    lim.max_body_bytes = 1024;
    lim.max_connections = 16;
    int rv = pw_http_server_new(loop, host, port, &lim, on_request, m, &m->http);
    if (rv != PW_OK) {
        pw_errf(errbuf, errlen, "cannot listen for /metrics on %s:%d: %s", host, port, pw_strerror(rv));
        m->http = NULL;
        return rv;
    }
    pw_log_info("agent", "serving /metrics on %s:%d", host, pw_http_server_port(m->http));
    return PW_OK;
}

void pw_agent_metrics_close(struct pw_agent_metrics *m)
{
    if (m->http != NULL) {
        pw_http_server_close(m->http);
        m->http = NULL;
    }
}
