/* hclient.c — the gateway's HTTP/1.1 client: connection reuse, a bounded queue, deadlines,
 * llhttp answer parsing, and answers either buffered or streamed with pause/resume (see
 * pw/hclient.h). */
#include "pw/hclient.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <llhttp.h>

#include "pw/error.h"
#include "pw/log.h"
#include "pw/util.h"

#define COMP "hclient"
#define MAX_HEADER_BYTES (16 * 1024)
#define QUEUE_SWEEP_MS 20

/* A connection's states. */
enum hconn_state {
    HC_CONNECTING, /* connect in progress, a call is assigned */
    HC_BUSY,       /* connected, a call is being sent or answered */
    HC_FINISHING,  /* the answer is being handed to the callback */
    HC_IDLE,       /* connected, no call, in the idle list */
    HC_CLOSING,    /* handles closing; freed in the last close callback */
};

static const char *const hconn_state_names[] = {"connecting", "busy", "finishing", "idle", "closing"};

struct hconn {
    struct pw_list link; /* in the client's idle list or busy list */
    struct pw_hclient *cl;
    enum hconn_state state;
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_connect_t connect;
    int open_handles;
    int connected;
    int reading;
    int pending_err; /* delivered from the timer (errors found inside pw_hclient_request) */
    struct pw_hcall *call;
    llhttp_t parser;
    int complete;    /* the answer parsed whole */
    int received;    /* answer bytes seen */
    int hdr_err;     /* a header cap was hit */
    int headers_done; /* a streamed call's headers were handed over */
    struct pw_buf hname, hval, headers, body;
    char ctype[128];
};

struct pw_hcall {
    struct pw_list link; /* in the client's queue while waiting */
    struct pw_hclient *cl;
    struct hconn *conn;
    pw_hclient_cb cb;                    /* buffered: the answer whole */
    const struct pw_hstream_cbs *scbs;   /* streamed: NULL when buffered */
    void *arg;
    char *wire;
    size_t wire_len;
    int head;
    int refused; /* the queue was full: answered PW_ERR_LIMIT by the sweep */
    int paused;  /* streamed: the caller does not want body bytes now */
    uint64_t deadline;  /* uv_now() ms */
    uint64_t timeout_ms; /* streamed: the longest wait for more body after the headers */
};

struct pw_hclient {
    uv_loop_t *loop;
    struct sockaddr_storage addr;
    struct pw_hclient_opts opts;
    char host[80];
    struct pw_list idle, busy, queue;
    size_t nconns, nidle, nqueued;
    uint64_t connects;
    uv_timer_t sweep;
    int sweep_open;
    int closing;
};

struct wreq {
    uv_write_t w;
    char *data;
};

static llhttp_settings_t settings;
static int settings_ready;

void pw_hclient_opts_default(struct pw_hclient_opts *o)
{
    o->max_conns = 64;
    o->max_queue = 4096;
    o->max_body = 1024 * 1024;
    o->keepalive = 1;
    o->idle_ms = 30000;
}

int pw_hclient_parse_addr(const char *hostport, struct sockaddr_storage *out)
{
    char host[64];
    const char *colon;
    memset(out, 0, sizeof(*out));
    if (hostport[0] == '[') {
        const char *end = strchr(hostport, ']');
        if (end == NULL || end[1] != ':' || (size_t)(end - hostport - 1) >= sizeof(host))
            return PW_ERR_INVAL;
        memcpy(host, hostport + 1, (size_t)(end - hostport - 1));
        host[end - hostport - 1] = '\0';
        colon = end + 1;
    } else {
        colon = strrchr(hostport, ':');
        if (colon == NULL || (size_t)(colon - hostport) >= sizeof(host))
            return PW_ERR_INVAL;
        memcpy(host, hostport, (size_t)(colon - hostport));
        host[colon - hostport] = '\0';
    }
    char *endp;
    long port = strtol(colon + 1, &endp, 10);
    if (*endp != '\0' || colon[1] == '\0' || port <= 0 || port > 65535)
        return PW_ERR_INVAL;
    if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)out) == 0)
        return PW_OK;
    if (uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)out) == 0)
        return PW_OK;
    return PW_ERR_INVAL;
}

/* ---- connection lifecycle ---- */

