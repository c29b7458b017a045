/* agentlink.c — NNG rep0 with one context per request in flight; see agentlink.h. */
#include "agentlink.h"

#include "pw/error.h"
#include "pw/log.h"
#include "pw/tlsid.h"
#include "pw/util.h"

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/supplemental/tls/tls.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RECEIVERS 8 /* contexts waiting for a request at any time */

/* A slot is one NNG context and its aio. States:
 *   RECV    — waiting for a request (NNG owns the aio)
 *   HELD    — a request was handed to the daemon; waiting for pw_agentlink_reply
 *   SENDING — the reply is on its way (NNG owns the aio); freed when the send completes */
enum slot_state { SLOT_RECV, SLOT_HELD, SLOT_SENDING };

struct pw_agentlink_req {
    struct pw_agentlink *link;
    nng_ctx ctx;
    nng_aio *aio;
    enum slot_state state;
    int result;            /* of the last aio, set on NNG's thread */
    struct pw_list qlink;  /* on link->done while queued for the loop */
    struct pw_list all;    /* on link->slots */
};

struct pw_agentlink {
    uv_loop_t *loop;
    uv_async_t async;
    nng_socket sock;
    int closing;
    size_t max_held, held, receiving;
    pw_agentlink_cb cb;
    void *arg;
    pthread_mutex_t mu;
    struct pw_list done; /* slots whose aio completed, for the loop */
    struct pw_list slots;
    struct pw_agentlink_stats stats;
    /* TLS link: the agents' CA, and which agent each connection (pipe) proved to be. The
     * table is under mu: NNG's thread removes a pipe's binding when it closes. */
    struct pw_tlsca *ca;
    struct pw_htab bound;
};

/* A connection bound to the agent it proved to be. */
struct binding {
    struct pw_hnode hnode;
    uint32_t pipe;
    char agent_id[PW_NAME_MAX];
};

static int binding_eq(const struct pw_hnode *n, const void *key)
{
    return pw_container_of(n, struct binding, hnode)->pipe == *(const uint32_t *)key;
}

/* NNG thread: a connection went away; forget what it proved. */
static void on_pipe_removed(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    (void)ev;
    struct pw_agentlink *l = arg;
    uint32_t id = nng_pipe_id(p);
    pthread_mutex_lock(&l->mu);
    struct pw_hnode *n = pw_htab_find(&l->bound, pw_hash_u64(id), &id, binding_eq);
    if (n != NULL) {
        pw_htab_remove(&l->bound, n);
        free(pw_container_of(n, struct binding, hnode));
    }
    pthread_mutex_unlock(&l->mu);
}

/* bind_pipe records that connection pipe is agent_id (replacing what it was). */
static void bind_pipe(struct pw_agentlink *l, uint32_t pipe, const char *agent_id)
{
    pthread_mutex_lock(&l->mu);
    struct pw_hnode *n = pw_htab_find(&l->bound, pw_hash_u64(pipe), &pipe, binding_eq);
    struct binding *b = n != NULL ? pw_container_of(n, struct binding, hnode) : NULL;
    if (b == NULL) {
        b = pw_xcalloc(1, sizeof(*b));
        b->pipe = pipe;
        pw_htab_insert(&l->bound, &b->hnode, pw_hash_u64(pipe));
    }
    pw_strlcpy(b->agent_id, agent_id, sizeof(b->agent_id));
    pthread_mutex_unlock(&l->mu);
}

/* bound_to copies the agent pipe proved to be into out; 0 if it proved nothing yet. */
static int bound_to(struct pw_agentlink *l, uint32_t pipe, char out[PW_NAME_MAX])
{
    pthread_mutex_lock(&l->mu);
    struct pw_hnode *n = pw_htab_find(&l->bound, pw_hash_u64(pipe), &pipe, binding_eq);
    if (n != NULL)
        pw_strlcpy(out, pw_container_of(n, struct binding, hnode)->agent_id, PW_NAME_MAX);
    pthread_mutex_unlock(&l->mu);
    return n != NULL;
}

