/* client.c — prewarmctl's blocking HTTP/1.1 client: parse the server URL, connect with a
 * deadline, send one request with "Connection: close", read the status line, the headers and a
 * body framed by Content-Length, chunked encoding or the end of the connection. Every wait is
 * a poll() against one deadline and the response never grows past PW_CLI_RESP_MAX. */
#include "client.h"

#include "pw/error.h"

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define HEAD_MAX (64 * 1024)

struct url {
    int tls; /* https:// */
    char host[256];
    char port[8];
    char prefix[256]; /* path prefix without a trailing slash, "" for none */
};

static int parse_url(const char *s, struct url *u, char *err, size_t errlen)
{
    memset(u, 0, sizeof(*u));
    if (strncmp(s, "https://", 8) == 0) {
        u->tls = 1;
        s += 8;
    } else if (strncmp(s, "http://", 7) != 0) {
        if (strstr(s, "://") != NULL) {
            pw_errf(err, errlen, "server URL %s: only http:// and https:// are supported", s);
            return PW_ERR_INVAL;
        }
    } else {
        s += 7;
    }
    const char *slash = strchr(s, '/');
    size_t hostport = slash ? (size_t)(slash - s) : strlen(s);
    char hp[300];
    if (hostport == 0 || hostport >= sizeof(hp)) {
        pw_errf(err, errlen, "server URL has no valid host");
        return PW_ERR_INVAL;
    }
    memcpy(hp, s, hostport);
    hp[hostport] = '\0';
    char *colon;
    if (hp[0] == '[') { /* [v6]:port */
        char *close = strchr(hp, ']');
        if (close == NULL) {
            pw_errf(err, errlen, "server URL: unterminated [ in host");
            return PW_ERR_INVAL;
        }
        *close = '\0';
        pw_strlcpy(u->host, hp + 1, sizeof(u->host));
        colon = close[1] == ':' ? close + 1 : NULL;
    } else {
        colon = strrchr(hp, ':');
        if (colon != NULL)
            *colon = '\0';
        pw_strlcpy(u->host, hp, sizeof(u->host));
    }
    if (colon != NULL) {
        char *end;
        long port = strtol(colon + 1, &end, 10);
        if (*end != '\0' || port < 1 || port > 65535) {
            pw_errf(err, errlen, "server URL: bad port \"%s\"", colon + 1);
            return PW_ERR_INVAL;
        }
        snprintf(u->port, sizeof(u->port), "%ld", port);
    } else {
        pw_strlcpy(u->port, u->tls ? "443" : "80", sizeof(u->port));
    }
    if (u->host[0] == '\0') {
        pw_errf(err, errlen, "server URL has no host");
        return PW_ERR_INVAL;
    }
    if (slash != NULL) {
        pw_strlcpy(u->prefix, slash, sizeof(u->prefix));
        size_t n = strlen(u->prefix);
        while (n > 0 && u->prefix[n - 1] == '/')
            u->prefix[--n] = '\0';
    }
    return PW_OK;
}

static int remaining(int64_t deadline)
{
    int64_t left = deadline - pw_now_mono_ms();
    return left < 0 ? 0 : (int)left;
}

/* wait_fd polls fd for events until the deadline; 1 ready, 0 timed out, -1 error. */
static int wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        struct pollfd p = {.fd = fd, .events = events};
        int rv = poll(&p, 1, remaining(deadline));
        if (rv < 0 && errno == EINTR)
            continue;
        return rv < 0 ? -1 : rv;
    }
}