static void conn_set_state(struct hconn *h, enum hconn_state to)
{
    pw_log_debug(COMP, "conn %p: %s -> %s", (void *)h, hconn_state_names[h->state], hconn_state_names[to]);
    assert(h->state != HC_CLOSING);
    h->state = to;
}

static void client_dispatch(struct pw_hclient *c);
static void client_maybe_free(struct pw_hclient *c);
static void conn_on_timer(uv_timer_t *t);

static void conn_on_close(uv_handle_t *hd)
{
    struct hconn *h = hd->data;
    if (--h->open_handles > 0)
        return;
    struct pw_hclient *c = h->cl;
    pw_list_remove(&h->link);
    c->nconns--;
    pw_buf_fini(&h->hname);
    pw_buf_fini(&h->hval);
    pw_buf_fini(&h->headers);
    pw_buf_fini(&h->body);
    free(h);
    if (c->closing)
        client_maybe_free(c);
    else
        client_dispatch(c);
}

/* conn_close frees the current call without a callback (callers deliver first if they must). */
static void conn_close(struct hconn *h)
{
    if (h->state == HC_CLOSING)
        return;
    if (h->state == HC_IDLE)
        h->cl->nidle--;
    conn_set_state(h, HC_CLOSING);
    if (h->call != NULL) {
        free(h->call->wire);
        free(h->call);
        h->call = NULL;
    }
    uv_close((uv_handle_t *)&h->tcp, conn_on_close);
    uv_close((uv_handle_t *)&h->timer, conn_on_close);
}

/* call_fail answers a call that has no answer with err. */
static void call_fail(struct pw_hcall *call, int err)
{
    if (call->scbs != NULL)
        call->scbs->on_end(call->arg, err);
    else
        call->cb(call->arg, err, NULL);
}

/* conn_finish hands the answer (or err) to the call's callback, then keeps or closes h. */
static void conn_finish(struct hconn *h, int err)
{
    struct pw_hcall *call = h->call;
    struct pw_hclient *c = h->cl;
    assert(call != NULL);
    h->call = NULL;
    uv_timer_stop(&h->timer);
    /* A connection whose reading a paused stream stopped is not kept: it would not notice the
     * peer closing it while idle. */
    int reuse = err == PW_OK && c->opts.keepalive && llhttp_should_keep_alive(&h->parser) && !c->closing &&
                h->reading;
    conn_set_state(h, HC_FINISHING);
    struct pw_hresp resp = {
        .status = h->parser.status_code,
        .content_type = h->ctype,
        .headers = h->headers.data,
        .headers_len = h->headers.len,
        .body = h->body.data,
        .body_len = h->body.len,
    };
    if (err != PW_OK)
        call_fail(call, err);
    else if (call->scbs != NULL)
        call->scbs->on_end(call->arg, PW_OK);
    else
        call->cb(call->arg, PW_OK, &resp);
    free(call->wire);
    free(call);
    if (h->state != HC_FINISHING)
        return; /* closed by the callback (client close) */
    if (!reuse) {
        conn_close(h);
        return;
    }
    conn_set_state(h, HC_IDLE);
    pw_list_remove(&h->link);
    pw_list_push_tail(&c->idle, &h->link);
    c->nidle++;
    uv_timer_start(&h->timer, conn_on_timer, (uint64_t)c->opts.idle_ms, 0);
    client_dispatch(c);
}

static void conn_on_timer(uv_timer_t *t)
{
    struct hconn *h = t->data;
    if (h->state == HC_IDLE) {
        conn_close(h);
        return;
    }
    if (h->call == NULL)
        return;
    int err = h->pending_err ? h->pending_err : PW_ERR_TIMEOUT;
    h->pending_err = 0;
    conn_finish(h, err);
}

/* ---- answer parsing ---- */

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct hconn *h = p->data;
    h->received = 1;
    if (pw_buf_add(&h->hname, at, len) != PW_OK) {
        h->hdr_err = 1;
        return -1;
    }
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    struct hconn *h = p->data;
    if (pw_buf_add(&h->hval, at, len) != PW_OK) {
        h->hdr_err = 1;
        return -1;
    }
    return 0;
}