/* NNG thread: only queue the slot and wake the loop. */
static void aio_cb(void *arg)
{
    struct pw_agentlink_req *s = arg;
    struct pw_agentlink *l = s->link;
    int rv = nng_aio_result(s->aio);
    pthread_mutex_lock(&l->mu);
    s->result = rv;
    pw_list_push_tail(&l->done, &s->qlink);
    pthread_mutex_unlock(&l->mu);
    uv_async_send(&l->async);
}

static void slot_free(struct pw_agentlink_req *s)
{
    struct pw_agentlink *l = s->link;
    nng_aio_stop(s->aio);
    nng_msg *m = nng_aio_get_msg(s->aio);
    if (m != NULL && s->state != SLOT_HELD)
        nng_msg_free(m);
    nng_aio_free(s->aio);
    nng_ctx_close(s->ctx);
    pw_list_remove(&s->all);
    if (pw_list_linked(&s->qlink)) {
        pthread_mutex_lock(&l->mu);
        if (pw_list_linked(&s->qlink))
            pw_list_remove(&s->qlink);
        pthread_mutex_unlock(&l->mu);
    }
    free(s);
}

static int start_receiver(struct pw_agentlink *l)
{
    struct pw_agentlink_req *s = pw_xcalloc(1, sizeof(*s));
    s->link = l;
    int rv = nng_ctx_open(&s->ctx, l->sock);
    if (rv != 0) {
        pw_log_error("agentlink", "nng_ctx_open: %s", nng_strerror(rv));
        free(s);
        return PW_ERR_IO;
    }
    rv = nng_aio_alloc(&s->aio, aio_cb, s);
    if (rv != 0) {
        nng_ctx_close(s->ctx);
        free(s);
        return PW_ERR_NOMEM;
    }
    s->state = SLOT_RECV;
    pw_list_push_tail(&l->slots, &s->all);
    l->receiving++;
    nng_ctx_recv(s->ctx, s->aio);
    return PW_OK;
}

static void send_msg(struct pw_agentlink_req *s, const char *data, size_t len)
{
    nng_msg *m;
    if (nng_msg_alloc(&m, 0) != 0 || nng_msg_append(m, data, len) != 0) {
        pw_log_error("agentlink", "cannot allocate a reply of %zu bytes", len);
        abort();
    }
    s->state = SLOT_SENDING;
    nng_aio_set_msg(s->aio, m);
    nng_ctx_send(s->ctx, s->aio);
}

static void send_error(struct pw_agentlink_req *s, const char *code, const char *message)
{
    struct pw_msg e;
    pw_msg_init(&e, PW_MSG_ERROR);
    pw_strlcpy(e.u.error.code, code, sizeof(e.u.error.code));
    pw_strlcpy(e.u.error.message, message, sizeof(e.u.error.message));
    struct pw_buf b;
    pw_buf_init(&b, 4096);
    pw_proto_encode(&e, &b);
    send_msg(s, b.data, b.len);
    pw_buf_fini(&b);
}

/* authenticated checks a request on a TLS link: a hello must prove its agent id, which binds
 * the connection; a report must come on a connection bound to its agent id. Otherwise it
 * answers the request and returns 0. */
static int authenticated(struct pw_agentlink *l, struct pw_agentlink_req *s, uint32_t pipe, const struct pw_msg *m)
{
    char why[300];
    if (m->type == PW_MSG_HELLO) {
        const struct pw_msg_hello *h = &m->u.hello;
        if (pw_tlsca_verify_hello(l->ca, h->auth_cert, h->auth_sig, h->agent_id, h->boot_id, h->auth_ts_ms,
                                  pw_now_wall_ms(), why, sizeof(why)) != PW_OK) {
            l->stats.unauthenticated++;
            pw_log_warn("agentlink", "hello from \"%s\" refused: %s", h->agent_id, why);
            send_error(s, "unauthenticated", why);
            return 0;
        }
        bind_pipe(l, pipe, h->agent_id);
        return 1;
    }
    char who[PW_NAME_MAX];
    if (!bound_to(l, pipe, who)) {
        /* A new connection (the scheduler or the agent restarted): it must say hello first. */
        send_error(s, "rehello", "say hello on this connection first");
        return 0;
    }
    if (strcmp(who, m->u.report.agent_id) != 0) {
        l->stats.unauthenticated++;
        snprintf(why, sizeof(why), "this connection is agent %s, not %s", who, m->u.report.agent_id);
        pw_log_warn("agentlink", "report refused: %s", why);
        send_error(s, "unauthenticated", why);
        return 0;
    }
    return 1;
}

