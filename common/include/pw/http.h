/* http.h — a small HTTP/1.1 server on libuv with llhttp.
 *
 * Keep-alive, one request at a time per connection (pipelined requests wait their turn),
 * caps on header bytes, body bytes and connections, an idle timeout. A request is handed to
 * the handler once complete; the handler answers at once or later (e.g. a parked acquire) with
 * exactly one pw_http_respond*() call. Malformed requests get 400, oversized bodies 413,
 * oversized headers 431, all with a JSON error body, and the connection is closed after them.
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
 * pw_http_respond*() on it, which releases it. */
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

struct pw_http_stats {
    uint64_t connections;   /* open now */
    uint64_t requests;      /* total handled */
    uint64_t rejected;      /* 4xx from the server itself (parse, size, connection limit) */
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

#endif
