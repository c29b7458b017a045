/* http.c — a small HTTP/1.1 server on libuv with llhttp (see pw/http.h).
 *
 * The request parser (pw_http_parser_*) knows nothing of sockets so that it can be fuzzed; the
 * connection layer below it reads, feeds the parser, hands complete requests to the handler
 * one at a time and writes the answers. */
#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http_internal.h"
#include "pw/error.h"
#include "pw/log.h"

#define COMP "http"

void pw_http_limits_default(struct pw_http_limits *l)
{
    l->max_header_bytes = 16 * 1024;
    l->max_body_bytes = 1024 * 1024;
    l->max_headers = 64;
    l->max_connections = 1024;
    l->idle_timeout_ms = 60 * 1000;
}

/* ---- requests ---- */

static struct pw_http_req *req_new(const struct pw_http_limits *lim)
{
    struct pw_http_req *r = pw_xcalloc(1, sizeof(*r));
    r->method = "";
    r->query = "";
    /* The request target shares the header budget: it is part of the request head. */
    pw_buf_init(&r->url, lim->max_header_bytes);
    pw_buf_init(&r->hdrs, lim->max_header_bytes);
    pw_buf_init(&r->body, lim->max_body_bytes);
    return r;
}

void pw_http_req_free(struct pw_http_req *r)
{
    if (r == NULL)
        return;
    pw_buf_fini(&r->url);
    pw_buf_fini(&r->hdrs);
    pw_buf_fini(&r->body);
    free(r->headers);
    free(r);
}

const char *pw_http_req_method(const struct pw_http_req *r) { return r->method; }
const char *pw_http_req_path(const struct pw_http_req *r) { return r->url.data ? r->url.data : ""; }
const char *pw_http_req_query(const struct pw_http_req *r) { return r->query; }

const char *pw_http_req_header(const struct pw_http_req *r, const char *name)
{
    for (size_t i = 0; i < r->nheaders; i++) {
        if (strcasecmp(r->hdrs.data + r->headers[i].name, name) == 0)
            return r->hdrs.data + r->headers[i].value;
    }
    return NULL;
}

const char *pw_http_req_body(const struct pw_http_req *r, size_t *len)
{
    if (len != NULL)
        *len = r->body.len;
    return r->body.data ? r->body.data : "";
}

int pw_http_req_gone(const struct pw_http_req *r) { return r->gone; }
void pw_http_req_set_user(struct pw_http_req *r, void *user) { r->user = user; }
void *pw_http_req_user(const struct pw_http_req *r) { return r->user; }

/* ---- the parser ---- */

static struct pw_http_parser *parser_of(llhttp_t *llh) { return llh->data; }

/* parser_fail records why the request is refused and stops llhttp with HPE_USER. */
static int parser_fail(struct pw_http_parser *p, int status, const char *code, const char *msg)
{
    p->err_status = status;
    p->err_code = code;
    pw_strlcpy(p->err_msg, msg, sizeof(p->err_msg));
    llhttp_set_error_reason(&p->llh, p->err_msg);
    return HPE_USER;
}

static int fail_headers(struct pw_http_parser *p, const char *msg)
{
    return parser_fail(p, 431, "headers_too_large", msg);
}

static int fail_body(struct pw_http_parser *p)
{
    return parser_fail(p, 413, "body_too_large", "request body too large");
}

static int on_message_begin(llhttp_t *llh)
{
    struct pw_http_parser *p = parser_of(llh);
    assert(p->req == NULL && !p->complete);
    p->req = req_new(&p->lim);
    p->hstate = HTTP_HDR_NONE;
    p->nfields = 0;
    p->ext_bytes = 0;
    p->in_trailers = 0;
    p->expect_continue = 0;
    return 0;
}

static int on_url(llhttp_t *llh, const char *at, size_t len)
{
    struct pw_http_parser *p = parser_of(llh);
    if (pw_buf_add(&p->req->url, at, len) != PW_OK)
        return parser_fail(p, 414, "uri_too_long", "request target too long");
    return 0;
}

/* on_url_complete accepts only origin-form targets ("/path?query") and splits them in place. */
static int on_url_complete(llhttp_t *llh)
{
    struct pw_http_parser *p = parser_of(llh);
    struct pw_http_req *r = p->req;
    if (r->url.len == 0 || r->url.data[0] != '/')
        return parser_fail(p, 400, "bad_request", "request target must be an absolute path");
    for (size_t i = 0; i < r->url.len; i++) {
        unsigned char c = (unsigned char)r->url.data[i];
        if (c <= 0x20 || c >= 0x7f || c == '#')
            return parser_fail(p, 400, "bad_request", "invalid character in request target");
    }
    char *q = strchr(r->url.data, '?');
    if (q != NULL) {
        *q = '\0';
        r->query = q + 1;
    }
    return 0;
}

static int hdr_name_done(struct pw_http_parser *p)
{
    struct pw_http_req *r = p->req;
    if (pw_buf_add(&r->hdrs, "", 1) != PW_OK)
        return fail_headers(p, "header fields too large");
    p->cur_value = r->hdrs.len;
    p->hstate = HTTP_HDR_VALUE;
    return 0;
}

/* hdr_line_done ends the current header line: trims the value's trailing whitespace and, for
 * headers (not trailers), records it. */
static int hdr_line_done(struct pw_http_parser *p)
{
    struct pw_http_req *r = p->req;
    int rv;
    if (p->hstate == HTTP_HDR_NONE)
        return 0;
    if (p->hstate == HTTP_HDR_FIELD && (rv = hdr_name_done(p)) != 0)
        return rv;
    while (r->hdrs.len > p->cur_value &&
           (r->hdrs.data[r->hdrs.len - 1] == ' ' || r->hdrs.data[r->hdrs.len - 1] == '\t'))
        r->hdrs.data[--r->hdrs.len] = '\0';
    if (pw_buf_add(&r->hdrs, "", 1) != PW_OK)
        return fail_headers(p, "header fields too large");
    p->hstate = HTTP_HDR_NONE;
    if (p->in_trailers)
        return 0;
    if (r->nheaders % 8 == 0)
        r->headers = pw_xrealloc(r->headers, (r->nheaders + 8) * sizeof(*r->headers));
    r->headers[r->nheaders].name = p->cur_name;
    r->headers[r->nheaders].value = p->cur_value;
    r->nheaders++;
    return 0;
}