static int on_header_value_complete(llhttp_t *p)
{
    static const char *const hop[] = {"content-length", "transfer-encoding", "connection", "keep-alive"};
    struct hconn *h = p->data;
    const char *name = h->hname.data, *val = h->hval.data;
    int skip = 0;
    for (size_t i = 0; i < PW_ARRAY_LEN(hop); i++)
        skip |= strcasecmp(name, hop[i]) == 0;
    if (strcasecmp(name, "content-type") == 0) {
        pw_strlcpy(h->ctype, val, sizeof(h->ctype));
        skip = 1;
    }
    int rv = PW_OK;
    if (!skip && strpbrk(val, "\r\n") == NULL)
        rv = pw_buf_printf(&h->headers, "%s: %s\r\n", name, val);
    pw_buf_reset(&h->hname);
    pw_buf_reset(&h->hval);
    if (rv != PW_OK) {
        h->hdr_err = 1;
        return -1;
    }
    return 0;
}

/* stream_arm_timer: once a streamed call's headers are in, its timer bounds each wait for
 * more of the body (not while paused) instead of the whole answer. */
static void stream_arm_timer(struct hconn *h)
{
    if (h->call->paused)
        uv_timer_stop(&h->timer);
    else
        uv_timer_start(&h->timer, conn_on_timer, h->call->timeout_ms, 0);
}

static int on_headers_complete(llhttp_t *p)
{
    struct hconn *h = p->data;
    struct pw_hcall *call = h->call;
    /* An answer to HEAD has no body whatever its Content-Length says. */
    int skip = call->head ? 1 : 0;
    if (call->scbs == NULL)
        return skip;
    struct pw_hresp resp = {
        .status = p->status_code,
        .content_type = h->ctype,
        .headers = h->headers.data ? h->headers.data : "",
        .headers_len = h->headers.len,
    };
    int64_t length = (p->flags & F_CONTENT_LENGTH) && !(p->flags & F_CHUNKED) ? (int64_t)p->content_length : -1;
    h->headers_done = 1;
    call->scbs->on_headers(call->arg, &resp, length);
    if (h->state == HC_CLOSING)
        return -1; /* cancelled (or the client closed) from the callback */
    stream_arm_timer(h);
    return skip;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    struct hconn *h = p->data;
    struct pw_hcall *call = h->call;
    if (call->scbs == NULL)
        return pw_buf_add(&h->body, at, len) == PW_OK ? 0 : -1;
    call->scbs->on_body(call->arg, at, len);
    return h->state == HC_CLOSING ? -1 : 0;
}

static int on_message_complete(llhttp_t *p)
{
    struct hconn *h = p->data;
    h->complete = 1;
    return HPE_PAUSED;
}

static int on_message_begin(llhttp_t *p)
{
    struct hconn *h = p->data;
    h->received = 1;
    return 0;
}

static void settings_setup(void)
{
    if (settings_ready)
        return;
    llhttp_settings_init(&settings);
    settings.on_message_begin = on_message_begin;
    settings.on_header_field = on_header_field;
    settings.on_header_value = on_header_value;
    settings.on_header_value_complete = on_header_value_complete;
    settings.on_headers_complete = on_headers_complete;
    settings.on_body = on_body;
    settings.on_message_complete = on_message_complete;
    settings_ready = 1;
}

static void conn_on_alloc(uv_handle_t *hd, size_t suggested, uv_buf_t *buf)
{
    static char slab[64 * 1024]; /* one loop thread: the data is parsed before the next read */
    (void)hd;
    (void)suggested;
    buf->base = slab;
    buf->len = sizeof(slab);
}

static void conn_received(struct hconn *h, const char *data, size_t n)
{
    if (h->state != HC_BUSY || h->call == NULL) {
        /* Bytes nobody asked for: the connection cannot be trusted any more. */
        conn_close(h);
        return;
    }
    llhttp_errno_t e = llhttp_execute(&h->parser, data, n);
    if (h->state == HC_CLOSING)
        return; /* a streamed call was cancelled from its callback */
    if (h->complete) {
        conn_finish(h, PW_OK);
        return;
    }
    if (e == HPE_OK) {
        if (h->headers_done)
            stream_arm_timer(h);
        return;
    }
    int err = h->hdr_err || h->body.len >= h->cl->opts.max_body ? PW_ERR_TOOBIG : PW_ERR_PARSE;
    pw_log_debug(COMP, "conn %p: answer: %s", (void *)h, llhttp_errno_name(e));
    conn_finish(h, err);
}

