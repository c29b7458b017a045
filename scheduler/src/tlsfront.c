/* tlsfront.c — TLS terminator in front of the HTTP API; see tlsfront.h. */
#include "tlsfront.h"

#include "pw/error.h"
#include "pw/log.h"
#include "pw/util.h"

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define COMP "https"
#define HANDSHAKE_MS 10000

struct pw_tlsfront {
    int lfd;        /* listening socket */
    int stop_pipe[2];
    int port, backend_port;
    size_t max_conns;
    int64_t idle_ms;
    pthread_t acceptor;
    _Atomic int refs; /* the owner, the acceptor's connections */
    _Atomic uint64_t accepted, handshake_failures, refused, open;
    mbedtls_ssl_config conf;
    mbedtls_x509_crt cert;
    mbedtls_pk_context key;
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg; /* thread-safe: mbed TLS is built with MBEDTLS_THREADING_C */
};

struct conn {
    struct pw_tlsfront *f;
    int fd;
};

static void front_free(struct pw_tlsfront *f)
{
    mbedtls_ssl_config_free(&f->conf);
    mbedtls_x509_crt_free(&f->cert);
    mbedtls_pk_free(&f->key);
    mbedtls_ctr_drbg_free(&f->drbg);
    mbedtls_entropy_free(&f->entropy);
    free(f);
}

static void unref(struct pw_tlsfront *f)
{
    if (atomic_fetch_sub(&f->refs, 1) == 1)
        front_free(f);
}

