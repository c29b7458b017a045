/* tlsfront.h — optional TLS for prewarmd's HTTP API: a terminator in front of the plain HTTP
 * server.
 *
 * With --https HOST:PORT and --https-cert FILE (certificate and key, one PEM file) an acceptor
 * thread takes TLS connections (mbed TLS, TLS 1.2+), each served by its own thread: after the
 * handshake it opens a connection to the plain HTTP server on loopback and copies bytes both
 * ways until either side closes or stays idle past the HTTP idle timeout. Everything the API
 * does (tokens, limits, keep-alive) is the HTTP server's; the terminator only adds the
 * transport. At most max_conns connections at once: beyond that new ones are closed at once.
 *
 * Threads: new/close/port on the loop thread; the terminator's own threads touch nothing of
 * the daemon's. */
#ifndef PW_TLSFRONT_H
#define PW_TLSFRONT_H

#include <stddef.h>
#include <stdint.h>

struct pw_tlsfront;

struct pw_tlsfront_stats {
    uint64_t accepted, handshake_failures, refused; /* refused: over max_conns */
    uint64_t open;
};

/* pw_tlsfront_new listens on listen ("HOST:PORT"; port 0 picks one) and forwards to
 * backend_port on 127.0.0.1. On PW_OK *out is the caller's (pw_tlsfront_close). */
int pw_tlsfront_new(const char *addr, const char *cert_key_file, int backend_port, size_t max_conns,
                    int64_t idle_ms, struct pw_tlsfront **out, char *errbuf, size_t errlen);
int pw_tlsfront_port(const struct pw_tlsfront *f);
void pw_tlsfront_stats(const struct pw_tlsfront *f, struct pw_tlsfront_stats *out);
/* pw_tlsfront_close stops accepting and frees f once its connections are done (they end within
 * the idle timeout, or at once when the HTTP server closes theirs). */
void pw_tlsfront_close(struct pw_tlsfront *f);

#endif
