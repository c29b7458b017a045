/* http.h — a small HTTP/1.1 server on libuv with llhttp.
 *
 * Keep-alive, one request at a time per connection (pipelined requests wait their turn),
 * caps on header bytes, body bytes and connections, an idle timeout. A request is handed to
 * the handler once complete; the handler answers at once or later (e.g. a parked acquire),
 * either whole with exactly one pw_http_respond() or pw_http_respond_error() call, or streamed:
 * pw_http_respond_start(), any number of pw_http_respond_write(), then exactly one
 * pw_http_respond_end() or pw_http_respond_abort(). Malformed requests get 400, oversized
 * bodies 413, oversized headers 431, all with a JSON error body, and the connection is closed
 * after them.
 *
 * Threads: everything runs on the loop thread that owns the server. */
#ifndef PW_HTTP_H
#define PW_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct pw_http_server;
struct pw_http_req;

struct pw_http_limits {
    size_t max_header_bytes; /* all header lines together; default 16 KiB */
    size_t max_body_bytes;   /* default 1 MiB */
    size_t max_headers;      /* default 64 */
    size_t max_connections;  /* beyond it new connections are closed at once; default 1024 */
    int64_t idle_timeout_ms; /* keep-alive connection with no request in flight; default 60 s */
};
void pw_http_limits_default(struct pw_http_limits *l);

/* The handler owns nothing: req stays valid until the handler (or anyone later) calls one
 * terminal call on it (pw_http_respond, pw_http_respond_error, pw_http_respond_end or
 * pw_http_respond_abort), which releases it. */
typedef void (*pw_http_handler)(void *arg, struct pw_http_req *req);

/* pw_http_server_new listens on host:port (port 0 picks a free port; see pw_http_server_port).
 * On PW_OK *out belongs to the caller and is released with pw_http_server_close. */
int pw_http_server_new(uv_loop_t *loop, const char *host, int port, const struct pw_http_limits *lim,
                       pw_http_handler handler, void *arg, struct pw_http_server **out);
int pw_http_server_port(const struct pw_http_server *s);
/* pw_http_server_close stops listening and closes every connection; requests still pending
 * become gone (see pw_http_req_gone) and must still be answered to be freed. The server is
 * freed once all its handles and pending requests are closed. */
void pw_http_server_close(struct pw_http_server *s);

/* Why the server itself refused a request or a connection. */
enum pw_http_reject {
    PW_HTTP_REJECT_MALFORMED,   /* 400 */
    PW_HTTP_REJECT_HEADERS,     /* 431: header bytes or count over the limit */
    PW_HTTP_REJECT_BODY,        /* 413 */
    PW_HTTP_REJECT_CONNECTIONS, /* closed at accept: max_connections open */
    PW_HTTP_REJECT__COUNT
};
struct pw_http_stats {
    uint64_t connections;   /* open now */
    uint64_t requests;      /* total handled */
    uint64_t rejected;      /* refused by the server itself: the sum of rejected_by */
    uint64_t rejected_by[PW_HTTP_REJECT__COUNT];
};
void pw_http_server_stats(const struct pw_http_server *s, struct pw_http_stats *out);

/* Request accessors. Strings are NUL-terminated and owned by req. */
const char *pw_http_req_method(const struct pw_http_req *r); /* "GET", "POST", ... */
const char *pw_http_req_path(const struct pw_http_req *r);   /* without the query string */
const char *pw_http_req_query(const struct pw_http_req *r);  /* after '?', or "" */
/* pw_http_req_header returns the value of the first header named name (case-insensitive), or
 * NULL. */
const char *pw_http_req_header(const struct pw_http_req *r, const char *name);
const char *pw_http_req_body(const struct pw_http_req *r, size_t *len); /* NUL-terminated */
/* pw_http_req_gone returns nonzero once the client's connection has closed: the answer will
 * not be delivered (respond anyway to free req). */
int pw_http_req_gone(const struct pw_http_req *r);
/* User data slot for the handler's own bookkeeping. */
void pw_http_req_set_user(struct pw_http_req *r, void *user);
void *pw_http_req_user(const struct pw_http_req *r);