static int on_header_field(llhttp_t *llh, const char *at, size_t len)
{
    struct pw_http_parser *p = parser_of(llh);
    int rv;
    if (p->hstate == HTTP_HDR_VALUE && (rv = hdr_line_done(p)) != 0)
        return rv;
    if (p->hstate == HTTP_HDR_NONE) {
        if (p->nfields >= p->lim.max_headers)
            return fail_headers(p, "too many header fields");
        p->nfields++;
        p->cur_name = p->req->hdrs.len;
        p->hstate = HTTP_HDR_FIELD;
    }
    if (pw_buf_add(&p->req->hdrs, at, len) != PW_OK)
        return fail_headers(p, "header fields too large");
    return 0;
}

static int on_header_field_complete(llhttp_t *llh)
{
    struct pw_http_parser *p = parser_of(llh);
    return p->hstate == HTTP_HDR_FIELD ? hdr_name_done(p) : 0;
}

static int on_header_value(llhttp_t *llh, const char *at, size_t len)
{
    struct pw_http_parser *p = parser_of(llh);
    int rv;
    if (p->hstate == HTTP_HDR_FIELD && (rv = hdr_name_done(p)) != 0)
        return rv;
    if (p->hstate != HTTP_HDR_VALUE)
        return parser_fail(p, 400, "bad_request", "header value without a name");
    if (pw_buf_add(&p->req->hdrs, at, len) != PW_OK)
        return fail_headers(p, "header fields too large");
    return 0;
}

static int on_header_value_complete(llhttp_t *llh) { return hdr_line_done(parser_of(llh)); }

static int on_headers_complete(llhttp_t *llh)
{
    struct pw_http_parser *p = parser_of(llh);
    struct pw_http_req *r = p->req;
    int rv = hdr_line_done(p);
    if (rv != 0)
        return rv;
    p->in_trailers = 1;
    r->method = llhttp_method_name((llhttp_method_t)llh->method);
    r->head = llh->method == HTTP_HEAD;
    r->http_major = llh->http_major;
    r->http_minor = llh->http_minor;
    if (r->http_major != 1)
        return parser_fail(p, 400, "bad_request", "unsupported HTTP version");
    /* Refuse an announced oversized body before a byte of it arrives. */
    if ((llh->flags & F_CONTENT_LENGTH) && llh->content_length > p->lim.max_body_bytes)
        return fail_body(p);
    const char *expect = pw_http_req_header(r, "Expect");
    if (expect != NULL && strcasecmp(expect, "100-continue") == 0 && r->http_minor >= 1 &&
        ((llh->flags & F_CHUNKED) || llh->content_length > 0))
        p->expect_continue = 1;
    return 0;
}

static int on_body(llhttp_t *llh, const char *at, size_t len)
{
    struct pw_http_parser *p = parser_of(llh);
    p->expect_continue = 0;
    if (pw_buf_add(&p->req->body, at, len) != PW_OK)
        return fail_body(p);
    return 0;
}

/* on_chunk_header refuses a chunk that cannot fit before its data arrives. */
static int on_chunk_header(llhttp_t *llh)
{
    struct pw_http_parser *p = parser_of(llh);
    if (llh->content_length > p->lim.max_body_bytes - p->req->body.len)
        return fail_body(p);
    return 0;
}

/* Chunk extensions are ignored, but bounded like a header so they cannot stream forever. */
static int on_chunk_extension(llhttp_t *llh, const char *at, size_t len)
{
    struct pw_http_parser *p = parser_of(llh);
    p->ext_bytes += len;
    if (p->ext_bytes > p->lim.max_header_bytes)
        return parser_fail(p, 400, "bad_request", "chunk extensions too long");
    return 0;
}

/* on_message_complete pauses llhttp so that the request is handled before the next one (of a
 * pipeline) is parsed. */
static int on_message_complete(llhttp_t *llh)
{
    struct pw_http_parser *p = parser_of(llh);
    int rv = hdr_line_done(p);
    if (rv != 0)
        return rv;
    p->req->keep_alive = llhttp_should_keep_alive(llh) && !llh->upgrade;
    p->complete = 1;
    return HPE_PAUSED;
}

static const llhttp_settings_t parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_url_complete = on_url_complete,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_chunk_header = on_chunk_header,
    .on_chunk_extension_name = on_chunk_extension,
    .on_chunk_extension_value = on_chunk_extension,
    .on_message_complete = on_message_complete,
};

void pw_http_parser_init(struct pw_http_parser *p, const struct pw_http_limits *lim)
{
    memset(p, 0, sizeof(*p));
    p->lim = *lim;
    llhttp_init(&p->llh, HTTP_REQUEST, &parser_settings);
    p->llh.data = p;
}

void pw_http_parser_fini(struct pw_http_parser *p)
{
    pw_http_req_free(p->req);
    p->req = NULL;
}