static void on_received(struct pw_agentlink *l, struct pw_agentlink_req *s)
{
    l->receiving--;
    if (s->result != 0) {
        if (s->result != NNG_ECLOSED && s->result != NNG_ECANCELED)
            pw_log_warn("agentlink", "receive failed: %s", nng_strerror(s->result));
        slot_free(s);
        if (!l->closing)
            start_receiver(l);
        return;
    }
    if (!l->closing)
        start_receiver(l); /* keep RECEIVERS contexts listening while this one is busy */
    nng_msg *m = nng_aio_get_msg(s->aio);
    nng_aio_set_msg(s->aio, NULL);
    l->stats.received++;
    uint32_t pipe = nng_pipe_id(nng_msg_get_pipe(m));
    struct pw_msg msg;
    char err[256] = "";
    int rv = pw_proto_decode(nng_msg_body(m), nng_msg_len(m), &msg, err, sizeof(err));
    nng_msg_free(m);
    if (rv == PW_OK && msg.type != PW_MSG_HELLO && msg.type != PW_MSG_REPORT) {
        pw_msg_fini(&msg);
        snprintf(err, sizeof(err), "agents send hello or report only");
        rv = PW_ERR_PROTO;
    }
    if (rv != PW_OK) {
        l->stats.malformed++;
        pw_log_warn("agentlink", "malformed agent message: %s", err);
        send_error(s, "bad_request", err);
        return;
    }
    if (l->ca != NULL && !authenticated(l, s, pipe, &msg)) {
        pw_msg_fini(&msg);
        return;
    }
    if (l->held >= l->max_held) {
        l->stats.busy++;
        pw_msg_fini(&msg);
        send_error(s, "busy", "too many agents; retry later");
        return;
    }
    s->state = SLOT_HELD;
    l->held++;
    l->cb(l->arg, s, &msg);
    pw_msg_fini(&msg);
}

static void on_async(uv_async_t *h)
{
    struct pw_agentlink *l = h->data;
    for (;;) {
        pthread_mutex_lock(&l->mu);
        struct pw_list *e = pw_list_head(&l->done);
        if (e != NULL)
            pw_list_remove(e);
        pthread_mutex_unlock(&l->mu);
        if (e == NULL)
            break;
        struct pw_agentlink_req *s = pw_container_of(e, struct pw_agentlink_req, qlink);
        if (s->state == SLOT_RECV) {
            on_received(l, s);
        } else if (s->state == SLOT_SENDING) {
            if (s->result == 0)
                l->stats.replied++;
            slot_free(s);
        }
    }
}

