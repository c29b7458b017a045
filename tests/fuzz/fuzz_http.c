/* fuzz_http.c — libFuzzer target for the HTTP request parser behind common/src/http.c.
 *
 * The first input byte picks where the rest is split into two reads; the parser is driven the
 * way a connection drives it (unconsumed bytes kept and fed again after each request), with
 * small limits that every complete request must respect. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/src/http_internal.h"
#include "pw/error.h"

#define CHECK(cond)          \
    do {                     \
        if (!(cond))         \
            abort();         \
    } while (0)

static const struct pw_http_limits lim = {
    .max_header_bytes = 512,
    .max_body_bytes = 1024,
    .max_headers = 8,
    .max_connections = 1,
    .idle_timeout_ms = 0,
};

static void check_request(const struct pw_http_req *r)
{
    size_t blen;
    const char *body = pw_http_req_body(r, &blen);
    CHECK(blen <= lim.max_body_bytes && body[blen] == '\0');
    CHECK(r->nheaders <= lim.max_headers);
    CHECK(r->hdrs.len <= lim.max_header_bytes && r->url.len <= lim.max_header_bytes);
    CHECK(pw_http_req_method(r)[0] != '\0');
    CHECK(pw_http_req_path(r)[0] == '/');
    CHECK(strchr(pw_http_req_path(r), '?') == NULL);
    CHECK(strlen(pw_http_req_query(r)) < r->url.len);
    CHECK(!pw_http_req_gone(r));
    for (size_t i = 0; i < r->nheaders; i++) {
        const char *name = r->hdrs.data + r->headers[i].name;
        CHECK(r->headers[i].name < r->headers[i].value && r->headers[i].value < r->hdrs.len);
        CHECK(pw_http_req_header(r, name) != NULL);
    }
    pw_http_req_header(r, "content-length");

    /* The answer a handler would give, with request bytes in it. */
    struct pw_buf out;
    pw_buf_init(&out, 4096 + blen);
    CHECK(pw_http_format_response(&out, 200, "text/plain", body, blen, NULL,
                                  r->keep_alive ? 0 : PW_HTTP_FMT_CLOSE) == PW_OK);
    CHECK(strncmp(out.data, "HTTP/1.1 200 OK\r\n", 17) == 0);
    pw_buf_reset(&out);
    CHECK(pw_http_format_error(&out, "bad_request", pw_http_req_path(r)) == PW_OK);
    pw_buf_fini(&out);
}

/* feed runs the parser over in[0..len) like a connection; returns 0 once it must stop. */
static int feed(struct pw_http_parser *p, const char *in, size_t len)
{
    size_t off = 0;
    for (;;) {
        size_t used = 0;
        enum pw_http_parse st = pw_http_parser_feed(p, in + off, len - off, &used);
        CHECK(used <= len - off);
        off += used;
        switch (st) {
        case PW_HTTP_PARSE_MORE:
            CHECK(off == len);
            return 1;
        case PW_HTTP_PARSE_REQUEST: {
            struct pw_http_req *r = pw_http_parser_take(p);
            int keep = r->keep_alive;
            check_request(r);
            pw_http_req_free(r);
            if (!keep)
                return 0;
            break;
        }
        case PW_HTTP_PARSE_ERROR:
            CHECK(p->err_status == 400 || p->err_status == 413 || p->err_status == 414 ||
                  p->err_status == 431);
            CHECK(p->err_code != NULL);
            return 0;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct pw_http_parser p;
    if (size == 0)
        return 0;
    size_t split = (size_t)data[0] * (size - 1) / 256;
    const char *in = (const char *)data + 1;
    size--;
    pw_http_parser_init(&p, &lim);
    if (feed(&p, in, split))
        feed(&p, in + split, size - split);
    pw_http_parser_fini(&p);
    return 0;
}
