/* test_http.c — the HTTP server against real sockets.
 *
 * Each test runs a server on 127.0.0.1 (ephemeral port) on a private loop in the main thread,
 * and a client in a second thread that speaks plain blocking POSIX sockets with timeouts. The
 * client only records what it saw; the main thread asserts once both are done. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "pw/error.h"
#include "pw/http.h"
#include "pw/util.h"

enum mode {
    MODE_ECHO,  /* answer at once */
    MODE_DEFER, /* answer from a timer defer_ms later */
    MODE_HOLD,  /* keep the request until it is gone, then answer it */
    MODE_STREAM, /* streamed answers by path (stream_handler), else as MODE_ECHO */
};

#define NRESP 8
#define RESP_MAX 4096

struct fx {
    uv_loop_t loop;
    struct pw_http_server *srv;
    struct pw_http_limits lim;
    enum mode mode;
    uint64_t defer_ms;
    int port;
    uv_async_t async; /* client -> loop: close the server */
    uv_timer_t tick;  /* polls held requests and ends the test */
    uv_timer_t safety;
    int server_closed;
    int ndeferred;
    struct pw_http_req *held;
    int held_streaming; /* held was started as a streamed answer */
    size_t held_write_after_gone;
    int held_gone_at_handler;
    int held_gone;
    /* Streamed answers (MODE_STREAM, /big). */
    size_t big_total, big_high;
    size_t queued[64]; /* what the first writes of /big returned */
    size_t nqueued;
    size_t max_queued;
    int drains;
    int handler_calls; /* atomic: read by the client */
    int client_finished; /* atomic */
    int timed_out;
    struct pw_http_stats stats; /* at server close */
    void (*client)(struct fx *);
    /* What the client saw. */
    char resp[NRESP][RESP_MAX];
    int eof[NRESP];
    long ms[NRESP];
    size_t big_got;
    int big_intact;
    int npipelined; /* pipelined answers that arrived whole and in order */
    uintptr_t frame_lo, frame_hi; /* the handler's stack frames: how deep it was called */
};

static void stream_handler(struct fx *f, struct pw_http_req *r);

/* ---- the server side ---- */

/* large_respond answers with big_total bytes (byte i is i % 251) in one pw_http_respond. */
static void large_respond(struct fx *f, struct pw_http_req *r)
{
    char *body = pw_xmalloc(f->big_total);
    for (size_t i = 0; i < f->big_total; i++)
        body[i] = (char)(i % 251);
    pw_http_respond(r, 200, "application/octet-stream", body, f->big_total, NULL);
    free(body);
}

static void echo_respond(struct fx *f, struct pw_http_req *r)
{
    char body[2048];
    size_t blen;
    const char *b = pw_http_req_body(r, &blen);
    if (strcmp(pw_http_req_path(r), "/large") == 0) {
        large_respond(f, r);
        return;
    }
    if (strcmp(pw_http_req_path(r), "/stats") == 0) {
        struct pw_http_stats st;
        pw_http_server_stats(f->srv, &st);
        snprintf(body, sizeof(body), "conns=%llu reqs=%llu rejected=%llu",
                 (unsigned long long)st.connections, (unsigned long long)st.requests,
                 (unsigned long long)st.rejected);
    } else {
        const char *h = pw_http_req_header(r, "X-Custom-Header");
        snprintf(body, sizeof(body), "%s %s q=%s h=%s b=%.*s", pw_http_req_method(r),
                 pw_http_req_path(r), pw_http_req_query(r), h ? h : "-", (int)blen, b);
    }
    pw_http_respond(r, 200, "text/plain", body, strlen(body), "X-Served: test\r\n");
}

struct deferred {
    uv_timer_t timer;
    struct fx *f;
    struct pw_http_req *req;
};

static void deferred_closed(uv_handle_t *h)
{
    struct deferred *d = h->data;
    d->f->ndeferred--;
    free(d);
}

static void deferred_fire(uv_timer_t *t)
{
    struct deferred *d = t->data;
    echo_respond(d->f, d->req);
    uv_close((uv_handle_t *)t, deferred_closed);
}

static void handler(void *arg, struct pw_http_req *r)
{
    struct fx *f = arg;
    uintptr_t frame = (uintptr_t)__builtin_frame_address(0);
    __atomic_add_fetch(&f->handler_calls, 1, __ATOMIC_SEQ_CST);
    f->frame_lo = f->frame_lo == 0 ? frame : PW_MIN(f->frame_lo, frame);
    f->frame_hi = PW_MAX(f->frame_hi, frame);
    switch (f->mode) {
    case MODE_ECHO:
        echo_respond(f, r);
        break;
    case MODE_DEFER: {
        struct deferred *d = pw_xcalloc(1, sizeof(*d));
        d->f = f;
        d->req = r;
        pw_http_req_set_user(r, d);
        uv_timer_init(&f->loop, &d->timer);
        d->timer.data = d;
        f->ndeferred++;
        uv_timer_start(&d->timer, deferred_fire, f->defer_ms, 0);
        break;
    }
    case MODE_HOLD:
        f->held = r;
        f->held_gone_at_handler = pw_http_req_gone(r);
        pw_http_req_set_user(r, f);
        break;
    case MODE_STREAM:
        stream_handler(f, r);
        break;
    }
}

/* ---- streamed answers (MODE_STREAM) ---- */

#define BIG_BLOCK (64 * 1024)
#define BIG_LOW_WATER (64 * 1024)

/* A streamed answer in progress: "hello " at once, "world" from the timer, or /big's bytes
 * (byte i is i % 251) paced by the drain callback. */
struct streamer {
    uv_timer_t timer;
    struct fx *f;
    struct pw_http_req *req;
    size_t sent;
};

static void streamer_closed(uv_handle_t *h)
{
    struct streamer *st = h->data;
    st->f->ndeferred--;
    free(st);
}

static struct streamer *streamer_new(struct fx *f, struct pw_http_req *r)
{
    struct streamer *st = pw_xcalloc(1, sizeof(*st));
    st->f = f;
    st->req = r;
    uv_timer_init(&f->loop, &st->timer);
    st->timer.data = st;
    f->ndeferred++;
    return st;
}

static void world_fire(uv_timer_t *t)
{
    struct streamer *st = t->data;
    assert_int_equal(pw_http_respond_write(st->req, "world", 5), 0);
    pw_http_respond_end(st->req);
    uv_close((uv_handle_t *)t, streamer_closed);
}

