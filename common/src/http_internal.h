/* http_internal.h — the socket-free request parser and response formatter behind http.c.
 *
 * http.c drives it from libuv reads; tests/fuzz/fuzz_http.c drives it from raw bytes. Nothing
 * here is API: the names are visible across files only so that the fuzz target can link. */
#ifndef PW_HTTP_INTERNAL_H
#define PW_HTTP_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "llhttp.h"
#include "pw/http.h"
#include "pw/util.h"

struct http_conn;

/* One header of a request: offsets of name and value (both NUL-terminated) in req->hdrs. */
struct http_header {
    size_t name, value;
};

struct pw_http_req {
    struct pw_http_server *server; /* NULL when parsed without a server (fuzzing) */
    struct http_conn *conn;        /* NULL once the connection is gone */
    const char *method;            /* static string from llhttp */
    struct pw_buf url;             /* the request target; split in place into path NUL query */
    const char *query;             /* points into url, or "" */
    struct pw_buf hdrs;            /* "name\0value\0" pairs; its cap is max_header_bytes */
    struct http_header *headers;
    size_t nheaders;
    struct pw_buf body; /* its cap is max_body_bytes */
    uint8_t http_major, http_minor;
    int keep_alive; /* the connection may carry another request after this one */
    int head;       /* HEAD: the response carries no body */
    int gone;
    void *user;
};

/* Where the parser is inside a header line. */
enum http_hdr_state {
    HTTP_HDR_NONE,  /* between header lines */
    HTTP_HDR_FIELD, /* collecting a name */
    HTTP_HDR_VALUE, /* collecting a value */
};

struct pw_http_parser {
    llhttp_t llh;
    struct pw_http_limits lim;
    struct pw_http_req *req; /* being built, or complete and waiting for pw_http_parser_take */
    int complete;            /* req is complete; llhttp is paused */
    enum http_hdr_state hstate;
    size_t cur_name, cur_value; /* offsets in req->hdrs of the line being parsed */
    size_t nfields;     /* header and trailer lines of this message */
    size_t ext_bytes;   /* chunk extension bytes of this message */
    int in_trailers;    /* headers done: header callbacks now carry chunked trailers */
    int expect_continue; /* the client waits for "100 Continue" before sending its body */
    /* The error, once pw_http_parser_feed returned PW_HTTP_PARSE_ERROR. */
    int err_status;
    const char *err_code;
    char err_msg[128];
};

enum pw_http_parse {
    PW_HTTP_PARSE_MORE,    /* every byte was consumed; feed more */
    PW_HTTP_PARSE_REQUEST, /* a request is complete: take it, then feed the rest */
    PW_HTTP_PARSE_ERROR,   /* err_status/err_code/err_msg say why; feed nothing more */
};

/* pw_http_parser_init prepares p for one connection's stream of requests with the limits lim
 * (copied). pw_http_parser_fini frees any request still inside p. */
void pw_http_parser_init(struct pw_http_parser *p, const struct pw_http_limits *lim);
void pw_http_parser_fini(struct pw_http_parser *p);
/* pw_http_parser_feed parses up to len bytes of data; *used says how many it consumed (all of
 * them unless a request completed). Copies what it keeps: data belongs to the caller. */
enum pw_http_parse pw_http_parser_feed(struct pw_http_parser *p, const char *data, size_t len,
                                       size_t *used);
/* pw_http_parser_take hands the complete request to the caller, who frees it (pw_http_req_free
 * or pw_http_respond*), and lets the parser go on with the next one. */
struct pw_http_req *pw_http_parser_take(struct pw_http_parser *p);
/* pw_http_req_free frees a request that no connection or server refers to any more. */
void pw_http_req_free(struct pw_http_req *r);

/* pw_http_reason returns the standard reason phrase of status, or "Unknown". */
const char *pw_http_reason(int status);
/* pw_http_format_response appends a complete response to out (which should be uncapped
 * enough; returns PW_ERR_TOOBIG otherwise). flags: PW_HTTP_FMT_*. */
#define PW_HTTP_FMT_CLOSE 1      /* add "Connection: close" */
#define PW_HTTP_FMT_KEEPALIVE 2  /* add "Connection: keep-alive" (HTTP/1.0 clients) */
#define PW_HTTP_FMT_NOBODY 4     /* HEAD: headers as for body, but no body bytes */
int pw_http_format_response(struct pw_buf *out, int status, const char *content_type,
                            const char *body, size_t len, const char *extra_headers, int flags);
/* pw_http_format_error appends {"error":{"code":code,"message":message}} to out. */
int pw_http_format_error(struct pw_buf *out, const char *code, const char *message);

#endif