enum pw_http_parse pw_http_parser_feed(struct pw_http_parser *p, const char *data, size_t len,
                                       size_t *used)
{
    *used = 0;
    if (p->err_status != 0)
        return PW_HTTP_PARSE_ERROR;
    assert(!p->complete);
    if (len == 0)
        return PW_HTTP_PARSE_MORE;
    enum llhttp_errno e = llhttp_execute(&p->llh, data, len);
    const char *pos = llhttp_get_error_pos(&p->llh);
    if (e != HPE_OK && pos != NULL && pos >= data && pos <= data + len)
        *used = (size_t)(pos - data);
    /* Our callbacks' refusals come back as HPE_USER or as llhttp's HPE_CB_* codes. */
    if (e != HPE_OK && e != HPE_PAUSED && p->err_status != 0)
        return PW_HTTP_PARSE_ERROR;
    switch (e) {
    case HPE_OK:
        *used = len;
        return PW_HTTP_PARSE_MORE;
    case HPE_PAUSED:
        if (p->complete)
            return PW_HTTP_PARSE_REQUEST;
        parser_fail(p, 500, "internal", "parser paused unexpectedly");
        return PW_HTTP_PARSE_ERROR;
    case HPE_PAUSED_UPGRADE:
        parser_fail(p, 400, "bad_request", "protocol upgrade not supported");
        return PW_HTTP_PARSE_ERROR;
    default: {
        const char *why = llhttp_get_error_reason(&p->llh);
        parser_fail(p, 400, "bad_request", why != NULL ? why : llhttp_errno_name(e));
        return PW_HTTP_PARSE_ERROR;
    }
    }
}

struct pw_http_req *pw_http_parser_take(struct pw_http_parser *p)
{
    assert(p->complete && p->req != NULL);
    struct pw_http_req *r = p->req;
    p->req = NULL;
    p->complete = 0;
    llhttp_resume(&p->llh);
    return r;
}

/* ---- responses ---- */

#define HTTP_REASON_MAP(X)                                                                     \
    X(100, "Continue") X(101, "Switching Protocols") X(200, "OK") X(201, "Created")             \
    X(202, "Accepted") X(203, "Non-Authoritative Information") X(204, "No Content")            \
    X(205, "Reset Content") X(206, "Partial Content") X(300, "Multiple Choices")               \
    X(301, "Moved Permanently") X(302, "Found") X(303, "See Other") X(304, "Not Modified")     \
    X(307, "Temporary Redirect") X(308, "Permanent Redirect") X(400, "Bad Request")            \
    X(401, "Unauthorized") X(402, "Payment Required") X(403, "Forbidden") X(404, "Not Found")  \
    X(405, "Method Not Allowed") X(406, "Not Acceptable") X(408, "Request Timeout")            \
    X(409, "Conflict") X(410, "Gone") X(411, "Length Required") X(412, "Precondition Failed")  \
    X(413, "Payload Too Large") X(414, "URI Too Long") X(415, "Unsupported Media Type")        \
    X(416, "Range Not Satisfiable") X(417, "Expectation Failed") X(421, "Misdirected Request") \
    X(422, "Unprocessable Entity") X(425, "Too Early") X(426, "Upgrade Required")              \
    X(428, "Precondition Required") X(429, "Too Many Requests")                                \
    X(431, "Request Header Fields Too Large") X(500, "Internal Server Error")                  \
    X(501, "Not Implemented") X(502, "Bad Gateway") X(503, "Service Unavailable")              \
    X(504, "Gateway Timeout") X(505, "HTTP Version Not Supported")

const char *pw_http_reason(int status)
{
    switch (status) {
#define HTTP_REASON_CASE(code, str) \
    case code:                      \
        return str;
        HTTP_REASON_MAP(HTTP_REASON_CASE)
#undef HTTP_REASON_CASE
    default:
        return "Unknown";
    }
}

int pw_http_format_response(struct pw_buf *out, int status, const char *content_type,
                            const char *body, size_t len, const char *extra_headers, int flags)
{
    /* 1xx, 204 and 304 carry neither a body nor its framing. */
    int bodyless = status < 200 || status == 204 || status == 304;
    /* Every response goes through here: no printf. */
    int rv = pw_buf_adds(out, "HTTP/1.1 ");
    if (rv == PW_OK)
        rv = pw_buf_add_u64(out, (uint64_t)(unsigned)status);
    if (rv == PW_OK)
        rv = pw_buf_adds(out, " ");
    if (rv == PW_OK)
        rv = pw_buf_adds(out, pw_http_reason(status));
    if (rv == PW_OK && !bodyless) {
        rv = pw_buf_adds(out, "\r\nContent-Type: ");
        if (rv == PW_OK)
            rv = pw_buf_adds(out, content_type != NULL ? content_type : "application/json");
        if (rv == PW_OK)
            rv = pw_buf_adds(out, "\r\nContent-Length: ");
        if (rv == PW_OK)
            rv = pw_buf_add_u64(out, len);
    }
    if (rv == PW_OK)
        rv = pw_buf_adds(out, "\r\n");
    if (rv == PW_OK && (flags & PW_HTTP_FMT_CLOSE))
        rv = pw_buf_adds(out, "Connection: close\r\n");
    else if (rv == PW_OK && (flags & PW_HTTP_FMT_KEEPALIVE))
        rv = pw_buf_adds(out, "Connection: keep-alive\r\n");
    if (rv == PW_OK && extra_headers != NULL)
        rv = pw_buf_adds(out, extra_headers);
    if (rv == PW_OK)
        rv = pw_buf_adds(out, "\r\n");
    if (rv == PW_OK && !bodyless && !(flags & PW_HTTP_FMT_NOBODY))
        rv = pw_buf_add(out, body, len);
    return rv;
}

int pw_http_format_error(struct pw_buf *out, const char *code, const char *message)
{
    int rv = pw_buf_adds(out, "{\"error\":{\"code\":");
    if (rv == PW_OK)
        rv = pw_buf_add_json_str(out, code);
    if (rv == PW_OK)
        rv = pw_buf_adds(out, ",\"message\":");
    if (rv == PW_OK)
        rv = pw_buf_add_json_str(out, message);
    if (rv == PW_OK)
        rv = pw_buf_adds(out, "}}");
    return rv;
}

/* ---- the server ---- */

#define READ_CHUNK (64 * 1024)
/* Pipelined input buffered while a request is at the handler; beyond it reading pauses. */
#define IN_HIGH_WATER (64 * 1024)
/* How long a closing connection discards late input so that the peer reads our answer. */
#define LINGER_MS 2000

