/* gateway.c — the invocation path of prewarm-gateway: acquire a lease from prewarmd, proxy the
 * request to the leased VM, stream its answer to the client, release the lease
 * (docs/gateway.md). */
#include "gateway.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "pw/error.h"
#include "pw/hclient.h"
#include "pw/http.h"
#include "pw/log.h"
#include "pw/util.h"

#define COMP "gateway"
#define TICK_MS 20
#define RELEASE_TIMEOUT_MS 5000
/* prewarmd answers an acquire by its own deadline; this is the slack for the answer to arrive. */
#define ACQUIRE_SLACK_MS 2000
/* A streamed answer: reading from the VM pauses while more than HIGH_WATER bytes wait for the
 * client and resumes once they are down to LOW_WATER, so that an invocation holds at most
 * about HIGH_WATER plus one read (64 KiB) whatever the answer's size. */
#define STREAM_HIGH_WATER (256 * 1024)
#define STREAM_LOW_WATER (64 * 1024)

/* An invocation's states. */
enum inv_state {
    INV_ACQUIRING, /* waiting for prewarmd's acquire answer */
    INV_CALLING,   /* the request is with the VM, its answer's head not yet in */
    INV_STREAMING, /* the VM's answer is being streamed to the client */
    INV_DONE,      /* answered (or the client left) and the lease released: about to be freed */
};

static const char *const inv_state_names[] = {"acquiring", "calling", "streaming", "done"};

struct inv {
    struct pw_list link; /* in the gateway's in-flight list */
    struct pw_gateway *g;
    enum inv_state state;
    struct pw_http_req *req;
    struct pw_hcall *call;  /* the acquire or the VM request in flight */
    struct pw_hclient *vm;  /* one connection to the VM, for this invocation only */
    char fn[PW_NAME_MAX];
    char lease_id[24];
    char *target;           /* path and query sent to the VM */
    uint64_t t_start_ns, t_vm_ns;
    uint64_t streamed;      /* body bytes of the VM's answer passed to the client */
    int paused;             /* reading from the VM is paused: the client is behind */
};

struct release_ctx {
    struct pw_gateway *g;
    char lease_id[24];
};

struct pw_gateway {
    uv_loop_t *loop;
    struct pw_gateway_cfg cfg;
    char sched_headers[400]; /* on every request to prewarmd: Content-Type, Authorization */
    struct pw_http_server *http;
    struct pw_hclient *sched;   /* acquires */
    struct pw_hclient *release; /* releases: connections of their own (see release_conns) */
    uv_timer_t tick;
    struct pw_list inflight;
    size_t ninflight;
    size_t nreleasing;
    int closing;
    int tick_open;
};

void pw_gateway_cfg_default(struct pw_gateway_cfg *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    pw_strlcpy(cfg->listen_host, "127.0.0.1", sizeof(cfg->listen_host));
    cfg->listen_port = 8090;
    pw_strlcpy(cfg->scheduler, "127.0.0.1:8080", sizeof(cfg->scheduler));
    cfg->acquire_timeout_ms = 5000;
    cfg->vm_timeout_ms = 30000;
    cfg->max_body = 8 * 1024 * 1024; /* request bodies; answers are streamed */
    cfg->max_inflight = 4096;
    cfg->scheduler_conns = 256;
}

static void inv_set_state(struct inv *v, enum inv_state to)
{
    pw_log_debug(COMP, "invocation %p (%s): %s -> %s", (void *)v, v->fn, inv_state_names[v->state],
                 inv_state_names[to]);
    assert(to > v->state);
    v->state = to;
}

static void gateway_maybe_free(struct pw_gateway *g);

/* ---- release ---- */

/* release_conns: connections for releases, a quarter of the acquires' (at least 4). A release
 * is one quick write at prewarmd and never waits there. */
static size_t release_conns(size_t scheduler_conns) { return PW_MAX(scheduler_conns / 4, (size_t)4); }