static void conn_on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    struct hconn *h = st->data;
    if (nread > 0) {
        conn_received(h, buf->base, (size_t)nread);
        return;
    }
    if (nread == 0)
        return;
    if (h->state == HC_BUSY && h->call != NULL) {
        /* An answer delimited by the end of the connection completes here (llhttp_finish
         * returns on_message_complete's HPE_PAUSED then); any other is cut. */
        if (nread == UV_EOF && h->received) {
            (void)llhttp_finish(&h->parser);
            if (h->complete) {
                conn_finish(h, PW_OK);
                return;
            }
        }
        conn_finish(h, PW_ERR_IO);
        return;
    }
    conn_close(h);
}

/* ---- sending ---- */

static void conn_on_write(uv_write_t *w, int status)
{
    struct wreq *wr = (struct wreq *)w;
    free(wr->data);
    free(wr);
    (void)status; /* a failed write shows up as a failed read */
}

static void conn_send(struct hconn *h)
{
    struct pw_hcall *call = h->call;
    struct wreq *wr = pw_xmalloc(sizeof(*wr));
    wr->data = call->wire;
    call->wire = NULL;
    uv_buf_t b = uv_buf_init(wr->data, (unsigned)call->wire_len);
    int rv = uv_write(&wr->w, (uv_stream_t *)&h->tcp, &b, 1, conn_on_write);
    if (rv != 0) {
        free(wr->data);
        free(wr);
        conn_finish(h, PW_ERR_IO);
        return;
    }
    if (h->reading || call->paused)
        return;
    rv = uv_read_start((uv_stream_t *)&h->tcp, conn_on_alloc, conn_on_read);
    if (rv != 0) {
        conn_finish(h, PW_ERR_IO);
        return;
    }
    h->reading = 1;
}

static void conn_on_connect(uv_connect_t *req, int status)
{
    struct hconn *h = req->data;
    if (h->state == HC_CLOSING)
        return;
    if (status != 0) {
        pw_log_debug(COMP, "conn %p: connect: %s", (void *)h, uv_strerror(status));
        conn_finish(h, PW_ERR_IO);
        return;
    }
    h->connected = 1;
    uv_tcp_nodelay(&h->tcp, 1);
    conn_set_state(h, HC_BUSY);
    conn_send(h);
}

/* conn_start puts call on h (idle or new) and starts sending. */
static void conn_start(struct hconn *h, struct pw_hcall *call)
{
    struct pw_hclient *c = h->cl;
    h->call = call;
    call->conn = h;
    llhttp_init(&h->parser, HTTP_RESPONSE, &settings);
    h->parser.data = h;
    h->complete = h->received = h->hdr_err = h->headers_done = 0;
    h->ctype[0] = '\0';
    pw_buf_reset(&h->hname);
    pw_buf_reset(&h->hval);
    pw_buf_reset(&h->headers);
    pw_buf_reset(&h->body);
    uint64_t now = uv_now(c->loop);
    uv_timer_start(&h->timer, conn_on_timer, call->deadline > now ? call->deadline - now : 0, 0);
    if (h->state == HC_IDLE) {
        c->nidle--;
        pw_list_remove(&h->link);
        pw_list_push_tail(&c->busy, &h->link);
        conn_set_state(h, HC_BUSY);
        conn_send(h);
    }
}

static void conn_new(struct pw_hclient *c, struct pw_hcall *call)
{
    struct hconn *h = pw_xcalloc(1, sizeof(*h));
    h->cl = c;
    h->state = HC_CONNECTING;
    pw_buf_init(&h->hname, 256);
    pw_buf_init(&h->hval, MAX_HEADER_BYTES);
    pw_buf_init(&h->headers, MAX_HEADER_BYTES);
    pw_buf_init(&h->body, c->opts.max_body);
    uv_tcp_init(c->loop, &h->tcp);
    uv_timer_init(c->loop, &h->timer);
    h->tcp.data = h->timer.data = h;
    h->connect.data = h;
    h->open_handles = 2;
    pw_list_push_tail(&c->busy, &h->link);
    c->nconns++;
    c->connects++;
    conn_start(h, call);
    int rv = uv_tcp_connect(&h->connect, &h->tcp, (const struct sockaddr *)&c->addr, conn_on_connect);
    if (rv != 0) {
        pw_log_debug(COMP, "conn %p: connect: %s", (void *)h, uv_strerror(rv));
        h->pending_err = PW_ERR_IO;
        uv_timer_start(&h->timer, conn_on_timer, 0, 0);
    }
}

/* ---- the client ---- */