struct pw_http_server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    struct pw_http_limits lim;
    pw_http_handler handler;
    void *arg;
    int port;
    int closing;
    /* The listener, every connection until freed and every gone request until answered. */
    size_t refs;
    struct pw_list conns; /* open connections (struct http_conn.link) */
    struct pw_http_stats stats;
    char rbuf[READ_CHUNK]; /* one read at a time on the loop thread: shared by all */
};

/* X(state, comment) */
#define CONN_STATE_MAP(X)                                                                 \
    X(READING)   /* waiting for or parsing a request; idle timer armed */                 \
    X(HANDLING)  /* a complete request is at the handler; no timer, input buffered */     \
    X(STREAMING) /* the handler streams the answer; idle timer armed while bytes queued */ \
    X(WRITING)   /* the response is being written; idle timer bounds the write */         \
    X(LINGERING) /* answered and shut down; discarding input until EOF or timer */        \
    X(CLOSING)   /* uv_close called; freed when both handles' close callbacks ran */

enum conn_state {
#define CONN_STATE_ENUM(name) CONN_##name,
    CONN_STATE_MAP(CONN_STATE_ENUM)
#undef CONN_STATE_ENUM
};

static const char *const conn_state_names[] = {
#define CONN_STATE_NAME(name) #name,
    CONN_STATE_MAP(CONN_STATE_NAME)
#undef CONN_STATE_NAME
};

struct http_conn {
    struct pw_http_server *server;
    uv_tcp_t tcp;
    uv_timer_t timer; /* initialized only for accepted connections (nhandles == 2) */
    int nhandles;     /* handles not yet through their close callback */
    int counted;      /* counts in stats.connections */
    int reading;
    int close_after; /* close once the response in flight is written */
    enum conn_state state;
    struct pw_list link;
    struct pw_http_parser parser;
    struct pw_http_req *req; /* at the handler (CONN_HANDLING, CONN_STREAMING) */
    struct pw_buf in;        /* received, not yet parsed */
    size_t nwrites;          /* uv_write requests not yet completed */
    /* The streamed answer (CONN_STREAMING); reset for every request. */
    int chunked;             /* body bytes go out as chunks */
    int nobody;              /* HEAD, 204, 304: body bytes are dropped */
    int drain_armed;         /* a write returned more than drain_low */
    int64_t remaining;       /* Content-Length bytes still expected, or -1 */
    pw_http_drain_cb drain_cb;
    void *drain_arg;
    size_t drain_low;
};

struct http_write {
    uv_write_t wr;
    struct http_conn *conn;
    char *data;
};

static void conn_close(struct http_conn *c);
static void conn_process(struct http_conn *c);

static void server_unref(struct pw_http_server *s)
{
    assert(s->refs > 0);
    if (--s->refs == 0) {
        assert(s->closing && pw_list_empty(&s->conns));
        free(s);
    }
}

static int conn_transition_ok(enum conn_state from, enum conn_state to)
{
    switch (from) {
    case CONN_READING: return to == CONN_HANDLING || to == CONN_WRITING || to == CONN_CLOSING;
    case CONN_HANDLING:
        return to == CONN_STREAMING || to == CONN_WRITING || to == CONN_LINGERING || to == CONN_CLOSING;
    case CONN_STREAMING: return to == CONN_WRITING || to == CONN_LINGERING || to == CONN_CLOSING;
    case CONN_WRITING: return to == CONN_READING || to == CONN_LINGERING || to == CONN_CLOSING;
    case CONN_LINGERING: return to == CONN_CLOSING;
    case CONN_CLOSING: return 0;
    }
    return 0;
}

static void set_state(struct http_conn *c, enum conn_state to)
{
    assert(conn_transition_ok(c->state, to));
    pw_log_debug(COMP, "conn %p: %s -> %s", (void *)c, conn_state_names[c->state],
                 conn_state_names[to]);
    c->state = to;
}

static void on_conn_timer(uv_timer_t *t)
{
    struct http_conn *c = t->data;
    pw_log_debug(COMP, "conn %p: timed out in %s", (void *)c, conn_state_names[c->state]);
    conn_close(c);
}

/* conn_arm_timer (re)starts the connection's one timer; ms <= 0 means no timeout. */
static void conn_arm_timer(struct http_conn *c, int64_t ms)
{
    if (ms > 0)
        uv_timer_start(&c->timer, on_conn_timer, (uint64_t)ms, 0);
    else
        uv_timer_stop(&c->timer);
}

static void on_conn_handle_close(uv_handle_t *h)
{
    struct http_conn *c = h->data;
    if (--c->nhandles > 0)
        return;
    struct pw_http_server *s = c->server;
    pw_http_parser_fini(&c->parser);
    pw_buf_fini(&c->in);
    free(c);
    server_unref(s);
}

/* conn_close starts the asynchronous teardown; a request at the handler becomes gone and keeps
 * the server alive until it is answered. */
static void conn_close(struct http_conn *c)
{
    struct pw_http_server *s = c->server;
    if (c->state == CONN_CLOSING)
        return;
    set_state(c, CONN_CLOSING);
    if (c->req != NULL) {
        c->req->conn = NULL;
        c->req->gone = 1;
        c->req = NULL;
        s->refs++;
    }
    if (c->counted) {
        s->stats.connections--;
        c->counted = 0;
    }
    if (pw_list_linked(&c->link))
        pw_list_remove(&c->link);
    uv_close((uv_handle_t *)&c->tcp, on_conn_handle_close);
    if (c->nhandles == 2)
        uv_close((uv_handle_t *)&c->timer, on_conn_handle_close);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct http_conn *c = h->data;
    *buf = uv_buf_init(c->server->rbuf, sizeof(c->server->rbuf));
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);

static void conn_read_start(struct http_conn *c)
{
    if (c->reading)
        return;
    int rv = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (rv != 0) {
        pw_log_debug(COMP, "conn %p: read start: %s", (void *)c, uv_strerror(rv));
        conn_close(c);
        return;
    }
    c->reading = 1;
}

static void conn_read_stop(struct http_conn *c)
{
    if (!c->reading)
        return;
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
}

static void on_write(uv_write_t *wr, int status);