int pw_agentlink_new(uv_loop_t *loop, const char *url, size_t max_held, const struct pw_agentlink_tls *tls,
                     pw_agentlink_cb cb, void *arg, struct pw_agentlink **out, char *errbuf, size_t errlen)
{
    if (errlen > 0)
        errbuf[0] = '\0';
    int is_tls = strncmp(url, "tls+tcp://", 10) == 0;
    if (is_tls != (tls != NULL && tls->cert_key_file != NULL && tls->ca_file != NULL)) {
        snprintf(errbuf, errlen, "agent link %s: %s", url,
                 is_tls ? "a tls+tcp:// URL needs --agents-tls-cert and --agents-tls-ca"
                        : "--agents-tls-cert/--agents-tls-ca need a tls+tcp:// URL");
        return PW_ERR_INVAL;
    }
    struct pw_tlsca *ca = NULL;
    if (is_tls) {
        char why[512];
        if (pw_tlsca_load(tls->ca_file, &ca, why, sizeof(why)) != PW_OK) {
            snprintf(errbuf, errlen, "--agents-tls-ca %s", why);
            return PW_ERR_INVAL;
        }
    }
    struct pw_agentlink *l = pw_xcalloc(1, sizeof(*l));
    l->ca = ca;
    pw_htab_init(&l->bound);
    l->loop = loop;
    l->cb = cb;
    l->arg = arg;
    l->max_held = max_held;
    pw_list_init(&l->done);
    pw_list_init(&l->slots);
    pthread_mutex_init(&l->mu, NULL);
    int rv = nng_rep0_open(&l->sock);
    if (rv == 0)
        /* A little over the protocol's cap (NNG counts its routing header too), so a slightly
         * oversized message still gets a clear error from the decoder; anything larger is
         * dropped by NNG with its connection. */
        rv = nng_socket_set_size(l->sock, NNG_OPT_RECVMAXSZ, PW_PROTO_MAX_MSG + 64);
    nng_listener lst = NNG_LISTENER_INITIALIZER;
    if (rv == 0 && ca != NULL)
        rv = nng_pipe_notify(l->sock, NNG_PIPE_EV_REM_POST, on_pipe_removed, l);
    if (rv == 0)
        rv = nng_listener_create(&lst, l->sock, url);
    if (rv == 0 && ca != NULL) {
        /* Mutual TLS: only agents with a certificate from the CA connect at all. */
        if ((rv = nng_listener_set_string(lst, NNG_OPT_TLS_CERT_KEY_FILE, tls->cert_key_file)) != 0 ||
            (rv = nng_listener_set_string(lst, NNG_OPT_TLS_CA_FILE, tls->ca_file)) != 0 ||
            (rv = nng_listener_set_int(lst, NNG_OPT_TLS_AUTH_MODE, NNG_TLS_AUTH_MODE_REQUIRED)) != 0)
            snprintf(errbuf, errlen, "agent link TLS (--agents-tls-cert %s, --agents-tls-ca %s): %s",
                     tls->cert_key_file, tls->ca_file, nng_strerror(rv));
    }
    if (rv == 0)
        rv = nng_listener_start(lst, 0);
    if (rv != 0) {
        if (errbuf[0] == '\0')
            snprintf(errbuf, errlen, "agent link: cannot listen on %s: %s", url, nng_strerror(rv));
        nng_close(l->sock);
        pthread_mutex_destroy(&l->mu);
        pw_htab_fini(&l->bound);
        pw_tlsca_free(ca);
        free(l);
        return PW_ERR_IO;
    }
    uv_async_init(loop, &l->async, on_async);
    l->async.data = l;
    for (int i = 0; i < RECEIVERS; i++)
        start_receiver(l);
    *out = l;
    return PW_OK;
}

void pw_agentlink_reply(struct pw_agentlink_req *s, const struct pw_msg *m)
{
    struct pw_agentlink *l = s->link;
    l->held--;
    struct pw_buf b;
    pw_buf_init(&b, PW_PROTO_MAX_MSG);
    if (pw_proto_encode(m, &b) != PW_OK) {
        pw_buf_fini(&b);
        pw_log_error("agentlink", "reply larger than %d bytes; sending an error instead", PW_PROTO_MAX_MSG);
        send_error(s, "too_big", "reply too large");
        return;
    }
    send_msg(s, b.data, b.len);
    pw_buf_fini(&b);
}

static void on_async_closed(uv_handle_t *h)
{
    struct pw_agentlink *l = h->data;
    /* The socket is closed: no pipe callback runs any more. */
    size_t bucket = 0;
    struct pw_hnode *it = NULL, *n;
    while ((n = pw_htab_next(&l->bound, &bucket, &it)) != NULL) {
        pw_htab_remove(&l->bound, n);
        free(pw_container_of(n, struct binding, hnode));
    }
    pw_htab_fini(&l->bound);
    pw_tlsca_free(l->ca);
    pthread_mutex_destroy(&l->mu);
    free(l);
}

void pw_agentlink_close(struct pw_agentlink *l)
{
    l->closing = 1;
    nng_close(l->sock);
    struct pw_list *it, *tmp;
    pw_list_foreach_safe(it, tmp, &l->slots) slot_free(pw_container_of(it, struct pw_agentlink_req, all));
    uv_close((uv_handle_t *)&l->async, on_async_closed);
}

void pw_agentlink_stats(const struct pw_agentlink *l, struct pw_agentlink_stats *out)
{
    *out = l->stats;
    out->held = l->held;
}