static void client_on_sweep(uv_timer_t *t)
{
    struct pw_hclient *c = t->data;
    uint64_t now = uv_now(c->loop);
    struct pw_list *e, *tmp;
    pw_list_foreach_safe(e, tmp, &c->queue) {
        struct pw_hcall *call = pw_container_of(e, struct pw_hcall, link);
        if (call->deadline > now && !call->refused)
            continue;
        pw_list_remove(&call->link);
        c->nqueued--;
        call_fail(call, call->refused ? PW_ERR_LIMIT : PW_ERR_TIMEOUT);
        free(call->wire);
        free(call);
        if (c->closing)
            return;
    }
    if (c->nqueued == 0)
        uv_timer_stop(&c->sweep);
}

static void client_dispatch(struct pw_hclient *c)
{
    while (!c->closing && c->nqueued > 0) {
        struct pw_list *e = pw_list_head(&c->queue);
        struct pw_hcall *call = pw_container_of(e, struct pw_hcall, link);
        struct pw_list *ie = pw_list_tail(&c->idle);
        if (ie == NULL && c->nconns >= c->opts.max_conns)
            break;
        pw_list_remove(&call->link);
        c->nqueued--;
        if (ie != NULL) {
            struct hconn *h = pw_container_of(ie, struct hconn, link);
            uv_timer_stop(&h->timer);
            conn_start(h, call);
        } else {
            conn_new(c, call);
        }
    }
    if (c->nqueued == 0 && c->sweep_open)
        uv_timer_stop(&c->sweep);
}

int pw_hclient_new(uv_loop_t *loop, const struct sockaddr *addr, const struct pw_hclient_opts *opts,
                   struct pw_hclient **out)
{
    settings_setup();
    struct pw_hclient *c = pw_xcalloc(1, sizeof(*c));
    c->loop = loop;
    size_t alen = addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    memcpy(&c->addr, addr, alen);
    if (opts != NULL)
        c->opts = *opts;
    else
        pw_hclient_opts_default(&c->opts);
    if (c->opts.max_conns == 0)
        c->opts.max_conns = 1;
    char ip[64] = "";
    int port;
    if (addr->sa_family == AF_INET6) {
        uv_ip6_name((const struct sockaddr_in6 *)addr, ip, sizeof(ip));
        port = ntohs(((const struct sockaddr_in6 *)addr)->sin6_port);
        snprintf(c->host, sizeof(c->host), "[%s]:%d", ip, port);
    } else {
        uv_ip4_name((const struct sockaddr_in *)addr, ip, sizeof(ip));
        port = ntohs(((const struct sockaddr_in *)addr)->sin_port);
        snprintf(c->host, sizeof(c->host), "%s:%d", ip, port);
    }
    pw_list_init(&c->idle);
    pw_list_init(&c->busy);
    pw_list_init(&c->queue);
    uv_timer_init(loop, &c->sweep);
    c->sweep.data = c;
    c->sweep_open = 1;
    *out = c;
    return PW_OK;
}

static void client_on_sweep_close(uv_handle_t *hd)
{
    struct pw_hclient *c = hd->data;
    c->sweep_open = 0;
    client_maybe_free(c);
}

static void client_maybe_free(struct pw_hclient *c)
{
    if (c->nconns == 0 && !c->sweep_open)
        free(c);
}

void pw_hclient_close(struct pw_hclient *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    struct pw_list *e, *tmp;
    pw_list_foreach_safe(e, tmp, &c->queue) {
        struct pw_hcall *call = pw_container_of(e, struct pw_hcall, link);
        pw_list_remove(&call->link);
        free(call->wire);
        free(call);
    }
    c->nqueued = 0;
    pw_list_foreach_safe(e, tmp, &c->idle) conn_close(pw_container_of(e, struct hconn, link));
    pw_list_foreach_safe(e, tmp, &c->busy) {
        struct hconn *h = pw_container_of(e, struct hconn, link);
        /* A connection handing an answer to its callback is closed when that returns. */
        if (h->state == HC_FINISHING)
            h->state = HC_IDLE, c->nidle++;
        conn_close(h);
    }
    uv_close((uv_handle_t *)&c->sweep, client_on_sweep_close);
}