/* conn_try_write writes what the socket takes of iov[0..n) at once, without a write request,
 * epoll_ctl or callback; only with no write in flight, so that it never overtakes a queued one.
 * Returns the bytes written (0: queue them all), or -1 when the connection failed and is
 * closing. */
static ssize_t conn_try_write(struct http_conn *c, const uv_buf_t *iov, unsigned int n)
{
    if (c->nwrites > 0)
        return 0;
    int rv = uv_try_write((uv_stream_t *)&c->tcp, iov, n);
    if (rv == UV_EAGAIN)
        return 0;
    if (rv < 0) {
        pw_log_debug(COMP, "conn %p: write: %s", (void *)c, uv_strerror(rv));
        conn_close(c);
        return -1;
    }
    return rv;
}

/* conn_queue writes data[off..len) with a write request, behind those in flight; data is
 * taken over and freed in on_write. May close the connection. */
static void conn_queue(struct http_conn *c, char *data, size_t off, size_t len)
{
    struct http_write *w = pw_xmalloc(sizeof(*w));
    w->conn = c;
    w->data = data;
    uv_buf_t b = {.base = data + off, .len = len - off};
    int rv = uv_write(&w->wr, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    if (rv != 0) {
        pw_log_debug(COMP, "conn %p: write: %s", (void *)c, uv_strerror(rv));
        free(data);
        free(w);
        conn_close(c);
        return;
    }
    c->nwrites++;
}

/* conn_write sends data (taken over; freed once written): directly as far as the socket takes
 * it, the rest queued. When the socket takes it all, no on_write follows and nwrites does not
 * change: a caller that waits for the write goes on through conn_await_written. May close the
 * connection. */
static void conn_write(struct http_conn *c, char *data, size_t len)
{
    uv_buf_t b = {.base = data, .len = len};
    ssize_t done = conn_try_write(c, &b, 1);
    if (done < 0 || (size_t)done == len) {
        free(data);
        return;
    }
    conn_queue(c, data, (size_t)done, len);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    free(req);
}

/* conn_linger shuts our side down after the last answer and reads until the peer closes, so
 * that unread input does not turn our close into a reset that destroys the answer. */
static void conn_linger(struct http_conn *c)
{
    set_state(c, CONN_LINGERING);
    uv_shutdown_t *sh = pw_xmalloc(sizeof(*sh));
    int rv = uv_shutdown(sh, (uv_stream_t *)&c->tcp, on_shutdown);
    if (rv != 0) {
        free(sh);
        conn_close(c);
        return;
    }
    int64_t idle = c->server->lim.idle_timeout_ms;
    conn_arm_timer(c, idle > 0 && idle < LINGER_MS ? idle : LINGER_MS);
    conn_read_start(c);
}

/* conn_written runs once a response is out: close, or go on with buffered pipelined input. */
static void conn_written(struct http_conn *c)
{
    if (c->close_after || c->server->closing) {
        conn_linger(c);
        return;
    }
    set_state(c, CONN_READING);
    conn_arm_timer(c, c->server->lim.idle_timeout_ms);
    conn_read_start(c);
    if (c->state == CONN_READING)
        conn_process(c);
}

static void on_conn_flushed(uv_timer_t *t)
{
    struct http_conn *c = t->data;
    conn_written(c);
}

/* conn_await_written goes on once the answer (CONN_WRITING) is out. With writes in flight,
 * on_write goes on after the last one and the idle timer bounds them meanwhile. With none
 * (the socket took the answer at once) the connection's timer, at 0 ms, goes on from the loop
 * rather than from here: the next pipelined request must never reach the handler from inside
 * the call that answered the previous one, which would also nest as deep as the pipeline is
 * long. The timer has nothing else to bound then, and costs no syscall. */
static void conn_await_written(struct http_conn *c)
{
    if (c->state != CONN_WRITING)
        return; /* the write failed: closing */
    if (c->nwrites > 0)
        conn_arm_timer(c, c->server->lim.idle_timeout_ms);
    else
        uv_timer_start(&c->timer, on_conn_flushed, 0, 0);
}

static void stream_written(struct http_conn *c);

static void on_write(uv_write_t *wr, int status)
{
    struct http_write *w = pw_container_of(wr, struct http_write, wr);
    struct http_conn *c = w->conn;
    free(w->data);
    free(w);
    c->nwrites--;
    if (c->state == CONN_CLOSING)
        return;
    if (status < 0) {
        pw_log_debug(COMP, "conn %p: write: %s", (void *)c, uv_strerror(status));
        conn_close(c);
        return;
    }
    /* Writes complete in order: in CONN_WRITING the last one out is the answer's end (an
     * earlier "100 Continue" completes before it). */
    if (c->state == CONN_WRITING && c->nwrites == 0)
        conn_written(c);
    else if (c->state == CONN_STREAMING)
        stream_written(c);
}

/* conn_send_response formats and sends one final response, then waits for its write. */
static void conn_send_response(struct http_conn *c, int status, const char *content_type,
                               const char *body, size_t len, const char *extra_headers, int flags)
{
    struct pw_buf out;
    size_t extra = (content_type ? strlen(content_type) : 0) +
                   (extra_headers ? strlen(extra_headers) : 0);
    pw_buf_init(&out, len + extra + 256);
    pw_buf_reserve(&out, len + extra + 128); /* one allocation: the head is under 128 bytes */
    int rv = pw_http_format_response(&out, status, content_type, body, len, extra_headers, flags);
    assert(rv == PW_OK);
    (void)rv;
    c->close_after = (flags & PW_HTTP_FMT_CLOSE) != 0;
    set_state(c, CONN_WRITING);
    size_t n;
    char *data = pw_buf_steal(&out, &n);
    conn_write(c, data, n);
    conn_await_written(c);
}

/* conn_reject answers a request the parser refused, then closes. */
static void conn_reject(struct http_conn *c)
{
    struct pw_http_parser *p = &c->parser;
    struct pw_buf body;
    pw_buf_init(&body, 1024);
    if (pw_http_format_error(&body, p->err_code, p->err_msg) != PW_OK) {
        pw_buf_reset(&body);
        pw_http_format_error(&body, p->err_code, "");
    }
    c->server->stats.rejected++;
    c->server->stats.rejected_by[p->err_status == 413   ? PW_HTTP_REJECT_BODY
                                 : p->err_status == 431 ? PW_HTTP_REJECT_HEADERS
                                                        : PW_HTTP_REJECT_MALFORMED]++;
    pw_log_info(COMP, "request refused with %d: %s", p->err_status, p->err_msg);
    conn_send_response(c, p->err_status, NULL, body.data, body.len, NULL, PW_HTTP_FMT_CLOSE);
    pw_buf_fini(&body);
}

static void conn_dispatch(struct http_conn *c, struct pw_http_req *r)
{
    struct pw_http_server *s = c->server;
    r->server = s;
    r->conn = c;
    c->req = r;
    c->drain_cb = NULL;
    c->drain_armed = 0;
    s->stats.requests++;
    set_state(c, CONN_HANDLING);
    uv_timer_stop(&c->timer);
    s->handler(s->arg, r);
}

/* buf_consume drops the first n bytes of b. */
static void buf_consume(struct pw_buf *b, size_t n)
{
    if (n == 0)
        return;
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
    b->data[b->len] = '\0';
}

/* conn_process parses buffered input until it needs more, a request is complete or it fails. */
static void conn_process(struct http_conn *c)
{
    size_t used = 0;
    assert(c->state == CONN_READING);
    enum pw_http_parse st = pw_http_parser_feed(&c->parser, c->in.data, c->in.len, &used);
    buf_consume(&c->in, used);
    switch (st) {
    case PW_HTTP_PARSE_MORE:
        if (c->parser.expect_continue) {
            c->parser.expect_continue = 0;
            conn_write(c, pw_xstrdup("HTTP/1.1 100 Continue\r\n\r\n"), 25);
        }
        break;
    case PW_HTTP_PARSE_REQUEST:
        conn_dispatch(c, pw_http_parser_take(&c->parser));
        break;
    case PW_HTTP_PARSE_ERROR:
        conn_read_stop(c);
        conn_reject(c);
        break;
    }
}

static void conn_received(struct http_conn *c, const char *data, size_t n)
{
    int rv;
    switch (c->state) {
    case CONN_READING:
        conn_arm_timer(c, c->server->lim.idle_timeout_ms);
        rv = pw_buf_add(&c->in, data, n);
        assert(rv == PW_OK);
        conn_process(c);
        break;
    case CONN_HANDLING:
    case CONN_STREAMING:
    case CONN_WRITING:
        /* Pipelined input waits its turn, unless no more requests will be read. */
        if (c->close_after)
            break;
        rv = pw_buf_add(&c->in, data, n);
        assert(rv == PW_OK);
        if (c->in.len >= IN_HIGH_WATER)
            conn_read_stop(c);
        break;
    case CONN_LINGERING:
    case CONN_CLOSING:
        break;
    }
    (void)rv;
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    struct http_conn *c = st->data;
    if (nread < 0) {
        if (nread != UV_EOF)
            pw_log_debug(COMP, "conn %p: read: %s", (void *)c, uv_strerror((int)nread));
        conn_close(c);
        return;
    }
    if (nread > 0)
        conn_received(c, buf->base, (size_t)nread);
}

static void server_accept(struct pw_http_server *s)
{
    struct http_conn *c = pw_xcalloc(1, sizeof(*c));
    c->server = s;
    c->state = CONN_READING;
    s->refs++;
    pw_http_parser_init(&c->parser, &s->lim);
    pw_buf_init(&c->in, IN_HIGH_WATER + READ_CHUNK);
    uv_tcp_init(s->loop, &c->tcp);
    c->tcp.data = c;
    c->nhandles = 1;
    int rv = uv_accept((uv_stream_t *)&s->listener, (uv_stream_t *)&c->tcp);
    if (rv != 0) {
        pw_log_warn(COMP, "accept: %s", uv_strerror(rv));
        conn_close(c);
        return;
    }
    if (s->stats.connections >= s->lim.max_connections) {
        s->stats.rejected++;
        s->stats.rejected_by[PW_HTTP_REJECT_CONNECTIONS]++;
        pw_log_warn(COMP, "connection refused: %llu connections open",
                    (unsigned long long)s->stats.connections);
        conn_close(c);
        return;
    }
    uv_timer_init(s->loop, &c->timer);
    c->timer.data = c;
    c->nhandles = 2;
    c->counted = 1;
    s->stats.connections++;
    pw_list_push_tail(&s->conns, &c->link);
    uv_tcp_nodelay(&c->tcp, 1);
    conn_arm_timer(c, s->lim.idle_timeout_ms);
    conn_read_start(c);
}

static void on_connection(uv_stream_t *ls, int status)
{
    struct pw_http_server *s = pw_container_of(ls, struct pw_http_server, listener);
    if (status < 0) {
        pw_log_warn(COMP, "listen: %s", uv_strerror(status));
        return;
    }
    server_accept(s);
}

static void on_listener_close(uv_handle_t *h)
{
    server_unref(h->data);
}

/* parse_addr fills ss from an IPv4 or IPv6 literal (brackets allowed around the latter). */
static int parse_addr(const char *host, int port, struct sockaddr_storage *ss)
{
    char buf[64];
    size_t n = strlen(host);
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {
        if (n - 2 >= sizeof(buf))
            return PW_ERR_INVAL;
        memcpy(buf, host + 1, n - 2);
        buf[n - 2] = '\0';
        host = buf;
    }
    memset(ss, 0, sizeof(*ss));
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)ss) == 0)
        return PW_OK;
    if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss) == 0)
        return PW_OK;
    return PW_ERR_INVAL;
}