static void on_released(void *arg, int err, const struct pw_hresp *resp)
{
    struct release_ctx *rc = arg;
    struct pw_gateway *g = rc->g;
    if (err != PW_OK)
        pw_log_warn(COMP, "release of lease %s failed: %s (it expires at its TTL)", rc->lease_id,
                    pw_strerror((enum pw_err)err));
    else if (resp->status != 200)
        pw_log_warn(COMP, "release of lease %s: prewarmd answered %d: %.*s", rc->lease_id, resp->status,
                    (int)PW_MIN(resp->body_len, 200), resp->body);
    free(rc);
    g->nreleasing--;
    if (g->closing)
        gateway_maybe_free(g);
}

static void release_lease(struct pw_gateway *g, const char *lease_id, int64_t duration_ms, int ok)
{
    struct release_ctx *rc = pw_xcalloc(1, sizeof(*rc));
    rc->g = g;
    pw_strlcpy(rc->lease_id, lease_id, sizeof(rc->lease_id));
    char path[64], body[96];
    snprintf(path, sizeof(path), "/v1/leases/%s/release", lease_id);
    int n = snprintf(body, sizeof(body), "{\"duration_ms\":%" PRId64 ",\"outcome\":\"%s\"}",
                     duration_ms < 0 ? 0 : duration_ms, ok ? "ok" : "error");
    g->nreleasing++;
    pw_hclient_request(g->release, "POST", path, g->sched_headers, body, (size_t)n,
                       RELEASE_TIMEOUT_MS, on_released, rc);
    pw_log_debug(COMP, "release lease %s outcome %s duration %" PRId64 " ms", lease_id, ok ? "ok" : "error",
                 duration_ms);
}

/* ---- invocation ---- */

static void inv_free(struct inv *v)
{
    struct pw_gateway *g = v->g;
    pw_list_remove(&v->link);
    g->ninflight--;
    if (v->vm != NULL)
        pw_hclient_close(v->vm);
    free(v->target);
    free(v);
}

/* inv_finish releases the lease (if any) and frees v; the client has been answered. */
static void inv_finish(struct inv *v, int lease_ok)
{
    if (v->lease_id[0] != '\0')
        release_lease(v->g, v->lease_id, (int64_t)((uv_hrtime() - v->t_vm_ns) / 1000000), lease_ok);
    inv_set_state(v, INV_DONE);
    inv_free(v);
}

static void respond_gw_error(struct pw_http_req *r, int status, const char *code, const char *msg)
{
    pw_http_respond_error(r, status, code, msg, NULL);
}

/* respond_vm_error answers the client for a VM request that failed before its answer's head
 * came, and releases the lease with outcome error. */
static void respond_vm_error(struct inv *v, int err)
{
    static const struct {
        int err, status;
        const char *code, *msg;
    } map[] = {
        {PW_ERR_TIMEOUT, 504, "vm_timeout", "the function's VM did not answer in time"},
        {PW_ERR_TOOBIG, 502, "vm_answer_too_large", "the function's answer headers passed the gateway's cap"},
        {PW_ERR_PARSE, 502, "vm_bad_answer", "the function's VM sent a malformed HTTP answer"},
    };
    int status = 502;
    const char *code = "vm_unreachable", *msg = "the function's VM could not be reached or cut its answer";
    for (size_t i = 0; i < PW_ARRAY_LEN(map); i++)
        if (map[i].err == err)
            status = map[i].status, code = map[i].code, msg = map[i].msg;
    pw_log_warn(COMP, "%s: lease %s: VM request failed: %s", v->fn, v->lease_id, pw_strerror((enum pw_err)err));
    respond_gw_error(v->req, status, code, msg);
    inv_finish(v, 0);
}

/* on_client_drain: the client caught up; read from the VM again. */
static void on_client_drain(void *arg, struct pw_http_req *r)
{
    struct inv *v = arg;
    (void)r;
    if (v->paused && v->call != NULL) {
        v->paused = 0;
        pw_hcall_resume(v->call);
    }
}