static int write_all(int fd, const unsigned char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int ssl_write_all(mbedtls_ssl_context *ssl, const unsigned char *p, size_t n)
{
    while (n > 0) {
        int w = mbedtls_ssl_write(ssl, p, n);
        if (w == MBEDTLS_ERR_SSL_WANT_READ || w == MBEDTLS_ERR_SSL_WANT_WRITE)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int connect_backend(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

/* pump copies plaintext between the TLS client and the HTTP server until one side ends. */
static void pump(struct pw_tlsfront *f, mbedtls_ssl_context *ssl, int cfd, int bfd)
{
    unsigned char buf[16384];
    for (;;) {
        int client_ready = mbedtls_ssl_get_bytes_avail(ssl) > 0;
        struct pollfd p[2] = {{.fd = cfd, .events = POLLIN}, {.fd = bfd, .events = POLLIN}};
        if (!client_ready) {
            int r = poll(p, 2, (int)f->idle_ms);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                return; /* idle past the timeout, or poll failed */
            client_ready = (p[0].revents & (POLLIN | POLLHUP | POLLERR)) != 0;
        }
        if (client_ready) {
            int n = mbedtls_ssl_read(ssl, buf, sizeof(buf));
            if (n == MBEDTLS_ERR_SSL_WANT_READ || n == MBEDTLS_ERR_SSL_WANT_WRITE || n == MBEDTLS_ERR_SSL_TIMEOUT)
                continue;
            if (n <= 0 || write_all(bfd, buf, (size_t)n) != 0)
                return;
        }
        if (p[1].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = recv(bfd, buf, sizeof(buf), 0);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0 || ssl_write_all(ssl, buf, (size_t)n) != 0)
                return;
        }
    }
}

static void *conn_main(void *arg)
{
    struct conn *c = arg;
    struct pw_tlsfront *f = c->f;
    mbedtls_net_context net = {.fd = c->fd};
    mbedtls_ssl_context ssl;
    mbedtls_ssl_init(&ssl);
    int bfd = -1;
    if (mbedtls_ssl_setup(&ssl, &f->conf) != 0)
        goto out;
    mbedtls_ssl_set_bio(&ssl, &net, mbedtls_net_send, NULL, mbedtls_net_recv_timeout);
    int rv;
    while ((rv = mbedtls_ssl_handshake(&ssl)) != 0) {
        if (rv != MBEDTLS_ERR_SSL_WANT_READ && rv != MBEDTLS_ERR_SSL_WANT_WRITE) {
            char e[128];
            mbedtls_strerror(rv, e, sizeof(e));
            atomic_fetch_add(&f->handshake_failures, 1);
            pw_log_debug(COMP, "TLS handshake failed: %s", e);
            goto out;
        }
    }
    bfd = connect_backend(f->backend_port);
    if (bfd < 0) {
        pw_log_warn(COMP, "cannot reach the HTTP server on 127.0.0.1:%d: %s", f->backend_port, strerror(errno));
        goto out;
    }
    pump(f, &ssl, c->fd, bfd);
    mbedtls_ssl_close_notify(&ssl);
out:
    if (bfd >= 0)
        close(bfd);
    mbedtls_ssl_free(&ssl);
    close(c->fd);
    free(c);
    atomic_fetch_sub(&f->open, 1);
    unref(f);
    return NULL;
}

static void *acceptor_main(void *arg)
{
    struct pw_tlsfront *f = arg;
    for (;;) {
        struct pollfd p[2] = {{.fd = f->lfd, .events = POLLIN}, {.fd = f->stop_pipe[0], .events = POLLIN}};
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (p[1].revents)
            break;
        int fd = accept4(f->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        if (atomic_load(&f->open) >= f->max_conns) {
            atomic_fetch_add(&f->refused, 1);
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        struct conn *c = pw_xcalloc(1, sizeof(*c));
        c->f = f;
        c->fd = fd;
        atomic_fetch_add(&f->refs, 1);
        atomic_fetch_add(&f->open, 1);
        atomic_fetch_add(&f->accepted, 1);
        pthread_t t;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&at, 256 * 1024);
        if (pthread_create(&t, &at, conn_main, c) != 0) {
            close(fd);
            free(c);
            atomic_fetch_sub(&f->open, 1);
            atomic_fetch_sub(&f->refs, 1);
        }
        pthread_attr_destroy(&at);
    }
    return NULL;
}

static int listen_on(const char *addr, int *port_out, char *errbuf, size_t errlen)
{
    const char *colon = strrchr(addr, ':');
    char host[64];
    char *end;
    long port = colon != NULL ? strtol(colon + 1, &end, 10) : -1;
    if (colon == NULL || (size_t)(colon - addr) >= sizeof(host) || *end != '\0' || port < 0 || port > 65535) {
        snprintf(errbuf, errlen, "--https \"%s\": expected IPV4:PORT", addr);
        return -1;
    }
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        snprintf(errbuf, errlen, "--https \"%s\": the host must be an IPv4 address", addr);
        return -1;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, 128) != 0) {
        snprintf(errbuf, errlen, "--https %s: cannot listen: %s", addr, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    socklen_t sl = sizeof(sa);
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    *port_out = ntohs(sa.sin_port);
    return fd;
}

int pw_tlsfront_new(const char *addr, const char *cert_key_file, int backend_port, size_t max_conns,
                    int64_t idle_ms, struct pw_tlsfront **out, char *errbuf, size_t errlen)
{
    struct pw_tlsfront *f = pw_xcalloc(1, sizeof(*f));
    f->lfd = -1;
    f->stop_pipe[0] = f->stop_pipe[1] = -1;
    f->backend_port = backend_port;
    f->max_conns = max_conns > 0 ? max_conns : 256;
    f->idle_ms = idle_ms > 0 ? idle_ms : 60000;
    atomic_store(&f->refs, 1);
    mbedtls_ssl_config_init(&f->conf);
    mbedtls_x509_crt_init(&f->cert);
    mbedtls_pk_init(&f->key);
    mbedtls_entropy_init(&f->entropy);
    mbedtls_ctr_drbg_init(&f->drbg);
    char e[160];
    int m;
    if ((m = mbedtls_x509_crt_parse_file(&f->cert, cert_key_file)) != 0 ||
        (m = mbedtls_pk_parse_keyfile(&f->key, cert_key_file, NULL)) != 0) {
        mbedtls_strerror(m, e, sizeof(e));
        snprintf(errbuf, errlen, "--https-cert %s: needs a certificate and its unencrypted key in one PEM file: %s",
                 cert_key_file, e);
        goto fail;
    }
    if ((m = mbedtls_ctr_drbg_seed(&f->drbg, mbedtls_entropy_func, &f->entropy, (const unsigned char *)"prewarm-https",
                                   13)) != 0 ||
        (m = mbedtls_ssl_config_defaults(&f->conf, MBEDTLS_SSL_IS_SERVER, MBEDTLS_SSL_TRANSPORT_STREAM,
                                         MBEDTLS_SSL_PRESET_DEFAULT)) != 0 ||
        (m = mbedtls_ssl_conf_own_cert(&f->conf, &f->cert, &f->key)) != 0) {
        mbedtls_strerror(m, e, sizeof(e));
        snprintf(errbuf, errlen, "--https-cert %s: %s", cert_key_file, e);
        goto fail;
    }
    mbedtls_ssl_conf_rng(&f->conf, mbedtls_ctr_drbg_random, &f->drbg);
    mbedtls_ssl_conf_min_version(&f->conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3); /* TLS 1.2 */
    mbedtls_ssl_conf_read_timeout(&f->conf, HANDSHAKE_MS);
    if ((f->lfd = listen_on(addr, &f->port, errbuf, errlen)) < 0)
        goto fail;
    if (pipe2(f->stop_pipe, O_CLOEXEC) != 0 || pthread_create(&f->acceptor, NULL, acceptor_main, f) != 0) {
        snprintf(errbuf, errlen, "cannot start the HTTPS acceptor: %s", strerror(errno));
        goto fail;
    }
    pw_log_info(COMP, "HTTPS on port %d (certificate %s) in front of the HTTP API", f->port, cert_key_file);
    *out = f;
    return PW_OK;
fail:
    if (f->lfd >= 0)
        close(f->lfd);
    for (int i = 0; i < 2; i++)
        if (f->stop_pipe[i] >= 0)
            close(f->stop_pipe[i]);
    front_free(f);
    return PW_ERR_INVAL;
}

int pw_tlsfront_port(const struct pw_tlsfront *f)
{
    return f->port;
}

void pw_tlsfront_stats(const struct pw_tlsfront *f, struct pw_tlsfront_stats *out)
{
    out->accepted = atomic_load(&f->accepted);
    out->handshake_failures = atomic_load(&f->handshake_failures);
    out->refused = atomic_load(&f->refused);
    out->open = atomic_load(&f->open);
}

void pw_tlsfront_close(struct pw_tlsfront *f)
{
    if (f == NULL)
        return;
    ssize_t w = write(f->stop_pipe[1], "x", 1);
    (void)w;
    pthread_join(f->acceptor, NULL);
    close(f->lfd);
    close(f->stop_pipe[0]);
    close(f->stop_pipe[1]);
    unref(f);
}