int pw_http_server_new(uv_loop_t *loop, const char *host, int port, const struct pw_http_limits *lim,
                       pw_http_handler handler, void *arg, struct pw_http_server **out)
{
    struct sockaddr_storage ss;
    *out = NULL;
    if (loop == NULL || host == NULL || handler == NULL || port < 0 || port > 65535)
        return PW_ERR_INVAL;
    if (parse_addr(host, port, &ss) != PW_OK) {
        pw_log_error(COMP, "listen address is not an IP literal: %s", host);
        return PW_ERR_INVAL;
    }
    struct pw_http_server *s = pw_xcalloc(1, sizeof(*s));
    s->loop = loop;
    if (lim != NULL)
        s->lim = *lim;
    else
        pw_http_limits_default(&s->lim);
    s->handler = handler;
    s->arg = arg;
    s->refs = 1;
    pw_list_init(&s->conns);
    int rv = uv_tcp_init(loop, &s->listener);
    if (rv != 0) {
        pw_log_error(COMP, "tcp init: %s", uv_strerror(rv));
        free(s);
        return PW_ERR_IO;
    }
    s->listener.data = s;
    rv = uv_tcp_bind(&s->listener, (const struct sockaddr *)&ss, 0);
    if (rv == 0)
        rv = uv_listen((uv_stream_t *)&s->listener, 511, on_connection);
    struct sockaddr_storage bound;
    int blen = sizeof(bound);
    if (rv == 0)
        rv = uv_tcp_getsockname(&s->listener, (struct sockaddr *)&bound, &blen);
    if (rv != 0) {
        pw_log_error(COMP, "listen on %s:%d: %s", host, port, uv_strerror(rv));
        /* The handle is in the loop now: the server is freed by its close callback. */
        s->closing = 1;
        uv_close((uv_handle_t *)&s->listener, on_listener_close);
        return PW_ERR_IO;
    }
    if (bound.ss_family == AF_INET6)
        s->port = ntohs(((struct sockaddr_in6 *)&bound)->sin6_port);
    else
        s->port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
    pw_log_info(COMP, "listening on %s:%d", host, s->port);
    *out = s;
    return PW_OK;
}