/* on_vm_headers starts the client's answer with the VM's status and headers (hop-by-hop ones
 * are dropped by the client library), framed by the VM's Content-Length when it gave one and
 * chunked otherwise. */
static void on_vm_headers(void *arg, const struct pw_hresp *resp, int64_t content_length)
{
    struct inv *v = arg;
    if (resp->status < 200 || resp->status > 599) {
        pw_hcall_cancel(v->call);
        v->call = NULL;
        respond_vm_error(v, PW_ERR_PARSE);
        return;
    }
    inv_set_state(v, INV_STREAMING);
    struct pw_buf hdr;
    pw_buf_init(&hdr, 32 * 1024);
    pw_buf_add(&hdr, resp->headers, resp->headers_len);
    pw_buf_printf(&hdr, "X-Prewarm-Lease: %s\r\n", v->lease_id);
    pw_http_req_on_drain(v->req, STREAM_LOW_WATER, on_client_drain, v);
    pw_http_respond_start(v->req, resp->status,
                          resp->content_type[0] ? resp->content_type : "application/octet-stream", hdr.data,
                          content_length);
    pw_buf_fini(&hdr);
}

static void on_vm_body(void *arg, const char *data, size_t len)
{
    struct inv *v = arg;
    v->streamed += len;
    size_t queued = pw_http_respond_write(v->req, data, len);
    if (queued > STREAM_HIGH_WATER && !v->paused) {
        v->paused = 1;
        pw_log_debug(COMP, "%s: lease %s: client behind by %zu bytes; pausing the VM", v->fn, v->lease_id, queued);
        pw_hcall_pause(v->call);
    }
}

/* on_vm_end finishes the invocation. A VM that fails after its head cannot be told to the
 * client with a status any more: the client's answer is cut (its connection closed before
 * the chunked terminator or the Content-Length), never passed off as complete. */
static void on_vm_end(void *arg, int err)
{
    struct inv *v = arg;
    v->call = NULL;
    if (v->state == INV_CALLING) {
        assert(err != PW_OK);
        respond_vm_error(v, err);
        return;
    }
    if (err == PW_OK) {
        pw_http_respond_end(v->req);
        inv_finish(v, 1);
        return;
    }
    pw_log_warn(COMP, "%s: lease %s: VM answer cut after %" PRIu64 " body bytes: %s; closing the client's"
                " connection", v->fn, v->lease_id, v->streamed, pw_strerror((enum pw_err)err));
    pw_http_respond_abort(v->req);
    inv_finish(v, 0);
}

static const struct pw_hstream_cbs vm_stream_cbs = {
    .on_headers = on_vm_headers,
    .on_body = on_vm_body,
    .on_end = on_vm_end,
};

static void inv_call_vm(struct inv *v, const char *address)
{
    struct pw_gateway *g = v->g;
    struct sockaddr_storage sa;
    if (pw_hclient_parse_addr(address, &sa) != PW_OK) {
        pw_log_error(COMP, "%s: lease %s: VM address %s is not ip:port", v->fn, v->lease_id, address);
        respond_gw_error(v->req, 502, "vm_bad_address", "prewarmd gave a VM address the gateway cannot use");
        inv_finish(v, 0);
        return;
    }
    struct pw_hclient_opts o;
    pw_hclient_opts_default(&o);
    o.max_conns = 1;
    o.max_queue = 1;
    o.keepalive = 0;
    pw_hclient_new(g->loop, (const struct sockaddr *)&sa, &o, &v->vm);
    struct pw_buf hdr;
    pw_buf_init(&hdr, 8 * 1024);
    static const char *const fwd[] = {"Content-Type", "Accept", "User-Agent"};
    for (size_t i = 0; i < PW_ARRAY_LEN(fwd); i++) {
        const char *val = pw_http_req_header(v->req, fwd[i]);
        if (val != NULL && strpbrk(val, "\r\n") == NULL)
            pw_buf_printf(&hdr, "%s: %s\r\n", fwd[i], val);
    }
    pw_buf_printf(&hdr, "X-Prewarm-Lease: %s\r\n", v->lease_id);
    size_t blen;
    const char *body = pw_http_req_body(v->req, &blen);
    inv_set_state(v, INV_CALLING);
    v->t_vm_ns = uv_hrtime();
    v->call = pw_hclient_stream(v->vm, pw_http_req_method(v->req), v->target, hdr.data, body, blen,
                                g->cfg.vm_timeout_ms, &vm_stream_cbs, v);
    pw_buf_fini(&hdr);
}