/* client_submit formats a request and queues it (see pw_hclient_request). */
static struct pw_hcall *client_submit(struct pw_hclient *c, const char *method, const char *path,
                                      const char *extra_headers, const void *body, size_t len,
                                      int64_t timeout_ms, pw_hclient_cb cb, const struct pw_hstream_cbs *scbs,
                                      void *arg)
{
    assert(!c->closing);
    struct pw_hcall *call = pw_xcalloc(1, sizeof(*call));
    call->cl = c;
    call->cb = cb;
    call->scbs = scbs;
    call->arg = arg;
    call->head = strcmp(method, "HEAD") == 0;
    call->timeout_ms = (uint64_t)(timeout_ms > 0 ? timeout_ms : 1);
    call->deadline = uv_now(c->loop) + call->timeout_ms;
    struct pw_buf b;
    pw_buf_init(&b, SIZE_MAX / 2);
    pw_buf_printf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %zu\r\n%s%s\r\n", method, path, c->host, len,
                  c->opts.keepalive ? "" : "Connection: close\r\n", extra_headers ? extra_headers : "");
    if (len > 0)
        pw_buf_add(&b, body, len);
    call->wire = pw_buf_steal(&b, &call->wire_len);
    pw_buf_fini(&b);
    /* A refused request is answered from the sweep timer: never from inside this call. */
    call->refused = c->nqueued >= c->opts.max_queue;
    if (call->refused) {
        pw_list_push_head(&c->queue, &call->link);
        c->nqueued++;
    } else {
        pw_list_push_tail(&c->queue, &call->link);
        c->nqueued++;
        client_dispatch(c);
    }
    if (call->conn == NULL && !uv_is_active((uv_handle_t *)&c->sweep))
        uv_timer_start(&c->sweep, client_on_sweep, QUEUE_SWEEP_MS, QUEUE_SWEEP_MS);
    return call;
}

struct pw_hcall *pw_hclient_request(struct pw_hclient *c, const char *method, const char *path,
                                    const char *extra_headers, const void *body, size_t len,
                                    int64_t timeout_ms, pw_hclient_cb cb, void *arg)
{
    assert(cb != NULL);
    return client_submit(c, method, path, extra_headers, body, len, timeout_ms, cb, NULL, arg);
}

struct pw_hcall *pw_hclient_stream(struct pw_hclient *c, const char *method, const char *path,
                                   const char *extra_headers, const void *body, size_t len,
                                   int64_t timeout_ms, const struct pw_hstream_cbs *cbs, void *arg)
{
    assert(cbs != NULL && cbs->on_headers != NULL && cbs->on_body != NULL && cbs->on_end != NULL);
    return client_submit(c, method, path, extra_headers, body, len, timeout_ms, NULL, cbs, arg);
}

void pw_hcall_pause(struct pw_hcall *call)
{
    struct hconn *h = call->conn;
    if (call->paused)
        return;
    call->paused = 1;
    if (h == NULL || h->state != HC_BUSY)
        return;
    if (h->reading) {
        uv_read_stop((uv_stream_t *)&h->tcp);
        h->reading = 0;
    }
    if (h->headers_done)
        uv_timer_stop(&h->timer);
}

void pw_hcall_resume(struct pw_hcall *call)
{
    struct hconn *h = call->conn;
    if (!call->paused)
        return;
    call->paused = 0;
    if (h == NULL || h->state != HC_BUSY)
        return; /* not connected yet: reading starts once the request is sent */
    if (!h->reading) {
        int rv = uv_read_start((uv_stream_t *)&h->tcp, conn_on_alloc, conn_on_read);
        if (rv != 0) {
            /* Answered from the timer: never from inside this call. */
            pw_log_debug(COMP, "conn %p: read start: %s", (void *)h, uv_strerror(rv));
            h->pending_err = PW_ERR_IO;
            uv_timer_start(&h->timer, conn_on_timer, 0, 0);
            return;
        }
        h->reading = 1;
    }
    if (h->headers_done)
        stream_arm_timer(h);
}

void pw_hcall_cancel(struct pw_hcall *call)
{
    struct pw_hclient *c = call->cl;
    if (call->conn == NULL) {
        pw_list_remove(&call->link);
        c->nqueued--;
        free(call->wire);
        free(call);
        return;
    }
    conn_close(call->conn); /* frees call */
}

void pw_hclient_stats(const struct pw_hclient *c, struct pw_hclient_stats *out)
{
    out->conns = c->nconns;
    out->idle = c->nidle;
    out->queued = c->nqueued;
    out->connects = c->connects;
}