int pw_http_server_port(const struct pw_http_server *s) { return s->port; }

void pw_http_server_stats(const struct pw_http_server *s, struct pw_http_stats *out) { *out = s->stats; }

void pw_http_server_close(struct pw_http_server *s)
{
    struct pw_list *pos, *tmp;
    if (s == NULL)
        return;
    assert(!s->closing);
    s->closing = 1;
    uv_close((uv_handle_t *)&s->listener, on_listener_close);
    pw_list_foreach_safe(pos, tmp, &s->conns) conn_close(pw_container_of(pos, struct http_conn, link));
}

/* req_release_unanswered frees a request whose connection is gone (or that never had one),
 * with its hold on the server. */
static void req_release_unanswered(struct pw_http_req *r)
{
    struct pw_http_server *s = r->server;
    int gone = r->gone;
    pw_http_req_free(r);
    if (s != NULL && gone)
        server_unref(s);
}

void pw_http_respond(struct pw_http_req *r, int status, const char *content_type, const char *body,
                     size_t len, const char *extra_headers)
{
    struct http_conn *c = r->conn;
    if (c == NULL) {
        /* Gone: nobody to answer; release the request and its hold on the server. */
        req_release_unanswered(r);
        return;
    }
    assert(c->req == r && c->state == CONN_HANDLING);
    assert(status >= 200 && status <= 599);
    int flags = 0;
    if (!r->keep_alive || c->server->closing)
        flags |= PW_HTTP_FMT_CLOSE;
    else if (r->http_minor == 0)
        flags |= PW_HTTP_FMT_KEEPALIVE;
    if (r->head)
        flags |= PW_HTTP_FMT_NOBODY;
    c->req = NULL;
    pw_http_req_free(r);
    conn_send_response(c, status, content_type, body, len, extra_headers, flags);
}

void pw_http_respond_error(struct pw_http_req *r, int status, const char *code, const char *message,
                           const char *extra_headers)
{
    struct pw_buf body;
    pw_buf_init(&body, 2 * 1024 * 1024);
    if (pw_http_format_error(&body, code, message) != PW_OK) {
        pw_buf_reset(&body);
        pw_http_format_error(&body, code, "");
    }
    pw_http_respond(r, status, NULL, body.data ? body.data : "", body.len, extra_headers);
    pw_buf_fini(&body);
}

/* ---- streamed answers ---- */

/* stream_timer_update bounds a client that stops reading: while writes are queued, the idle
 * timeout runs from the last write progress; with nothing queued the handler is producing and
 * no timer runs (as while a request is at the handler). */
static void stream_timer_update(struct http_conn *c, int progress)
{
    if (c->nwrites == 0)
        uv_timer_stop(&c->timer);
    else if (progress || !uv_is_active((uv_handle_t *)&c->timer))
        conn_arm_timer(c, c->server->lim.idle_timeout_ms);
}

static size_t conn_queued(struct http_conn *c)
{
    return uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp);
}

/* stream_send writes iov[0..n) in order: directly as far as the socket takes it (nothing is
 * queued before it), the rest copied into one queued write. May close the connection. */
static void stream_send(struct http_conn *c, const uv_buf_t *iov, unsigned int n)
{
    size_t total = 0, done = 0;
    for (unsigned int i = 0; i < n; i++)
        total += iov[i].len;
    if (total == 0 || c->state == CONN_CLOSING)
        return;
    ssize_t rv = conn_try_write(c, iov, n);
    if (rv < 0)
        return;
    done = (size_t)rv;
    if (done == total)
        return;
    char *data = pw_xmalloc(total - done), *p = data;
    for (unsigned int i = 0; i < n; i++) {
        size_t skip = PW_MIN(done, iov[i].len);
        done -= skip;
        memcpy(p, iov[i].base + skip, iov[i].len - skip);
        p += iov[i].len - skip;
    }
    conn_queue(c, data, 0, (size_t)(p - data));
    if (c->state == CONN_STREAMING)
        stream_timer_update(c, 0);
}