static int connect_to(const struct url *u, const char *server, int64_t deadline, char *err, size_t errlen)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int gai = getaddrinfo(u->host, u->port, &hints, &res);
    if (gai != 0) {
        pw_errf(err, errlen, "cannot resolve %s: %s", u->host, gai_strerror(gai));
        return -1;
    }
    int fd = -1, last_errno = 0;
    for (struct addrinfo *ai = res; ai != NULL && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
        if (fd < 0) {
            last_errno = errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
            break;
        if (errno == EINPROGRESS) {
            int rv = wait_fd(fd, POLLOUT, deadline);
            int soerr = 0;
            socklen_t sl = sizeof(soerr);
            if (rv == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr == 0)
                break;
            last_errno = rv == 0 ? ETIMEDOUT : soerr ? soerr : errno;
        } else {
            last_errno = errno;
        }
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        pw_errf(err, errlen, "cannot connect to %s: %s (is prewarmd running there? see --server, $PREWARM_SERVER)",
                server, strerror(last_errno ? last_errno : ECONNREFUSED));
    return fd;
}

/* ---- TLS (https://): mbed TLS over the same non-blocking socket and deadline ---- */

struct tls {
    int fd;
    int64_t deadline;
    mbedtls_ssl_context ssl;
    mbedtls_ssl_config conf;
    mbedtls_x509_crt ca;
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
};

static int bio_send(void *ctx, const unsigned char *buf, size_t len)
{
    struct tls *t = ctx;
    for (;;) {
        ssize_t w = send(t->fd, buf, len, MSG_NOSIGNAL);
        if (w >= 0)
            return (int)w;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if (wait_fd(t->fd, POLLOUT, t->deadline) == 1)
                continue;
            return MBEDTLS_ERR_SSL_TIMEOUT;
        }
        return MBEDTLS_ERR_NET_SEND_FAILED;
    }
}

static int bio_recv(void *ctx, unsigned char *buf, size_t len)
{
    struct tls *t = ctx;
    for (;;) {
        ssize_t r = recv(t->fd, buf, len, 0);
        if (r >= 0)
            return (int)r;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if (wait_fd(t->fd, POLLIN, t->deadline) == 1)
                continue;
            return MBEDTLS_ERR_SSL_TIMEOUT;
        }
        return MBEDTLS_ERR_NET_RECV_FAILED;
    }
}

static void tls_free(struct tls *t)
{
    if (t == NULL)
        return;
    mbedtls_ssl_free(&t->ssl);
    mbedtls_ssl_config_free(&t->conf);
    mbedtls_x509_crt_free(&t->ca);
    mbedtls_ctr_drbg_free(&t->drbg);
    mbedtls_entropy_free(&t->entropy);
    free(t);
}

/* tls_start runs the handshake, verifying the server against $PREWARM_CA (a PEM file) or the
 * system's CA bundle, and its name against the URL's host. */
