/* gateway.h — prewarm-gateway's front door: /invoke/{fn} acquires a lease from prewarmd,
 * proxies the request to the leased VM, streams its answer back and releases the lease
 * (docs/gateway.md).
 *
 * Threads: everything runs on the loop thread. */
#ifndef PW_GATEWAY_H
#define PW_GATEWAY_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct pw_gateway;

struct pw_gateway_cfg {
    char listen_host[64];
    int listen_port;
    char scheduler[128];      /* host:port of prewarmd's HTTP API */
    int64_t acquire_timeout_ms; /* how long prewarmd may wait for a VM */
    int64_t vm_timeout_ms;      /* the VM's answer head, then each wait for more of its body */
    size_t max_body;            /* request bodies (answers are streamed, not capped) */
    size_t max_inflight;        /* invocations at once; beyond: 503 */
    size_t scheduler_conns;     /* keep-alive connections to prewarmd */
    char token[300];            /* bearer token for prewarmd's API (a gateway role); "" none */
};
void pw_gateway_cfg_default(struct pw_gateway_cfg *cfg);

/* pw_gateway_new starts listening. On PW_OK *out belongs to the caller, released with
 * pw_gateway_close; errbuf gets a reason on failure. */
int pw_gateway_new(uv_loop_t *loop, const struct pw_gateway_cfg *cfg, struct pw_gateway **out, char *errbuf,
                   size_t errlen);
int pw_gateway_port(const struct pw_gateway *g);
/* pw_gateway_close answers every invocation in flight with 503, releases their leases, stops
 * listening and frees g once the releases are answered (the loop then runs out). */
void pw_gateway_close(struct pw_gateway *g);

#endif