static void on_acquired(void *arg, int err, const struct pw_hresp *resp)
{
    struct inv *v = arg;
    v->call = NULL;
    if (err != PW_OK) {
        int status = err == PW_ERR_TIMEOUT ? 504 : err == PW_ERR_LIMIT ? 503 : 502;
        const char *code = err == PW_ERR_TIMEOUT  ? "scheduler_timeout"
                           : err == PW_ERR_LIMIT ? "gateway_overloaded"
                                                  : "scheduler_unreachable";
        pw_log_warn(COMP, "%s: acquire failed: %s", v->fn, pw_strerror((enum pw_err)err));
        respond_gw_error(v->req, status, code, "the gateway could not get a VM from prewarmd");
        inv_finish(v, 1);
        return;
    }
    if (resp->status != 200) {
        /* prewarmd's own refusals (unknown function, no VM in time, too many waiting) pass
         * through with their JSON body; anything else is the gateway's 502. */
        if (resp->status == 404 || resp->status == 429 || resp->status == 503) {
            const char *retry = strcasestr(resp->headers ? resp->headers : "", "Retry-After:");
            pw_http_respond(v->req, resp->status, NULL, resp->body, resp->body_len,
                            retry != NULL ? "Retry-After: 1\r\n" : NULL);
        } else {
            pw_log_warn(COMP, "%s: acquire: prewarmd answered %d", v->fn, resp->status);
            char msg[128];
            snprintf(msg, sizeof(msg), "prewarmd refused the acquire (HTTP %d%s)", resp->status,
                     resp->status == 401 || resp->status == 403 ? ": check the gateway's token" : "");
            respond_gw_error(v->req, 502, "scheduler_error", msg);
        }
        inv_finish(v, 1);
        return;
    }
    cJSON *j = cJSON_ParseWithLength(resp->body, resp->body_len);
    const cJSON *lid = cJSON_GetObjectItemCaseSensitive(j, "lease_id");
    const cJSON *addr = cJSON_GetObjectItemCaseSensitive(j, "address");
    if (!cJSON_IsString(lid) || !cJSON_IsString(addr) || strlen(lid->valuestring) >= sizeof(v->lease_id)) {
        cJSON_Delete(j);
        pw_log_error(COMP, "%s: acquire answer without lease_id and address", v->fn);
        respond_gw_error(v->req, 502, "scheduler_bad_answer", "prewarmd's acquire answer lacks a lease or address");
        inv_finish(v, 1);
        return;
    }
    pw_strlcpy(v->lease_id, lid->valuestring, sizeof(v->lease_id));
    char address[128];
    pw_strlcpy(address, addr->valuestring, sizeof(address));
    cJSON_Delete(j);
    if (pw_http_req_gone(v->req)) {
        /* The client left before the tick saw it (same loop turn as this answer). */
        pw_log_info(COMP, "%s: client left while %s; releasing lease %s", v->fn, inv_state_names[v->state],
                    v->lease_id);
        pw_http_respond(v->req, 499, NULL, "{}", 2, NULL);
        v->t_vm_ns = uv_hrtime();
        inv_finish(v, 1);
        return;
    }
    inv_call_vm(v, address);
}

