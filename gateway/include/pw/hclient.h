/* hclient.h — a small HTTP/1.1 client on libuv with llhttp, for the gateway and its load
 * generator.
 *
 * One client talks to one address. It keeps up to max_conns connections, reuses them when
 * keep-alive is on (idle ones are closed after idle_ms), queues requests beyond that (bounded)
 * and answers each request exactly once through its callback, unless it was cancelled. An
 * answer is either buffered whole with a cap (max_body; pw_hclient_request), or streamed: its
 * body handed over piece by piece as it arrives, with pause/resume for backpressure
 * (pw_hclient_stream). A buffered request's deadline covers queueing, connecting, sending and
 * the whole answer; a streamed one's covers everything up to the answer's headers, and then
 * each wait for more of the body.
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
    size_t max_body;    /* buffered answer body cap; default 1 MiB (streamed answers: none) */
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
/* A streamed answer's callbacks (see pw_hclient_stream). Pointers passed to them are valid
 * only during the call. */
struct pw_hstream_cbs {
    /* on_headers: the status and headers are in (resp as for pw_hclient_cb, with body NULL
     * and body_len 0); content_length is the announced Content-Length, or -1 (chunked, or
     * until the connection ends). Called at most once, before any on_body. */
    void (*on_headers)(void *arg, const struct pw_hresp *resp, int64_t content_length);
    /* on_body: the next len bytes of the body (after llhttp removed any chunk framing). */
    void (*on_body)(void *arg, const char *data, size_t len);
    /* on_end: called exactly once, last, unless the request is cancelled or the client
     * closed. err PW_OK: the whole body was handed over. Otherwise as for pw_hclient_cb;
     * after on_headers it means the body is incomplete: PW_ERR_IO the VM cut it (connection
     * closed or reset early), PW_ERR_TIMEOUT no more of it within timeout_ms, PW_ERR_PARSE
     * broken framing. */
    void (*on_end)(void *arg, int err);
};

/* pw_hclient_stream is pw_hclient_request with a streamed answer: cbs (not copied: it must
 * outlive the request, typically a static const table) gets the head, the body piece by
 * piece (no max_body cap; the header caps apply) and the end. timeout_ms bounds queueing,
 * connecting, sending and the wait for the head; after the head, each wait for more body
 * (time paused does not count). on_headers and on_body may call pw_hcall_pause,
 * pw_hcall_resume, pw_hcall_cancel and pw_hclient_close; on_end may call pw_hclient_close.
 * No callback is called from inside this call. The handle is valid until on_end is called or
 * it is cancelled. */
struct pw_hcall *pw_hclient_stream(struct pw_hclient *c, const char *method, const char *path,
                                   const char *extra_headers, const void *body, size_t len,
                                   int64_t timeout_ms, const struct pw_hstream_cbs *cbs, void *arg);
/* pw_hcall_pause stops reading a streamed answer from its connection (backpressure); body
 * bytes already read (at most one read, 64 KiB) may still reach on_body, and the answer may
 * still end. pw_hcall_resume reads again. Neither calls a callback from inside the call. */
void pw_hcall_pause(struct pw_hcall *call);
void pw_hcall_resume(struct pw_hcall *call);

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