/* big_pump writes /big's blocks until the connection's queue passes big_high or all is out. */
static void big_pump(struct streamer *st)
{
    struct fx *f = st->f;
    static unsigned char block[BIG_BLOCK];
    for (;;) {
        if (st->sent == f->big_total) {
            pw_http_respond_end(st->req);
            uv_close((uv_handle_t *)&st->timer, streamer_closed);
            return;
        }
        size_t n = PW_MIN((size_t)BIG_BLOCK, f->big_total - st->sent);
        for (size_t i = 0; i < n; i++)
            block[i] = (unsigned char)((st->sent + i) % 251);
        size_t q = pw_http_respond_write(st->req, block, n);
        st->sent += n;
        if (f->nqueued < PW_ARRAY_LEN(f->queued))
            f->queued[f->nqueued++] = q;
        f->max_queued = PW_MAX(f->max_queued, q);
        if (q > f->big_high)
            return; /* the drain callback goes on */
    }
}

static void big_drained(void *arg, struct pw_http_req *r)
{
    struct streamer *st = arg;
    assert_ptr_equal(r, st->req);
    st->f->drains++;
    big_pump(st);
}

static void stream_handler(struct fx *f, struct pw_http_req *r)
{
    const char *path = pw_http_req_path(r);
    if (strcmp(path, "/chunked") == 0 || strcmp(path, "/cl") == 0) {
        struct streamer *st = streamer_new(f, r);
        int64_t length = strcmp(path, "/cl") == 0 ? 11 : -1;
        pw_http_respond_start(r, 200, "text/plain", "X-Served: test\r\n", length);
        pw_http_respond_write(r, "hello ", 6);
        uv_timer_start(&st->timer, world_fire, 100, 0);
    } else if (strcmp(path, "/nocontent") == 0) {
        pw_http_respond_start(r, 204, "text/plain", "X-Served: test\r\n", -1);
        assert_int_equal(pw_http_respond_write(r, "dropped", 7), 0);
        pw_http_respond_end(r);
    } else if (strcmp(path, "/abort-cl") == 0) {
        pw_http_respond_start(r, 200, "text/plain", NULL, 100);
        pw_http_respond_write(r, "0123456789", 10);
        pw_http_respond_abort(r);
    } else if (strcmp(path, "/abort-chunked") == 0) {
        pw_http_respond_start(r, 200, "text/plain", NULL, -1);
        pw_http_respond_write(r, "partial", 7);
        pw_http_respond_abort(r);
    } else if (strcmp(path, "/hold") == 0) {
        pw_http_respond_start(r, 200, "text/plain", NULL, -1);
        pw_http_respond_write(r, "part1", 5);
        f->held = r;
        f->held_streaming = 1;
        f->held_gone_at_handler = pw_http_req_gone(r);
        pw_http_req_set_user(r, f);
    } else if (strcmp(path, "/stall") == 0) {
        /* Fill the connection's queue; the client never reads, so only the idle timeout ends
         * the answer (the request becomes gone). */
        static const unsigned char zeros[BIG_BLOCK];
        pw_http_respond_start(r, 200, "application/octet-stream", NULL, 1024 * 1024 * 1024);
        for (int i = 0; i < 4096 && !pw_http_req_gone(r); i++)
            if (pw_http_respond_write(r, zeros, sizeof(zeros)) > f->big_high)
                break;
        f->held = r;
        f->held_streaming = 1;
        pw_http_req_set_user(r, f);
    } else if (strcmp(path, "/big") == 0) {
        struct streamer *st = streamer_new(f, r);
        pw_http_req_on_drain(r, BIG_LOW_WATER, big_drained, st);
        pw_http_respond_start(r, 200, "application/octet-stream", NULL, (int64_t)f->big_total);
        big_pump(st);
    } else {
        echo_respond(f, r);
    }
}

static void close_server(struct fx *f)
{
    if (f->server_closed)
        return;
    pw_http_server_stats(f->srv, &f->stats);
    pw_http_server_close(f->srv);
    f->server_closed = 1;
}

static void on_async(uv_async_t *a) { close_server(a->data); }

static void on_tick(uv_timer_t *t)
{
    struct fx *f = t->data;
    if (f->held != NULL && pw_http_req_gone(f->held)) {
        assert_ptr_equal(pw_http_req_user(f->held), f);
        __atomic_store_n(&f->held_gone, 1, __ATOMIC_SEQ_CST);
        if (f->held_streaming) {
            /* Writes after the client left are dropped; end still frees the request. */
            f->held_write_after_gone = pw_http_respond_write(f->held, "late", 4) + 1;
            pw_http_respond_end(f->held);
        } else {
            pw_http_respond_error(f->held, 503, "gone", "nobody listens", NULL);
        }
        f->held = NULL;
    }
    if (f->server_closed && __atomic_load_n(&f->client_finished, __ATOMIC_SEQ_CST) &&
        f->held == NULL && f->ndeferred == 0) {
        uv_close((uv_handle_t *)&f->async, NULL);
        uv_close((uv_handle_t *)&f->tick, NULL);
        uv_close((uv_handle_t *)&f->safety, NULL);
    }
}

static void on_safety(uv_timer_t *t)
{
    struct fx *f = t->data;
    f->timed_out = 1;
    close_server(f);
}