static struct tls *tls_start(int fd, const struct url *u, int64_t deadline, char *err, size_t errlen)
{
    struct tls *t = pw_xcalloc(1, sizeof(*t));
    t->fd = fd;
    t->deadline = deadline;
    mbedtls_ssl_init(&t->ssl);
    mbedtls_ssl_config_init(&t->conf);
    mbedtls_x509_crt_init(&t->ca);
    mbedtls_entropy_init(&t->entropy);
    mbedtls_ctr_drbg_init(&t->drbg);
    const char *ca = getenv("PREWARM_CA");
    if (ca == NULL || ca[0] == '\0')
        ca = "/etc/ssl/certs/ca-certificates.crt";
    char e[200];
    int m;
    if ((m = mbedtls_x509_crt_parse_file(&t->ca, ca)) < 0) {
        mbedtls_strerror(m, e, sizeof(e));
        pw_errf(err, errlen, "cannot read the CA certificates %s ($PREWARM_CA): %s", ca, e);
        goto fail;
    }
    if ((m = mbedtls_ctr_drbg_seed(&t->drbg, mbedtls_entropy_func, &t->entropy, (const unsigned char *)"prewarmctl",
                                   10)) != 0 ||
        (m = mbedtls_ssl_config_defaults(&t->conf, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_STREAM,
                                         MBEDTLS_SSL_PRESET_DEFAULT)) != 0) {
        mbedtls_strerror(m, e, sizeof(e));
        pw_errf(err, errlen, "TLS setup: %s", e);
        goto fail;
    }
    mbedtls_ssl_conf_authmode(&t->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
    mbedtls_ssl_conf_ca_chain(&t->conf, &t->ca, NULL);
    mbedtls_ssl_conf_rng(&t->conf, mbedtls_ctr_drbg_random, &t->drbg);
    if ((m = mbedtls_ssl_setup(&t->ssl, &t->conf)) != 0 || (m = mbedtls_ssl_set_hostname(&t->ssl, u->host)) != 0) {
        mbedtls_strerror(m, e, sizeof(e));
        pw_errf(err, errlen, "TLS setup: %s", e);
        goto fail;
    }
    mbedtls_ssl_set_bio(&t->ssl, t, bio_send, bio_recv, NULL);
    while ((m = mbedtls_ssl_handshake(&t->ssl)) != 0) {
        if (m == MBEDTLS_ERR_SSL_WANT_READ || m == MBEDTLS_ERR_SSL_WANT_WRITE)
            continue;
        uint32_t flags = mbedtls_ssl_get_verify_result(&t->ssl);
        if (flags != 0 && flags != (uint32_t)-1) {
            mbedtls_x509_crt_verify_info(e, sizeof(e), "", flags);
            for (char *p = e; *p; p++)
                if (*p == '\n')
                    *p = ' ';
            pw_errf(err, errlen, "TLS: the server's certificate is not trusted:%s(see $PREWARM_CA)", e);
        } else {
            mbedtls_strerror(m, e, sizeof(e));
            pw_errf(err, errlen, "TLS handshake with %s: %s", u->host, e);
        }
        goto fail;
    }
    return t;
fail:
    tls_free(t);
    return NULL;
}

static int tls_send_all(struct tls *t, const char *p, size_t n, char *err, size_t errlen)
{
    while (n > 0) {
        int w = mbedtls_ssl_write(&t->ssl, (const unsigned char *)p, n);
        if (w == MBEDTLS_ERR_SSL_WANT_READ || w == MBEDTLS_ERR_SSL_WANT_WRITE)
            continue;
        if (w <= 0) {
            pw_errf(err, errlen, w == MBEDTLS_ERR_SSL_TIMEOUT ? "timed out sending the request" : "TLS send failed");
            return PW_ERR_IO;
        }
        p += w;
        n -= (size_t)w;
    }
    return PW_OK;
}

/* tls_recv reads like recv: > 0 bytes, 0 at the end, -1 with errno (ETIMEDOUT at the deadline). */
static ssize_t tls_recv(struct tls *t, char *buf, size_t n)
{
    for (;;) {
        int r = mbedtls_ssl_read(&t->ssl, (unsigned char *)buf, n);
        if (r == MBEDTLS_ERR_SSL_WANT_READ || r == MBEDTLS_ERR_SSL_WANT_WRITE)
            continue;
        if (r >= 0)
            return r;
        if (r == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY)
            return 0;
        errno = r == MBEDTLS_ERR_SSL_TIMEOUT ? ETIMEDOUT : EIO;
        return -1;
    }
}

static int send_all(int fd, const char *p, size_t n, int64_t deadline, char *err, size_t errlen)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int rv = wait_fd(fd, POLLOUT, deadline);
            if (rv == 1)
                continue;
            pw_errf(err, errlen, rv == 0 ? "timed out sending the request" : "send: %s", strerror(errno));
            return PW_ERR_IO;
        }
        pw_errf(err, errlen, "send: %s", strerror(errno));
        return PW_ERR_IO;
    }
    return PW_OK;
}

/* find_header returns the value of header name in head (lines after the status line), copied
 * into out, or NULL. */
static const char *find_header(const char *head, const char *name, char *out, size_t size)
{
    size_t nlen = strlen(name);
    const char *p = strstr(head, "\r\n");
    while (p != NULL && p[2] != '\0') {
        p += 2;
        const char *eol = strstr(p, "\r\n");
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        if (len > nlen && p[nlen] == ':' && strncasecmp(p, name, nlen) == 0) {
            const char *v = p + nlen + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            size_t vl = (size_t)(p + len - v);
            while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
                vl--;
            if (vl >= size)
                vl = size - 1;
            memcpy(out, v, vl);
            out[vl] = '\0';
            return out;
        }
        p = eol;
    }
    return NULL;
}

