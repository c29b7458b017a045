/* hclient.h — a small HTTP/1.1 client on libuv with llhttp, for the gateway and its load
 * generator.
 *
 * One client talks to one address. It keeps up to max_conns connections, reuses them when
 * keep-alive is on (idle ones are closed after idle_ms), queues requests beyond that (bounded)
 * and answers each request exactly once through its callback, unless it was cancelled. Every
 * request has a deadline that covers queueing, connecting, sending and the whole answer. The
 * answer is buffered with a cap (max_body): this client does not stream.
 *
 * Threads: everything runs on the loop thread that owns the client. */
#ifndef PW_HCLIENT_H
#define PW_HCLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct pw_hclient;
struct pw_hcall;

struct pw_hclient_opts {
    size_t max_conns;   /* connections open at once; default 64 */
    size_t max_queue;   /* requests waiting for a connection; default 4096 */
    size_t max_body;    /* answer body cap; default 1 MiB */
    int keepalive;      /* reuse connections (HTTP/1.1 keep-alive); default 1 */
    int64_t idle_ms;    /* an idle kept-alive connection is closed after this; default 30 s */
};
void pw_hclient_opts_default(struct pw_hclient_opts *o);

/* An answer. Pointers are valid only during the callback. headers holds the answer's header
 * lines ("Name: value\r\n" each) except Content-Type, Content-Length, Transfer-Encoding,
 * Connection and Keep-Alive; content_type is "" when absent. */
struct pw_hresp {
    int status;
    const char *content_type;
    const char *headers;
    size_t headers_len;
    const char *body;
    size_t body_len;
};

/* err: PW_OK (resp set); PW_ERR_IO connect, write or read failed, or the answer was cut;
 * PW_ERR_TIMEOUT the deadline passed; PW_ERR_TOOBIG the answer's body or headers passed a
 * cap; PW_ERR_PARSE a malformed answer; PW_ERR_LIMIT the queue was full; PW_ERR_UNAVAIL the
 * client is closing. resp is NULL unless err is PW_OK. */
typedef void (*pw_hclient_cb)(void *arg, int err, const struct pw_hresp *resp);

/* pw_hclient_parse_addr parses "a.b.c.d:port" or "[v6]:port" (no name lookup) into out.
 * Returns PW_OK or PW_ERR_INVAL. */
int pw_hclient_parse_addr(const char *hostport, struct sockaddr_storage *out);

/* pw_hclient_new makes a client for addr (copied). On PW_OK *out belongs to the caller, who
 * releases it with pw_hclient_close. */
int pw_hclient_new(uv_loop_t *loop, const struct sockaddr *addr, const struct pw_hclient_opts *opts,
                   struct pw_hclient **out);
/* pw_hclient_close cancels every request (no callback is called for them any more), closes
 * every connection and frees the client once its handles are closed. May be called from a
 * callback. */
void pw_hclient_close(struct pw_hclient *c);

/* pw_hclient_request sends method path with extra_headers (NULL or lines ending in "\r\n";
 * Host, Content-Length and Connection are added) and body (copied; may be NULL with len 0).
 * cb is called exactly once, never from inside this call, unless the request is cancelled or
 * the client closed. The returned handle is valid until cb is called or it is cancelled. */
struct pw_hcall *pw_hclient_request(struct pw_hclient *c, const char *method, const char *path,
                                    const char *extra_headers, const void *body, size_t len,
                                    int64_t timeout_ms, pw_hclient_cb cb, void *arg);
/* pw_hcall_cancel abandons a request: its callback will not be called. A request already on a
 * connection closes that connection (the peer sees the connection go). */
void pw_hcall_cancel(struct pw_hcall *call);

struct pw_hclient_stats {
    size_t conns;  /* open now */
    size_t idle;   /* of those, idle */
    size_t queued; /* requests waiting for a connection */
    uint64_t connects;
};
void pw_hclient_stats(const struct pw_hclient *c, struct pw_hclient_stats *out);

#endif