static void inv_start(struct pw_gateway *g, struct pw_http_req *r, const char *fn, const char *rest)
{
    struct inv *v = pw_xcalloc(1, sizeof(*v));
    v->g = g;
    v->req = r;
    v->state = INV_ACQUIRING;
    pw_strlcpy(v->fn, fn, sizeof(v->fn));
    const char *q = pw_http_req_query(r);
    size_t n = strlen(rest) + strlen(q) + 3;
    v->target = pw_xmalloc(n);
    snprintf(v->target, n, "%s%s%s", rest[0] == '/' ? rest : "/", q[0] ? "?" : "", q);
    v->t_start_ns = uv_hrtime();
    pw_list_push_tail(&g->inflight, &v->link);
    g->ninflight++;
    char path[128], body[64];
    snprintf(path, sizeof(path), "/v1/functions/%s/acquire", fn);
    int blen = snprintf(body, sizeof(body), "{\"timeout_ms\":%" PRId64 "}", g->cfg.acquire_timeout_ms);
    v->call = pw_hclient_request(g->sched, "POST", path, g->sched_headers, body, (size_t)blen,
                                 g->cfg.acquire_timeout_ms + ACQUIRE_SLACK_MS, on_acquired, v);
}

/* inv_abort handles a client that left (or a gateway shutting down): cancel what is in
 * flight, answer req to free it, release the lease. */
static void inv_abort(struct inv *v, int status)
{
    if (v->call != NULL) {
        /* An acquire cancelled here closes its connection: prewarmd sees the client go and
         * gives the VM back itself. A VM request cancelled closes the VM connection. */
        pw_hcall_cancel(v->call);
        v->call = NULL;
    }
    pw_log_info(COMP, "%s: client left while %s%s%s", v->fn, inv_state_names[v->state],
                v->lease_id[0] ? "; releasing lease " : "", v->lease_id);
    if (v->state == INV_STREAMING) {
        /* The head is out: a gone client's answer is just freed; a present one (shutdown)
         * is cut. */
        pw_log_info(COMP, "%s: %" PRIu64 " body bytes of the VM's answer were passed on", v->fn, v->streamed);
        pw_http_respond_abort(v->req);
    } else if (status == 499) {
        pw_http_respond(v->req, 499, NULL, "{}", 2, NULL);
    } else {
        respond_gw_error(v->req, status, "gateway_stopping", "the gateway is shutting down");
    }
    inv_finish(v, 1);
}

static void on_tick(uv_timer_t *t)
{
    struct pw_gateway *g = t->data;
    struct pw_list *e, *tmp;
    pw_list_foreach_safe(e, tmp, &g->inflight) {
        struct inv *v = pw_container_of(e, struct inv, link);
        if (pw_http_req_gone(v->req))
            inv_abort(v, 499);
    }
}

/* ---- front door ---- */

static void on_request(void *arg, struct pw_http_req *r)
{
    struct pw_gateway *g = arg;
    const char *path = pw_http_req_path(r);
    if (strcmp(path, "/livez") == 0) {
        pw_http_respond(r, 200, NULL, "{\"status\":\"ok\"}", 15, NULL);
        return;
    }
    if (strncmp(path, "/invoke/", 8) != 0) {
        respond_gw_error(r, 404, "not_found", "the gateway serves /invoke/{function}/... and /livez");
        return;
    }
    const char *name = path + 8;
    const char *slash = strchr(name, '/');
    size_t len = slash ? (size_t)(slash - name) : strlen(name);
    char fn[PW_NAME_MAX];
    if (len == 0 || len >= sizeof(fn)) {
        respond_gw_error(r, 404, "not_found", "no such function");
        return;
    }
    memcpy(fn, name, len);
    fn[len] = '\0';
    if (!pw_name_valid(fn)) {
        respond_gw_error(r, 404, "not_found", "no such function");
        return;
    }
    if (g->closing) {
        respond_gw_error(r, 503, "gateway_stopping", "the gateway is shutting down");
        return;
    }
    if (g->ninflight >= g->cfg.max_inflight) {
        pw_http_respond_error(r, 503, "gateway_overloaded", "too many invocations in flight", "Retry-After: 1\r\n");
        return;
    }
    inv_start(g, r, fn, slash ? slash : "/");
}