/* dechunk decodes a complete chunked body in place. Returns 1 when complete, 0 when more is
 * needed, -1 when malformed. */
static int dechunk(const char *in, size_t n, struct pw_buf *out)
{
    size_t i = 0;
    for (;;) {
        const char *eol = memmem(in + i, n - i, "\r\n", 2);
        if (eol == NULL)
            return 0;
        char *end;
        unsigned long len = strtoul(in + i, &end, 16);
        if (end == in + i)
            return -1;
        i = (size_t)(eol - in) + 2;
        if (len == 0)
            return 1;
        if (len > PW_CLI_RESP_MAX || n - i < len + 2)
            return len > PW_CLI_RESP_MAX ? -1 : 0;
        if (pw_buf_add(out, in + i, len) != PW_OK)
            return -1;
        i += len + 2;
    }
}

int pw_cli_http_do(const char *server, const char *token, const char *method, const char *path, const char *body,
                   int timeout_ms, struct pw_cli_resp *resp, char *err, size_t errlen)
{
    memset(resp, 0, sizeof(*resp));
    struct url u;
    int rv = parse_url(server, &u, err, errlen);
    if (rv != PW_OK)
        return rv;
    int64_t deadline = pw_now_mono_ms() + timeout_ms;
    struct pw_buf req, in;
    pw_buf_init(&req, PW_CLI_RESP_MAX);
    pw_buf_init(&in, PW_CLI_RESP_MAX + HEAD_MAX);
    struct tls *t = NULL;
    int fd = connect_to(&u, server, deadline, err, errlen);
    if (fd < 0) {
        rv = PW_ERR_UNAVAIL;
        goto out;
    }
    if (u.tls && (t = tls_start(fd, &u, deadline, err, errlen)) == NULL) {
        rv = PW_ERR_UNAVAIL;
        goto out;
    }
    size_t blen = body ? strlen(body) : 0;
    int hv6 = strchr(u.host, ':') != NULL;
    rv = pw_buf_printf(&req, "%s %s%s HTTP/1.1\r\nHost: %s%s%s:%s\r\nUser-Agent: prewarmctl\r\nAccept: application/json\r\n"
                             "Connection: close\r\n",
                       method, u.prefix, path, hv6 ? "[" : "", u.host, hv6 ? "]" : "", u.port);
    if (rv == PW_OK && token != NULL && token[0] != '\0')
        rv = pw_buf_printf(&req, "Authorization: Bearer %s\r\n", token);
    if (rv == PW_OK && (body != NULL || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0))
        rv = pw_buf_printf(&req, "Content-Type: application/json\r\nContent-Length: %zu\r\n", blen);
    if (rv == PW_OK)
        rv = pw_buf_adds(&req, "\r\n");
    if (rv == PW_OK && blen > 0)
        rv = pw_buf_add(&req, body, blen);
    if (rv != PW_OK) {
        pw_errf(err, errlen, "request too large");
        goto out;
    }
    rv = t != NULL ? tls_send_all(t, req.data, req.len, err, errlen) : send_all(fd, req.data, req.len, deadline, err, errlen);
    if (rv != PW_OK)
        goto out;

    /* Read until the answer is complete or the server closes. */
    size_t head_len = 0;
    long long content_length = -1;
    int chunked = 0, eof = 0;
    char tmp[16384], hv[64];
    pw_buf_init(&resp->body, PW_CLI_RESP_MAX);
    for (;;) {
        if (head_len > 0) {
            size_t have = in.len - head_len;
            if (chunked) {
                pw_buf_reset(&resp->body);
                int d = dechunk(in.data + head_len, have, &resp->body);
                if (d < 0) {
                    pw_errf(err, errlen, "malformed chunked response from %s", server);
                    rv = PW_ERR_PROTO;
                    goto out;
                }
                if (d == 1)
                    break;
            } else if (content_length >= 0 && have >= (size_t)content_length) {
                pw_buf_add(&resp->body, in.data + head_len, (size_t)content_length);
                break;
            } else if (eof) {
                if (content_length >= 0) {
                    pw_errf(err, errlen, "the server closed the connection in the middle of its answer");
                    rv = PW_ERR_PROTO;
                    goto out;
                }
                pw_buf_add(&resp->body, in.data + head_len, have);
                break;
            }
        }
        if (eof) {
            pw_errf(err, errlen, "the server at %s closed the connection without an answer", server);
            rv = PW_ERR_PROTO;
            goto out;
        }
        ssize_t r = t != NULL ? tls_recv(t, tmp, sizeof(tmp)) : recv(fd, tmp, sizeof(tmp), 0);
        if (r < 0 && errno == ETIMEDOUT) {
            pw_errf(err, errlen, "timed out after %d ms waiting for an answer from %s", timeout_ms, server);
            rv = PW_ERR_TIMEOUT;
            goto out;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int w = wait_fd(fd, POLLIN, deadline);
            if (w == 1)
                continue;
            if (w == 0)
                pw_errf(err, errlen, "timed out after %d ms waiting for an answer from %s", timeout_ms, server);
            else
                pw_errf(err, errlen, "poll: %s", strerror(errno));
            rv = PW_ERR_TIMEOUT;
            goto out;
        }
        if (r < 0) {
            pw_errf(err, errlen, "reading from %s: %s", server, strerror(errno));
            rv = PW_ERR_IO;
            goto out;
        }
        if (r == 0) {
            eof = 1;
            continue;
        }
        if (pw_buf_add(&in, tmp, (size_t)r) != PW_OK) {
            pw_errf(err, errlen, "the answer from %s exceeds %u bytes", server, PW_CLI_RESP_MAX);
            rv = PW_ERR_TOOBIG;
            goto out;
        }
        if (head_len == 0) {
            char *e = strstr(in.data, "\r\n\r\n");
            if (e == NULL) {
                if (in.len > HEAD_MAX) {
                    pw_errf(err, errlen, "the answer's header from %s is too large", server);
                    rv = PW_ERR_PROTO;
                    goto out;
                }
                continue;
            }
            head_len = (size_t)(e - in.data) + 4;
            int major, minor, status;
            if (sscanf(in.data, "HTTP/%d.%d %d", &major, &minor, &status) != 3 || status < 100 || status > 599) {
                pw_errf(err, errlen, "%s did not answer with HTTP", server);
                rv = PW_ERR_PROTO;
                goto out;
            }
            resp->status = status;
            *e = '\0'; /* the head becomes a string for find_header; restored below */
            if (find_header(in.data, "Content-Length", hv, sizeof(hv)) != NULL) {
                char *end;
                content_length = strtoll(hv, &end, 10);
                if (*end != '\0' || content_length < 0 || content_length > PW_CLI_RESP_MAX) {
                    pw_errf(err, errlen, "bad Content-Length \"%s\" from %s", hv, server);
                    rv = PW_ERR_PROTO;
                    goto out;
                }
            }
            if (find_header(in.data, "Transfer-Encoding", hv, sizeof(hv)) != NULL && strcasestr(hv, "chunked"))
                chunked = 1;
            *e = '\r';
            if (status == 204 || status == 304 || strcmp(method, "HEAD") == 0)
                break;
        }
    }
    rv = PW_OK;
out:
    tls_free(t);
    if (fd >= 0)
        close(fd);
    pw_buf_fini(&req);
    pw_buf_fini(&in);
    if (rv != PW_OK)
        pw_cli_resp_fini(resp);
    return rv;
}

void pw_cli_resp_fini(struct pw_cli_resp *resp)
{
    pw_buf_fini(&resp->body);
    resp->status = 0;
}
