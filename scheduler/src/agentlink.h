/* agentlink.h — the scheduler's end of the agent protocol: an NNG rep0 socket with contexts.
 *
 * Each agent keeps one request outstanding. A request arrives on an NNG context; the link
 * decodes it and hands it to the loop thread as a pw_agentlink_req, which stays open (holding
 * its context) until pw_agentlink_reply — so the daemon can hold a report as a long poll and
 * answer the moment it has commands. Meanwhile fresh contexts keep receiving. Malformed
 * messages are answered with an error and counted; the agent's connection is kept.
 *
 * With a tls+tcp:// URL the link requires mutual TLS (agents need a certificate from the given
 * CA) and checks each hello's proof that the agent holds the key of a certificate naming its
 * agent id (pw/tlsid.h); the connection is then bound to that id, and a report on it claiming
 * another id, or on a connection that never said a valid hello, is refused ("unauthenticated",
 * or "rehello" for a connection that has not said hello yet).
 *
 * Threads: NNG completions run on NNG's threads and only push onto a locked queue and wake the
 * loop (uv_async); everything else, including every callback, runs on the loop thread. */
#ifndef PW_AGENTLINK_H
#define PW_AGENTLINK_H

#include "pw/proto.h"

#include <stdint.h>
#include <uv.h>

struct pw_agentlink;
struct pw_agentlink_req;

/* Called on the loop thread with a decoded request. msg is owned by the link and valid during
 * the call only. The callee owns req and must answer it exactly once (now or later) with
 * pw_agentlink_reply. */
typedef void (*pw_agentlink_cb)(void *arg, struct pw_agentlink_req *req, const struct pw_msg *msg);

struct pw_agentlink_stats {
    uint64_t received, replied, malformed, busy, held;
    uint64_t unauthenticated; /* TLS link: hellos without a valid proof, reports off their binding */
};

/* TLS for a tls+tcp:// URL: the scheduler's certificate and key (one PEM file) and the CA that
 * signs agents' certificates. */
struct pw_agentlink_tls {
    const char *cert_key_file;
    const char *ca_file;
};

/* pw_agentlink_new listens on url (tcp://host:port, tls+tcp://host:port with tls set,
 * ipc://path) with room for max_held
 * requests held at once (beyond it, requests are answered "busy" at once). On PW_OK *out is
 * owned by the caller (pw_agentlink_close). On error errbuf says why. */
int pw_agentlink_new(uv_loop_t *loop, const char *url, size_t max_held, const struct pw_agentlink_tls *tls,
                     pw_agentlink_cb cb, void *arg, struct pw_agentlink **out, char *errbuf, size_t errlen);

/* pw_agentlink_reply encodes m, sends it on req's context and releases req. m is not taken. */
void pw_agentlink_reply(struct pw_agentlink_req *req, const struct pw_msg *m);

/* pw_agentlink_close closes the socket and frees everything, held requests included (they are
 * dropped without an answer). Call on the loop thread; the loop must run once more to close
 * the async handle, after which the link is freed. */
void pw_agentlink_close(struct pw_agentlink *l);

void pw_agentlink_stats(const struct pw_agentlink *l, struct pw_agentlink_stats *out);

#endif