/* pw_http_respond sends status with body (copied) and frees req. extra_headers is NULL or
 * lines each ending in "\r\n" (e.g. "Retry-After: 1\r\n"). content_type NULL means
 * application/json. */
void pw_http_respond(struct pw_http_req *r, int status, const char *content_type, const char *body,
                     size_t len, const char *extra_headers);
/* pw_http_respond_error sends {"error":{"code":code,"message":message}} with status. */
void pw_http_respond_error(struct pw_http_req *r, int status, const char *code, const char *message,
                           const char *extra_headers);

/* Streamed answers. The body goes out as the handler produces it, so its size is not bounded
 * by memory: the caller applies backpressure from what pw_http_respond_write returns, or from
 * the drain callback.
 *
 *   pw_http_respond_start(r, 200, "text/plain", NULL, -1);   head now, body chunked
 *   while (more) q = pw_http_respond_write(r, data, len);     stop producing while q is high
 *   pw_http_respond_end(r);                                   frees r
 *
 * Framing: content_length >= 0 sends "Content-Length: N" and then exactly N body bytes are
 * expected (bytes beyond N are dropped; an end before N is an abort). content_length < 0
 * sends "Transfer-Encoding: chunked" (HTTP/1.1 clients) or, to an HTTP/1.0 client, no framing
 * and "Connection: close" (the body ends with the connection). Either way the connection is
 * kept alive afterwards when the request allows it, as with pw_http_respond. To HEAD and for
 * 204/304 the head is sent (204/304 without Content-Type and framing) and body bytes are
 * dropped.
 *
 * A client that closes mid-stream makes the request gone (pw_http_req_gone): later writes are
 * dropped and return 0; pw_http_respond_end or pw_http_respond_abort must still be called to
 * free r. So does a client that stops reading for the server's idle timeout while bytes are
 * queued for it (the connection is closed).
 *
 * None of these calls invokes a callback (the handler or the drain callback) synchronously.
 * Threads: the loop thread only, like everything here. */

/* pw_http_respond_start sends the head of a streamed answer. r must be at the handler (no
 * earlier pw_http_respond* call). status is 200..599; content_type NULL means
 * application/json; extra_headers as for pw_http_respond (NULL or "Name: value\r\n" lines, not
 * Content-Length, Transfer-Encoding or Connection). r stays owned by the caller. On a gone r
 * it does nothing. */
void pw_http_respond_start(struct pw_http_req *r, int status, const char *content_type,
                           const char *extra_headers, int64_t content_length);
/* pw_http_respond_write sends len bytes of body (copied, or written to the socket at once;
 * data stays the caller's). Returns the bytes queued on the connection and not yet taken by
 * the kernel after this write: the caller should stop producing while it is above its own
 * high-water mark and go on when the drain callback fires. Returns 0 once r is gone. */
size_t pw_http_respond_write(struct pw_http_req *r, const void *data, size_t len);
/* A drain callback: the connection's queue fell to low_water bytes or below. r is the
 * streamed request it was registered on, still owned by the caller. The callback may call
 * pw_http_respond_write, pw_http_respond_end or pw_http_respond_abort. */
typedef void (*pw_http_drain_cb)(void *arg, struct pw_http_req *r);
/* pw_http_req_on_drain registers cb (NULL: none) for the streamed request r: it is called,
 * from a write completion on the loop, once each time the queue falls to low_water or below
 * after a pw_http_respond_write returned more than low_water. Never called once r is gone or
 * ended. May be called before or after pw_http_respond_start. */
void pw_http_req_on_drain(struct pw_http_req *r, size_t low_water, pw_http_drain_cb cb, void *arg);
/* pw_http_respond_end completes a streamed answer (the chunked terminator, when chunked) and
 * frees r. What is queued is still delivered; the connection then goes on with the next
 * request or closes, as after pw_http_respond. */
void pw_http_respond_end(struct pw_http_req *r);
/* pw_http_respond_abort ends a streamed answer that cannot be completed (its source failed)
 * and frees r: what is queued is still delivered, then the connection is closed without the
 * chunked terminator or before Content-Length bytes, so that the client sees a truncated
 * answer, never a falsely complete one. Also valid on a request at the handler that has no
 * answer yet: the connection is closed without one. */
void pw_http_respond_abort(struct pw_http_req *r);

#endif