int pw_gateway_new(uv_loop_t *loop, const struct pw_gateway_cfg *cfg, struct pw_gateway **out, char *errbuf,
                   size_t errlen)
{
    struct sockaddr_storage sa;
    if (pw_hclient_parse_addr(cfg->scheduler, &sa) != PW_OK) {
        pw_errf(errbuf, errlen, "scheduler address %s is not ip:port", cfg->scheduler);
        return PW_ERR_INVAL;
    }
    for (const char *t = cfg->token; *t != '\0'; t++)
        if (*t <= ' ' || *t > '~') {
            pw_errf(errbuf, errlen, "the token has a blank or non-printable character");
            return PW_ERR_INVAL;
        }
    struct pw_gateway *g = pw_xcalloc(1, sizeof(*g));
    g->loop = loop;
    g->cfg = *cfg;
    pw_list_init(&g->inflight);
    if (cfg->token[0] != '\0')
        snprintf(g->sched_headers, sizeof(g->sched_headers),
                 "Content-Type: application/json\r\nAuthorization: Bearer %s\r\n", cfg->token);
    else
        pw_strlcpy(g->sched_headers, "Content-Type: application/json\r\n", sizeof(g->sched_headers));
    struct pw_hclient_opts o;
    pw_hclient_opts_default(&o);
    o.max_conns = cfg->scheduler_conns;
    o.max_queue = cfg->max_inflight * 2;
    o.max_body = 64 * 1024;
    pw_hclient_new(loop, (const struct sockaddr *)&sa, &o, &g->sched);
    /* Releases never queue behind acquires. An acquire may wait at prewarmd for a VM (up to
     * its timeout); if releases shared its connections, an empty pool would hold every
     * connection with waiting acquires while the releases that would refill it sat in the
     * queue behind them, until the acquires timed out: an overload that feeds itself. */
    o.max_conns = release_conns(cfg->scheduler_conns);
    pw_hclient_new(loop, (const struct sockaddr *)&sa, &o, &g->release);
    struct pw_http_limits lim;
    pw_http_limits_default(&lim);
    lim.max_body_bytes = cfg->max_body;
    lim.max_connections = cfg->max_inflight;
    int rv = pw_http_server_new(loop, cfg->listen_host, cfg->listen_port, &lim, on_request, g, &g->http);
    if (rv != PW_OK) {
        pw_errf(errbuf, errlen, "cannot listen on %s:%d: %s", cfg->listen_host, cfg->listen_port,
                pw_strerror((enum pw_err)rv));
        pw_hclient_close(g->sched);
        pw_hclient_close(g->release);
        free(g);
        return rv;
    }
    uv_timer_init(loop, &g->tick);
    g->tick.data = g;
    g->tick_open = 1;
    uv_timer_start(&g->tick, on_tick, TICK_MS, TICK_MS);
    *out = g;
    return PW_OK;
}

int pw_gateway_port(const struct pw_gateway *g) { return pw_http_server_port(g->http); }

static void on_tick_close(uv_handle_t *h)
{
    struct pw_gateway *g = h->data;
    g->tick_open = 0;
    gateway_maybe_free(g);
}

static void gateway_maybe_free(struct pw_gateway *g)
{
    if (g->nreleasing > 0 || g->tick_open)
        return;
    if (g->sched != NULL) {
        pw_hclient_close(g->sched);
        g->sched = NULL;
    }
    if (g->release != NULL) {
        pw_hclient_close(g->release);
        g->release = NULL;
    }
    free(g);
}

void pw_gateway_close(struct pw_gateway *g)
{
    if (g->closing)
        return;
    g->closing = 1;
    struct pw_list *e, *tmp;
    pw_list_foreach_safe(e, tmp, &g->inflight) inv_abort(pw_container_of(e, struct inv, link), 503);
    pw_http_server_close(g->http);
    g->http = NULL;
    uv_close((uv_handle_t *)&g->tick, on_tick_close);
}