static void *client_main(void *arg)
{
    struct fx *f = arg;
    f->client(f);
    uv_async_send(&f->async);
    __atomic_store_n(&f->client_finished, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

static void fx_init(struct fx *f, enum mode mode, void (*client)(struct fx *))
{
    memset(f, 0, sizeof(*f));
    pw_http_limits_default(&f->lim);
    f->mode = mode;
    f->defer_ms = 50;
    f->client = client;
}

/* fx_run serves until the client is done and every handle is closed. */
static void fx_run(struct fx *f)
{
    pthread_t th;
    assert_int_equal(uv_loop_init(&f->loop), 0);
    assert_int_equal(pw_http_server_new(&f->loop, "127.0.0.1", 0, &f->lim, handler, f, &f->srv),
                     PW_OK);
    f->port = pw_http_server_port(f->srv);
    assert_true(f->port > 0);
    uv_async_init(&f->loop, &f->async, on_async);
    f->async.data = f;
    uv_timer_init(&f->loop, &f->tick);
    f->tick.data = f;
    uv_timer_start(&f->tick, on_tick, 10, 10);
    uv_timer_init(&f->loop, &f->safety);
    f->safety.data = f;
    uv_timer_start(&f->safety, on_safety, 20000, 0);
    assert_int_equal(pthread_create(&th, NULL, client_main, f), 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    pthread_join(th, NULL);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    assert_false(f->timed_out);
}

/* ---- the client side ---- */

struct cli {
    int fd;
    size_t len;
    char buf[65536];
};

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static int cli_connect(struct cli *c, int port)
{
    struct sockaddr_in sa;
    struct timeval tv = {.tv_sec = 5};
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    c->len = 0;
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0)
        return -1;
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    return connect(c->fd, (struct sockaddr *)&sa, sizeof(sa));
}

static void cli_close(struct cli *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

static void cli_send(struct cli *c, const char *s)
{
    size_t n = strlen(s), off = 0;
    while (off < n) {
        ssize_t k = send(c->fd, s + off, n - off, MSG_NOSIGNAL);
        if (k <= 0)
            return;
        off += (size_t)k;
    }
}

static int cli_fill(struct cli *c)
{
    if (c->len >= sizeof(c->buf) - 1)
        return -1;
    ssize_t k = recv(c->fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len, 0);
    if (k <= 0)
        return -1;
    c->len += (size_t)k;
    c->buf[c->len] = '\0';
    return 0;
}

static void cli_take(struct cli *c, size_t n, char *out)
{
    memcpy(out, c->buf, n);
    out[n] = '\0';
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
    c->buf[c->len] = '\0';
}

/* cli_read_response reads one response (head and Content-Length body) into out, or the
 * partial bytes and returns -1 when the connection ended or timed out first. */
static int cli_read_response(struct cli *c, char *out, int head_only)
{
    for (;;) {
        c->buf[c->len] = '\0';
        char *end = strstr(c->buf, "\r\n\r\n");
        if (end != NULL) {
            size_t hlen = (size_t)(end - c->buf) + 4, blen = 0;
            char *cl = strcasestr(c->buf, "\r\nContent-Length: ");
            if (cl != NULL && cl < end && !head_only)
                blen = strtoul(cl + 18, NULL, 10);
            if (hlen + blen < RESP_MAX && c->len >= hlen + blen) {
                cli_take(c, hlen + blen, out);
                return 0;
            }
        }
        if (cli_fill(c) != 0) {
            size_t n = PW_MIN(c->len, (size_t)RESP_MAX - 1);
            cli_take(c, n, out);
            return -1;
        }
    }
}

/* cli_wait_eof returns 1 when the server closed the connection (with nothing more to read). */
static int cli_wait_eof(struct cli *c)
{
    char b[256];
    if (c->len > 0)
        return 0;
    ssize_t k = recv(c->fd, b, sizeof(b), 0);
    if (k == 0 || (k < 0 && errno == ECONNRESET))
        return 1;
    return 0;
}

static void wait_handler_calls(struct fx *f, int n)
{
    for (int i = 0; i < 500 && __atomic_load_n(&f->handler_calls, __ATOMIC_SEQ_CST) < n; i++)
        usleep(10 * 1000);
}

/* expect_ok builds the exact response the echo handler gives for body. */
static const char *expect_ok(const char *body, const char *connection)
{
    static char buf[RESP_MAX];
    snprintf(buf, sizeof(buf),
             "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n%s%s%s"
             "X-Served: test\r\n\r\n%s",
             strlen(body), connection ? "Connection: " : "", connection ? connection : "",
             connection ? "\r\n" : "", body);
    return buf;
}

static const char *expect_error(int status, const char *reason, const char *body)
{
    static char buf[RESP_MAX];
    snprintf(buf, sizeof(buf),
             "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
             "Connection: close\r\n\r\n%s",
             status, reason, strlen(body), body);
    return buf;
}

/* one_request sends req on a new connection and records the response in slot i, and whether
 * the server then closed the connection. */
static void one_request(struct fx *f, int i, const char *req, int want_eof)
{
    struct cli *c = pw_xmalloc(sizeof(*c));
    if (cli_connect(c, f->port) == 0) {
        cli_send(c, req);
        cli_read_response(c, f->resp[i], 0);
        if (want_eof)
            f->eof[i] = cli_wait_eof(c);
    }
    cli_close(c);
    free(c);
}

/* ---- tests ---- */

static void cl_get_query(struct fx *f)
{
    one_request(f, 0, "GET /items/42?x=1&y=two HTTP/1.1\r\nHost: t\r\n\r\n", 0);
    one_request(f, 1, "DELETE /items/42 HTTP/1.1\r\nHost: t\r\n\r\n", 0);
}

static void test_get_query(void **state)
{
    struct fx f;
    fx_init(&f, MODE_ECHO, cl_get_query);
    fx_run(&f);
    assert_string_equal(f.resp[0], expect_ok("GET /items/42 q=x=1&y=two h=- b=", NULL));
    assert_string_equal(f.resp[1], expect_ok("DELETE /items/42 q= h=- b=", NULL));
    assert_int_equal(f.stats.requests, 2);
    assert_int_equal(f.stats.rejected, 0);
}

static void cl_post_body(struct fx *f)
{
    one_request(f, 0,
                "POST /submit HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\n"
                "Content-Length: 11\r\n\r\nhello world",
                0);
}

static void test_post_body(void **state)
{
    struct fx f;
    fx_init(&f, MODE_ECHO, cl_post_body);
    fx_run(&f);
    assert_string_equal(f.resp[0], expect_ok("POST /submit q= h=- b=hello world", NULL));
}

static void cl_chunked(struct fx *f)
{
    struct cli c;
    if (cli_connect(&c, f->port) == 0) {
        cli_send(&c, "POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel");
        usleep(30 * 1000);
        cli_send(&c, "lo\r\n6;ext=1\r\n world\r\n0\r\nX-Custom-Header: trailer\r\n\r\n");
        cli_read_response(&c, f->resp[0], 0);
    }
    cli_close(&c);
}

static void test_chunked(void **state)
{
    struct fx f;
    fx_init(&f, MODE_ECHO, cl_chunked);
    fx_run(&f);
    /* The trailer is not a header: h stays unset. */
    assert_string_equal(f.resp[0], expect_ok("POST /c q= h=- b=hello world", NULL));
}

static void cl_keepalive(struct fx *f)
{
    struct cli c;
    if (cli_connect(&c, f->port) == 0) {
        cli_send(&c, "GET /one HTTP/1.1\r\nHost: t\r\n\r\n");
        cli_read_response(&c, f->resp[0], 0);
        cli_send(&c, "PUT /two?a=b HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nok");
        cli_read_response(&c, f->resp[1], 0);
        cli_send(&c, "GET /stats HTTP/1.1\r\nHost: t\r\n\r\n");
        cli_read_response(&c, f->resp[2], 0);
    }
    cli_close(&c);
}

static void test_keepalive(void **state)
{
    struct fx f;
    fx_init(&f, MODE_ECHO, cl_keepalive);
    fx_run(&f);
    assert_string_equal(f.resp[0], expect_ok("GET /one q= h=- b=", NULL));
    assert_string_equal(f.resp[1], expect_ok("PUT /two q=a=b h=- b=ok", NULL));
    assert_string_equal(f.resp[2], expect_ok("conns=1 reqs=3 rejected=0", NULL));
}

static void cl_pipelined(struct fx *f)
{
    struct cli c;
    if (cli_connect(&c, f->port) == 0) {
        cli_send(&c, "GET /first HTTP/1.1\r\nHost: t\r\n\r\n"
                     "POST /second HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
                     "GET /third HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        for (int i = 0; i < 3; i++)
            cli_read_response(&c, f->resp[i], 0);
        f->eof[0] = cli_wait_eof(&c);
    }
    cli_close(&c);
}

static void test_pipelined(void **state)
{
    struct fx f;
    /* Deferred answers: the second request must wait for the first. */
    fx_init(&f, MODE_DEFER, cl_pipelined);
    fx_run(&f);
    assert_string_equal(f.resp[0], expect_ok("GET /first q= h=- b=", NULL));
    assert_string_equal(f.resp[1], expect_ok("POST /second q= h=- b=abc", NULL));
    assert_string_equal(f.resp[2], expect_ok("GET /third q= h=- b=", "close"));
    assert_int_equal(f.eof[0], 1);
    assert_int_equal(f.stats.requests, 3);
}

static void cl_deferred(struct fx *f)
{
    long t0 = now_ms();
    one_request(f, 0, "GET /later HTTP/1.1\r\nHost: t\r\n\r\n", 0);
    f->ms[0] = now_ms() - t0;
}

static void test_deferred(void **state)
{
    struct fx f;
    fx_init(&f, MODE_DEFER, cl_deferred);
    fx_run(&f);
    assert_string_equal(f.resp[0], expect_ok("GET /later q= h=- b=", NULL));
    assert_true(f.ms[0] >= 45);
}

static void cl_gone(struct fx *f)
{
    struct cli c;
    if (cli_connect(&c, f->port) == 0) {
        cli_send(&c, "GET /parked HTTP/1.1\r\nHost: t\r\n\r\n");
        wait_handler_calls(f, 1);
    }
    cli_close(&c);
    /* Wait for the loop to notice before the server closes (which would also make it gone). */
    for (int i = 0; i < 500 && !__atomic_load_n(&f->held_gone, __ATOMIC_SEQ_CST); i++)
        usleep(10 * 1000);
}

static void test_gone(void **state)
{
    struct fx f;
    fx_init(&f, MODE_HOLD, cl_gone);
    fx_run(&f);
    assert_int_equal(f.handler_calls, 1);
    assert_int_equal(f.held_gone_at_handler, 0);
    assert_int_equal(f.held_gone, 1);
    assert_int_equal(f.stats.connections, 0);
}

static void cl_close_pending(struct fx *f)
{
    struct cli c;
    if (cli_connect(&c, f->port) == 0) {
        cli_send(&c, "GET /parked HTTP/1.1\r\nHost: t\r\n\r\n");
        wait_handler_calls(f, 1);
        uv_async_send(&f->async);
        f->eof[0] = cli_wait_eof(&c);
    }
    cli_close(&c);
}

static void test_server_close_pending(void **state)
{
    struct fx f;
    fx_init(&f, MODE_HOLD, cl_close_pending);
    fx_run(&f);
    /* The server closed the connection without an answer; the request was answered later. */
    assert_int_equal(f.eof[0], 1);
    assert_int_equal(f.held_gone, 1);
    assert_int_equal(f.stats.connections, 1);
}

static void cl_malformed(struct fx *f)
{
    one_request(f, 0, "GET / HTTP/1.1\r\nBad Header Line\r\n\r\n", 1);
    one_request(f, 1, "GET http://example.com/ HTTP/1.1\r\nHost: t\r\n\r\n", 1);
    one_request(f, 2, "GET /a b HTTP/1.1\r\n\r\n", 1);
}

static void test_malformed(void **state)
{
    struct fx f;
    const char *prefix = "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n";
    const char *body = "\r\nConnection: close\r\n\r\n{\"error\":{\"code\":\"bad_request\",\"message\":\"";
    fx_init(&f, MODE_ECHO, cl_malformed);
    fx_run(&f);
    assert_int_equal(strncmp(f.resp[0], prefix, strlen(prefix)), 0);
    assert_non_null(strstr(f.resp[0], body));
    assert_int_equal(f.eof[0], 1);
    assert_string_equal(
        f.resp[1],
        expect_error(400, "Bad Request",
                     "{\"error\":{\"code\":\"bad_request\",\"message\":"
                     "\"request target must be an absolute path\"}}"));
    assert_int_equal(f.eof[1], 1);
    assert_int_equal(strncmp(f.resp[2], prefix, strlen(prefix)), 0);
    assert_int_equal(f.eof[2], 1);
    assert_int_equal(f.handler_calls, 0);
    assert_int_equal(f.stats.rejected, 3);
}

static void cl_body_limit(struct fx *f)
{
    one_request(f, 0, "POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n", 1);
    one_request(f, 1, "POST /big HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n20\r\n", 1);
    one_request(f, 2,
                "POST /big HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                "a\r\n0123456789\r\na\r\n0123456789\r\n0\r\n\r\n",
                1);
    one_request(f, 3, "POST /fits HTTP/1.1\r\nHost: t\r\nContent-Length: 16\r\n\r\n0123456789abcdef", 0);
}

static void test_body_limit(void **state)
{
    struct fx f;
    const char *err = expect_error(
        413, "Payload Too Large",
        "{\"error\":{\"code\":\"body_too_large\",\"message\":\"request body too large\"}}");
    fx_init(&f, MODE_ECHO, cl_body_limit);
    f.lim.max_body_bytes = 16;
    fx_run(&f);
    for (int i = 0; i < 3; i++) {
        assert_string_equal(f.resp[i], err);
        assert_int_equal(f.eof[i], 1);
    }
    assert_string_equal(f.resp[3], expect_ok("POST /fits q= h=- b=0123456789abcdef", NULL));
    assert_int_equal(f.stats.rejected, 3);
}

static void cl_header_limit(struct fx *f)
{
    char req[1024];
    char big[301];
    memset(big, 'v', 300);
    big[300] = '\0';
    snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: t\r\nX-Big: %s\r\n\r\n", big);
    one_request(f, 0, req, 1);
    one_request(f, 1, "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n\r\n", 1);
    one_request(f, 2, "GET /four HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n", 0);
}

static void test_header_limit(void **state)
{
    struct fx f;
    fx_init(&f, MODE_ECHO, cl_header_limit);
    f.lim.max_header_bytes = 256;
    f.lim.max_headers = 4;
    fx_run(&f);
    assert_string_equal(
        f.resp[0],
        expect_error(431, "Request Header Fields Too Large",
                     "{\"error\":{\"code\":\"headers_too_large\",\"message\":\"header fields too large\"}}"));
    assert_int_equal(f.eof[0], 1);
    assert_string_equal(
        f.resp[1],
        expect_error(431, "Request Header Fields Too Large",
                     "{\"error\":{\"code\":\"headers_too_large\",\"message\":\"too many header fields\"}}"));
    assert_int_equal(f.eof[1], 1);
    assert_string_equal(f.resp[2], expect_ok("GET /four q= h=- b=", NULL));
}

static void cl_conn_limit(struct fx *f)
{
    struct cli *c = pw_xcalloc(3, sizeof(*c));
    if (cli_connect(&c[0], f->port) == 0 && cli_connect(&c[1], f->port) == 0) {
        cli_send(&c[0], "GET /a HTTP/1.1\r\n\r\n");
        cli_read_response(&c[0], f->resp[0], 0);
        cli_send(&c[1], "GET /b HTTP/1.1\r\n\r\n");
        cli_read_response(&c[1], f->resp[1], 0);
        if (cli_connect(&c[2], f->port) == 0) {
            long t0 = now_ms();
            f->eof[2] = cli_wait_eof(&c[2]);
            f->ms[2] = now_ms() - t0;
        }
        cli_send(&c[0], "GET /stats HTTP/1.1\r\n\r\n");
        cli_read_response(&c[0], f->resp[3], 0);
    }
    for (int i = 0; i < 3; i++)
        cli_close(&c[i]);
    free(c);
}

static void test_conn_limit(void **state)
{
    struct fx f;
    fx_init(&f, MODE_ECHO, cl_conn_limit);
    f.lim.max_connections = 2;
    fx_run(&f);
    assert_string_equal(f.resp[0], expect_ok("GET /a q= h=- b=", NULL));
    assert_string_equal(f.resp[1], expect_ok("GET /b q= h=- b=", NULL));
    assert_int_equal(f.eof[2], 1);
    assert_true(f.ms[2] < 2000);
    assert_string_equal(f.resp[3], expect_ok("conns=2 reqs=3 rejected=1", NULL));
}

static void cl_idle(struct fx *f)
{
    struct cli c;
    long t0;
    if (cli_connect(&c, f->port) == 0) {
        /* The answer comes after 300 ms, beyond the idle timeout: no timer while pending. */
        t0 = now_ms();
        cli_send(&c, "GET /slow HTTP/1.1\r\n\r\n");
        cli_read_response(&c, f->resp[0], 0);
        f->ms[0] = now_ms() - t0;
        t0 = now_ms();
        f->eof[0] = cli_wait_eof(&c);
        f->ms[1] = now_ms() - t0;
    }
    cli_close(&c);
    if (cli_connect(&c, f->port) == 0) {
        t0 = now_ms();
        f->eof[1] = cli_wait_eof(&c);
        f->ms[2] = now_ms() - t0;
    }
    cli_close(&c);
}

static void test_idle_timeout(void **state)
{
    struct fx f;
    fx_init(&f, MODE_DEFER, cl_idle);
    f.defer_ms = 300;
    f.lim.idle_timeout_ms = 150;
    fx_run(&f);
    assert_string_equal(f.resp[0], expect_ok("GET /slow q= h=- b=", NULL));
    assert_true(f.ms[0] >= 290);
    assert_int_equal(f.eof[0], 1);
    assert_true(f.ms[1] >= 100 && f.ms[1] < 3000);
    assert_int_equal(f.eof[1], 1);
    assert_true(f.ms[2] >= 100 && f.ms[2] < 3000);
}

static void cl_header_case(struct fx *f)
{
    one_request(f, 0, "GET /h HTTP/1.1\r\nHost: t\r\nx-CUSTOM-header:   Value here  \r\n\r\n", 0);
}

static void test_header_case(void **state)
{
    struct fx f;
    fx_init(&f, MODE_ECHO, cl_header_case);
    fx_run(&f);
    assert_string_equal(f.resp[0], expect_ok("GET /h q= h=Value here b=", NULL));
}

static void cl_http10(struct fx *f)
{
    struct cli c;
    one_request(f, 0, "GET /old HTTP/1.0\r\n\r\n", 1);
    one_request(f, 1, "GET /bye HTTP/1.1\r\nConnection: close\r\n\r\n", 1);
    if (cli_connect(&c, f->port) == 0) {
        cli_send(&c, "GET /ka HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        cli_read_response(&c, f->resp[2], 0);
        cli_send(&c, "GET /ka2 HTTP/1.0\r\n\r\n");
        cli_read_response(&c, f->resp[3], 0);
        f->eof[3] = cli_wait_eof(&c);
    }
    cli_close(&c);
}

static void test_http10_and_close(void **state)
{
    struct fx f;
    fx_init(&f, MODE_ECHO, cl_http10);
    fx_run(&f);
    assert_string_equal(f.resp[0], expect_ok("GET /old q= h=- b=", "close"));
    assert_int_equal(f.eof[0], 1);
    assert_string_equal(f.resp[1], expect_ok("GET /bye q= h=- b=", "close"));
    assert_int_equal(f.eof[1], 1);
    assert_string_equal(f.resp[2], expect_ok("GET /ka q= h=- b=", "keep-alive"));
    assert_string_equal(f.resp[3], expect_ok("GET /ka2 q= h=- b=", "close"));
    assert_int_equal(f.eof[3], 1);
}

static void cl_continue(struct fx *f)
{
    struct cli c;
    if (cli_connect(&c, f->port) == 0) {
        cli_send(&c, "POST /up HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
        cli_read_response(&c, f->resp[0], 0);
        cli_send(&c, "hello");
        cli_read_response(&c, f->resp[1], 0);
        /* HEAD: the head as for GET, no body bytes; the next answer follows directly. */
        cli_send(&c, "HEAD /h HTTP/1.1\r\n\r\nGET /after HTTP/1.1\r\n\r\n");
        cli_read_response(&c, f->resp[2], 1);
        cli_read_response(&c, f->resp[3], 0);
    }
    cli_close(&c);
}

static void test_continue_and_head(void **state)
{
    struct fx f;
    char want[RESP_MAX];
    fx_init(&f, MODE_ECHO, cl_continue);
    fx_run(&f);
    assert_string_equal(f.resp[0], "HTTP/1.1 100 Continue\r\n\r\n");
    assert_string_equal(f.resp[1], expect_ok("POST /up q= h=- b=hello", NULL));
    snprintf(want, sizeof(want), "%s", expect_ok("HEAD /h q= h=- b=", NULL));
    *strstr(want, "\r\n\r\n") = '\0';
    strcat(want, "\r\n\r\n");
    assert_string_equal(f.resp[2], want);
    assert_string_equal(f.resp[3], expect_ok("GET /after q= h=- b=", NULL));
}

/* ---- streamed answers ---- */

/* cli_read_until reads until marker has arrived and takes everything up to and including it
 * into out; -1 (with what there was) when the connection ended or timed out first. */
static int cli_read_until(struct cli *c, char *out, const char *marker)
{
    for (;;) {
        char *m = strstr(c->buf, marker);
        if (m != NULL && (size_t)(m - c->buf) + strlen(marker) < RESP_MAX) {
            cli_take(c, (size_t)(m - c->buf) + strlen(marker), out);
            return 0;
        }
        if (cli_fill(c) != 0) {
            cli_take(c, PW_MIN(c->len, (size_t)RESP_MAX - 1), out);
            return -1;
        }
    }
}

/* cli_read_eof takes everything until the server closes the connection; 1 on EOF. */
static int cli_read_eof(struct cli *c, char *out)
{
    while (cli_fill(c) == 0) {
    }
    cli_take(c, PW_MIN(c->len, (size_t)RESP_MAX - 1), out);
    return cli_wait_eof(c);
}

static void cl_stream_chunked(struct fx *f)
{
    struct cli c;
    if (cli_connect(&c, f->port) == 0) {
        long t0 = now_ms();
        cli_send(&c, "GET /chunked HTTP/1.1\r\nHost: t\r\n\r\n");
        cli_read_until(&c, f->resp[0], "hello \r\n");
        f->ms[0] = now_ms() - t0;
        cli_read_until(&c, f->resp[1], "0\r\n\r\n");
        f->ms[1] = now_ms() - t0;
        /* The same connection goes on: Content-Length framing, then an ordinary answer. */
        cli_send(&c, "GET /cl HTTP/1.1\r\nHost: t\r\n\r\n");
        cli_read_response(&c, f->resp[2], 0);
        cli_send(&c, "GET /stats HTTP/1.1\r\nHost: t\r\n\r\n");
        cli_read_response(&c, f->resp[3], 0);
    }
    cli_close(&c);
}

static void test_stream_chunked(void **state)
{
    struct fx f;
    fx_init(&f, MODE_STREAM, cl_stream_chunked);
    fx_run(&f);
    assert_string_equal(f.resp[0], "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n"
                                   "X-Served: test\r\n\r\n6\r\nhello \r\n");
    assert_string_equal(f.resp[1], "5\r\nworld\r\n0\r\n\r\n");
    /* The first piece arrived before the answer was produced whole. */
    assert_true(f.ms[1] - f.ms[0] >= 50);
    assert_string_equal(f.resp[2], "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n"
                                   "X-Served: test\r\n\r\nhello world");
    assert_string_equal(f.resp[3], expect_ok("conns=1 reqs=3 rejected=0", NULL));
}

static void cl_stream_bodyless(struct fx *f)
{
    struct cli c;
    if (cli_connect(&c, f->port) == 0) {
        cli_send(&c, "HEAD /cl HTTP/1.1\r\n\r\nHEAD /chunked HTTP/1.1\r\n\r\n"
                     "GET /nocontent HTTP/1.1\r\n\r\nGET /after HTTP/1.1\r\n\r\n");
        for (int i = 0; i < 3; i++)
            cli_read_response(&c, f->resp[i], 1);
        cli_read_response(&c, f->resp[3], 0);
    }
    cli_close(&c);
    /* HTTP/1.0 cannot take chunks: no framing, and the end of the connection ends the body. */
    if (cli_connect(&c, f->port) == 0) {
        cli_send(&c, "GET /chunked HTTP/1.0\r\n\r\n");
        f->eof[4] = cli_read_eof(&c, f->resp[4]);
    }
    cli_close(&c);
}

static void test_stream_bodyless(void **state)
{
    struct fx f;
    fx_init(&f, MODE_STREAM, cl_stream_bodyless);
    fx_run(&f);
    assert_string_equal(f.resp[0], "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n"
                                   "X-Served: test\r\n\r\n");
    assert_string_equal(f.resp[1], "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n"
                                   "X-Served: test\r\n\r\n");
    assert_string_equal(f.resp[2], "HTTP/1.1 204 No Content\r\nX-Served: test\r\n\r\n");
    assert_string_equal(f.resp[3], expect_ok("GET /after q= h=- b=", NULL));
    assert_string_equal(f.resp[4], "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                                   "X-Served: test\r\n\r\nhello world");
    assert_int_equal(f.eof[4], 1);
}

static void cl_stream_abort(struct fx *f)
{
    struct cli c;
    if (cli_connect(&c, f->port) == 0) {
        cli_send(&c, "GET /abort-cl HTTP/1.1\r\n\r\n");
        f->eof[0] = cli_read_eof(&c, f->resp[0]);
    }
    cli_close(&c);
    if (cli_connect(&c, f->port) == 0) {
        cli_send(&c, "GET /abort-chunked HTTP/1.1\r\n\r\n");
        f->eof[1] = cli_read_eof(&c, f->resp[1]);
    }
    cli_close(&c);
}

static void test_stream_abort(void **state)
{
    struct fx f;
    fx_init(&f, MODE_STREAM, cl_stream_abort);
    fx_run(&f);
    /* Cut answers: short of the Content-Length, or without the chunked terminator. */
    assert_string_equal(f.resp[0], "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n"
                                   "0123456789");
    assert_int_equal(f.eof[0], 1);
    assert_string_equal(f.resp[1], "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n"
                                   "\r\n7\r\npartial\r\n");
    assert_int_equal(f.eof[1], 1);
}

static void cl_stream_gone(struct fx *f)
{
    struct cli c;
    if (cli_connect(&c, f->port) == 0) {
        cli_send(&c, "GET /hold HTTP/1.1\r\nHost: t\r\n\r\n");
        cli_read_until(&c, f->resp[0], "part1\r\n");
    }
    cli_close(&c);
    for (int i = 0; i < 500 && !__atomic_load_n(&f->held_gone, __ATOMIC_SEQ_CST); i++)
        usleep(10 * 1000);
}

static void test_stream_gone(void **state)
{
    struct fx f;
    fx_init(&f, MODE_STREAM, cl_stream_gone);
    fx_run(&f);
    assert_string_equal(f.resp[0], "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n"
                                   "\r\n5\r\npart1\r\n");
    assert_int_equal(f.held_gone_at_handler, 0);
    assert_int_equal(f.held_gone, 1);
    assert_int_equal(f.held_write_after_gone, 1); /* the write returned 0 */
    assert_int_equal(f.stats.connections, 0);
}

/* cli_read_big reads a /big or /large body (byte i is i % 251) after its head and records
 * how much arrived and whether it was intact. */
static void cli_read_big(struct fx *f, struct cli *c)
{
    static char chunk[65536];
    size_t got = 0;
    int intact = 1;
    /* Body bytes that came with the head first, then straight from the socket. */
    for (size_t i = 0; i < c->len; i++)
        intact &= (unsigned char)c->buf[i] == (unsigned char)((got + i) % 251);
    got += c->len;
    c->len = 0;
    c->buf[0] = '\0';
    while (got < f->big_total) {
        ssize_t k = recv(c->fd, chunk, PW_MIN(sizeof(chunk), f->big_total - got), 0);
        if (k <= 0)
            break;
        for (ssize_t i = 0; i < k; i++)
            intact &= (unsigned char)chunk[i] == (unsigned char)((got + (size_t)i) % 251);
        got += (size_t)k;
    }
    f->big_got = got;
    f->big_intact = intact;
}

/* cl_big_after_pause asks for a big answer (request is its request line and headers), reads
 * nothing for a while so that the server has to queue, then reads it all (cli_read_big) and
 * asks for /stats on the same connection. */
static void cl_big_after_pause(struct fx *f, const char *request)
{
    struct cli c;
    if (cli_connect(&c, f->port) == 0) {
        cli_send(&c, request);
        usleep(300 * 1000);
        if (cli_read_until(&c, f->resp[0], "\r\n\r\n") == 0) {
            cli_read_big(f, &c);
            cli_send(&c, "GET /stats HTTP/1.1\r\nHost: t\r\n\r\n");
            cli_read_response(&c, f->resp[1], 0);
        }
    }
    cli_close(&c);
}

/* assert_big_answer: the big answer's head, and all of its body, intact. */
static void assert_big_answer(const struct fx *f)
{
    char head[RESP_MAX];
    snprintf(head, sizeof(head),
             "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %zu\r\n\r\n",
             f->big_total);
    assert_string_equal(f->resp[0], head);
    assert_int_equal(f->big_got, f->big_total);
    assert_int_equal(f->big_intact, 1);
}

/* The streamed answer: the server's queue grows while the client reads nothing. */
static void cl_stream_backpressure(struct fx *f)
{
    cl_big_after_pause(f, "GET /big HTTP/1.1\r\nHost: t\r\n\r\n");
}

static void test_stream_backpressure(void **state)
{
    struct fx f;
    fx_init(&f, MODE_STREAM, cl_stream_backpressure);
    f.big_total = 16 * 1024 * 1024;
    f.big_high = 512 * 1024;
    fx_run(&f);
    assert_big_answer(&f);
    /* Once the socket was full the writes reported what stayed queued, past the high mark
     * (how many writes that took depends on the kernel's socket buffers), and the drain
     * callback paced the rest. */
    int queued = 0;
    for (size_t i = 0; i < f.nqueued; i++)
        queued |= f.queued[i] > 0;
    assert_true(queued);
    assert_true(f.max_queued > f.big_high);
    assert_true(f.drains >= 1);
    /* Keep-alive after the streamed answer. */
    assert_string_equal(f.resp[1], expect_ok("conns=1 reqs=2 rejected=0", NULL));
}

static void cl_stream_stall(struct fx *f)
{
    struct cli c;
    long t0 = now_ms();
    if (cli_connect(&c, f->port) == 0) {
        int small = 4096;
        /* A small receive buffer so that the server's queue fills soon. */
        setsockopt(c.fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
        cli_send(&c, "GET /stall HTTP/1.1\r\nHost: t\r\n\r\n");
        for (int i = 0; i < 500 && !__atomic_load_n(&f->held_gone, __ATOMIC_SEQ_CST); i++)
            usleep(10 * 1000);
        f->ms[0] = now_ms() - t0;
    }
    cli_close(&c);
}

static void test_stream_stall(void **state)
{
    struct fx f;
    fx_init(&f, MODE_STREAM, cl_stream_stall);
    f.big_high = 256 * 1024;
    f.lim.idle_timeout_ms = 300;
    fx_run(&f);
    /* A client that stops reading is cut off after the idle timeout: the request is gone. */
    assert_int_equal(f.held_gone, 1);
    assert_true(f.ms[0] >= 250 && f.ms[0] < 4000);
    assert_int_equal(f.stats.connections, 0);
}

/* ---- writes: at once, in part, cut short ---- */

#define NPIPELINED 1000

/* cli_send_pipeline sends NPIPELINED GETs of /p/0 .. /p/999 in one send (about 24 KiB, under
 * the server's 64 KiB input buffer: one read takes them all); the last asks for close when
 * last_close. */
static void cli_send_pipeline(struct cli *c, int last_close)
{
    struct pw_buf req;
    pw_buf_init(&req, 64 * 1024);
    for (int i = 0; i < NPIPELINED; i++)
        pw_buf_printf(&req, "GET /p/%d HTTP/1.1\r\n%s\r\n", i,
                      last_close && i == NPIPELINED - 1 ? "Connection: close\r\n" : "");
    cli_send(c, req.data);
    pw_buf_fini(&req);
}

static void cl_pipelined_many(struct fx *f)
{
    struct cli *c = pw_xmalloc(sizeof(*c));
    char *resp = pw_xmalloc(RESP_MAX);
    char want[RESP_MAX], body[64];
    if (cli_connect(c, f->port) == 0) {
        cli_send_pipeline(c, 1);
        for (int i = 0; i < NPIPELINED; i++) {
            snprintf(body, sizeof(body), "GET /p/%d q= h=- b=", i);
            const char *conn = i == NPIPELINED - 1 ? "close" : NULL;
            snprintf(want, sizeof(want), "%s", expect_ok(body, conn));
            if (cli_read_response(c, resp, 0) != 0 || strcmp(resp, want) != 0) {
                snprintf(f->resp[0], RESP_MAX, "%s", resp);
                break;
            }
            f->npipelined++;
        }
        f->eof[0] = cli_wait_eof(c);
    }
    cli_close(c);
    free(resp);
    free(c);
}

static void test_pipelined_many(void **state)
{
    struct fx f;
    /* Answers at once, each written whole by the socket: the next request must still wait
     * for the loop, not nest inside the answer to the previous one. */
    fx_init(&f, MODE_ECHO, cl_pipelined_many);
    fx_run(&f);
    assert_string_equal(f.resp[0], "");
    assert_int_equal(f.npipelined, NPIPELINED);
    assert_int_equal(f.eof[0], 1);
    assert_int_equal(f.stats.requests, NPIPELINED);
    /* Every request reached the handler at about the same stack depth. */
    assert_true(f.frame_hi - f.frame_lo < 16 * 1024);
}

/* One answer: the socket takes part of it at once, the rest is queued. */
static void cl_large(struct fx *f)
{
    cl_big_after_pause(f, "GET /large HTTP/1.1\r\nHost: t\r\n\r\n");
}

static void test_large_response(void **state)
{
    struct fx f;
    fx_init(&f, MODE_ECHO, cl_large);
    /* Far more than loopback's socket buffers hold. */
    f.big_total = 16 * 1024 * 1024;
    fx_run(&f);
    assert_big_answer(&f);
    /* Keep-alive after the answer that went out in parts. */
    assert_string_equal(f.resp[1], expect_ok("conns=1 reqs=2 rejected=0", NULL));
}

/* cli_reset closes c with a reset, as a client that dies does. */
static void cli_reset(struct cli *c)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    cli_close(c);
}

static void cl_client_gone(struct fx *f)
{
    struct cli *c = pw_xmalloc(sizeof(*c));
    /* Leaves after the head of a large answer, most of which is still queued. */
    if (cli_connect(c, f->port) == 0) {
        cli_send(c, "GET /large HTTP/1.1\r\nHost: t\r\n\r\n");
        cli_read_until(c, f->resp[0], "\r\n\r\n");
    }
    cli_close(c);
    /* Leaves while many pipelined answers are being written, first with a reset, then with
     * an orderly close. */
    if (cli_connect(c, f->port) == 0) {
        cli_send_pipeline(c, 0);
        usleep(20 * 1000);
    }
    cli_reset(c);
    if (cli_connect(c, f->port) == 0)
        cli_send_pipeline(c, 0);
    cli_close(c);
    /* The server goes on: once it has noticed, only the asking connection is open. */
    for (int i = 0; i < 200; i++) {
        if (cli_connect(c, f->port) == 0) {
            cli_send(c, "GET /stats HTTP/1.1\r\nHost: t\r\n\r\n");
            cli_read_response(c, f->resp[1], 0);
        }
        cli_close(c);
        if (strstr(f->resp[1], "conns=1 ") != NULL)
            break;
        usleep(10 * 1000);
    }
    free(c);
}

static void test_client_gone_mid_response(void **state)
{
    struct fx f;
    fx_init(&f, MODE_ECHO, cl_client_gone);
    f.big_total = 16 * 1024 * 1024;
    fx_run(&f);
    assert_true(strncmp(f.resp[0], "HTTP/1.1 200 OK\r\n", 17) == 0);
    assert_non_null(strstr(f.resp[1], "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(f.resp[1], "conns=1 "));
}

static void test_bad_listen(void **state)
{
    uv_loop_t loop;
    struct pw_http_server *s = (void *)1;
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(pw_http_server_new(&loop, "localhost", 0, NULL, handler, NULL, &s), PW_ERR_INVAL);
    assert_null(s);
    assert_int_equal(pw_http_server_new(&loop, "::1", 0, NULL, handler, NULL, &s), PW_OK);
    assert_true(pw_http_server_port(s) > 0);
    pw_http_server_close(s);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_query),
        cmocka_unit_test(test_post_body),
        cmocka_unit_test(test_chunked),
        cmocka_unit_test(test_keepalive),
        cmocka_unit_test(test_pipelined),
        cmocka_unit_test(test_deferred),
        cmocka_unit_test(test_gone),
        cmocka_unit_test(test_server_close_pending),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_body_limit),
        cmocka_unit_test(test_header_limit),
        cmocka_unit_test(test_conn_limit),
        cmocka_unit_test(test_idle_timeout),
        cmocka_unit_test(test_header_case),
        cmocka_unit_test(test_http10_and_close),
        cmocka_unit_test(test_continue_and_head),
        cmocka_unit_test(test_bad_listen),
        cmocka_unit_test(test_stream_chunked),
        cmocka_unit_test(test_stream_bodyless),
        cmocka_unit_test(test_stream_abort),
        cmocka_unit_test(test_stream_gone),
        cmocka_unit_test(test_stream_backpressure),
        cmocka_unit_test(test_stream_stall),
        cmocka_unit_test(test_pipelined_many),
        cmocka_unit_test(test_large_response),
        cmocka_unit_test(test_client_gone_mid_response),
    };
    /* A client that leaves mid-answer must not kill the test with SIGPIPE. */
    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