/* stream_reset forgets the streamed answer's state once the request leaves the connection. */
static void stream_reset(struct http_conn *c)
{
    c->chunked = c->nobody = c->drain_armed = 0;
    c->remaining = -1;
    c->drain_cb = NULL;
    c->drain_arg = NULL;
}

/* stream_written runs after a write of a streamed answer completed: the stall timer restarts
 * and the handler hears of a drained queue. */
static void stream_written(struct http_conn *c)
{
    stream_timer_update(c, 1);
    if (!c->drain_armed || c->drain_cb == NULL || conn_queued(c) > c->drain_low)
        return;
    c->drain_armed = 0;
    c->drain_cb(c->drain_arg, c->req);
}

void pw_http_respond_start(struct pw_http_req *r, int status, const char *content_type,
                           const char *extra_headers, int64_t content_length)
{
    struct http_conn *c = r->conn;
    if (c == NULL)
        return;
    assert(c->req == r && c->state == CONN_HANDLING);
    assert(status >= 200 && status <= 599);
    /* 204 and 304 carry neither a body nor its framing; HEAD gets the framing a GET would. */
    int bodyless = status == 204 || status == 304;
    c->nobody = r->head || bodyless;
    c->chunked = content_length < 0 && r->http_minor >= 1 && !bodyless;
    c->remaining = content_length < 0 ? -1 : content_length;
    c->drain_armed = 0;
    /* An HTTP/1.0 client cannot take chunks: the end of the connection ends the body. */
    c->close_after = !r->keep_alive || c->server->closing || (content_length < 0 && !c->chunked && !c->nobody);
    struct pw_buf out;
    pw_buf_init(&out, SIZE_MAX / 2);
    int rv = pw_buf_printf(&out, "HTTP/1.1 %d %s\r\n", status, pw_http_reason(status));
    if (!bodyless) {
        pw_buf_printf(&out, "Content-Type: %s\r\n", content_type != NULL ? content_type : "application/json");
        if (content_length >= 0)
            pw_buf_printf(&out, "Content-Length: %" PRId64 "\r\n", content_length);
        else if (c->chunked)
            pw_buf_adds(&out, "Transfer-Encoding: chunked\r\n");
    }
    if (c->close_after)
        pw_buf_adds(&out, "Connection: close\r\n");
    else if (r->http_minor == 0)
        pw_buf_adds(&out, "Connection: keep-alive\r\n");
    if (extra_headers != NULL)
        pw_buf_adds(&out, extra_headers);
    pw_buf_adds(&out, "\r\n");
    assert(rv == PW_OK);
    (void)rv;
    set_state(c, CONN_STREAMING);
    uv_timer_stop(&c->timer);
    uv_buf_t b = {.base = out.data, .len = out.len};
    stream_send(c, &b, 1);
    pw_buf_fini(&out);
}

size_t pw_http_respond_write(struct pw_http_req *r, const void *data, size_t len)
{
    struct http_conn *c = r->conn;
    if (c == NULL)
        return 0;
    assert(c->req == r && c->state == CONN_STREAMING);
    if (c->remaining >= 0) {
        /* Bytes beyond the announced Content-Length would corrupt the next answer. */
        if ((uint64_t)len > (uint64_t)c->remaining)
            len = (size_t)c->remaining;
        c->remaining -= (int64_t)len;
    }
    if (len > 0 && !c->nobody) {
        if (c->chunked) {
            char size[24];
            int n = snprintf(size, sizeof(size), "%zx\r\n", len);
            const uv_buf_t iov[3] = {{.base = size, .len = (size_t)n},
                                     {.base = (char *)data, .len = len},
                                     {.base = (char *)"\r\n", .len = 2}};
            stream_send(c, iov, 3);
        } else {
            const uv_buf_t iov = {.base = (char *)data, .len = len};
            stream_send(c, &iov, 1);
        }
        if (r->conn == NULL)
            return 0; /* the write failed: the connection is closing */
    }
    size_t queued = conn_queued(c);
    if (queued > c->drain_low)
        c->drain_armed = 1;
    return queued;
}

void pw_http_req_on_drain(struct pw_http_req *r, size_t low_water, pw_http_drain_cb cb, void *arg)
{
    struct http_conn *c = r->conn;
    if (c == NULL)
        return;
    assert(c->req == r);
    c->drain_cb = cb;
    c->drain_arg = arg;
    c->drain_low = low_water;
    c->drain_armed = c->state == CONN_STREAMING && conn_queued(c) > low_water;
}

void pw_http_respond_end(struct pw_http_req *r)
{
    struct http_conn *c = r->conn;
    if (c == NULL) {
        req_release_unanswered(r);
        return;
    }
    assert(c->req == r && c->state == CONN_STREAMING);
    if (!c->nobody && c->remaining > 0) {
        pw_log_warn(COMP, "conn %p: streamed answer ended %" PRId64 " bytes short of its Content-Length",
                    (void *)c, c->remaining);
        pw_http_respond_abort(r);
        return;
    }
    if (c->chunked && !c->nobody) {
        const uv_buf_t end = {.base = (char *)"0\r\n\r\n", .len = 5};
        stream_send(c, &end, 1);
        if (r->conn == NULL) {
            req_release_unanswered(r);
            return;
        }
    }
    c->req = NULL;
    pw_http_req_free(r);
    stream_reset(c);
    set_state(c, CONN_WRITING);
    conn_await_written(c);
}

void pw_http_respond_abort(struct pw_http_req *r)
{
    struct http_conn *c = r->conn;
    if (c == NULL) {
        req_release_unanswered(r);
        return;
    }
    assert(c->req == r && (c->state == CONN_HANDLING || c->state == CONN_STREAMING));
    pw_log_debug(COMP, "conn %p: answer aborted in %s", (void *)c, conn_state_names[c->state]);
    c->req = NULL;
    pw_http_req_free(r);
    stream_reset(c);
    c->close_after = 1;
    /* The shutdown goes out after what is queued: the client reads up to the cut, then EOF. */
    conn_linger(c);
}
