/* topology.h — the host's NUMA layout as the agent offers it to the scheduler.
 *
 * Read from sysfs/procfs under a configurable root (so tests use fixture trees): one entry per
 * <root>/sys/devices/system/node/node<N>, or, on hosts without NUMA sysfs, one node built from
 * <root>/proc/meminfo and <root>/sys/devices/system/cpu/online. */
#ifndef PW_TOPOLOGY_H
#define PW_TOPOLOGY_H

#include "pw/proto.h"

#include <stddef.h>

/* The highest CPU number a cpulist may name (exclusive). */
#define PW_TOPOLOGY_MAX_CPUS 8192

struct pw_topology {
    struct pw_numa_node nodes[PW_PROTO_MAX_NUMA]; /* ascending by id */
    size_t nnodes;
    int from_fallback; /* 1 when built from /proc/meminfo and cpu/online */
};

/* pw_cpulist_parse parses kernel cpulist syntax ("0-3,8-11", "0", "" and surrounding
 * whitespace) and returns the number of distinct CPUs in *ncpus. When canon is not NULL it
 * receives the canonical form ("0-3,8-11", ascending, merged). Returns PW_OK, PW_ERR_PARSE for
 * garbage (errbuf says where), or PW_ERR_TOOBIG when canon does not fit canonlen. Pure; any
 * thread. */
int pw_cpulist_parse(const char *s, int *ncpus, char *canon, size_t canonlen, char *errbuf,
                     size_t errlen);

/* pw_topology_load fills t from the tree under root ("/" for the real host; NULL means "/").
 * vcpu_total of each node is floor(ncpus * overcommit), vcpu_free starts equal to it;
 * overcommit must be > 0. Returns PW_OK, or PW_ERR_IO (a file is missing or unreadable),
 * PW_ERR_PARSE (a file is malformed), PW_ERR_INVAL, PW_ERR_TOOBIG, with a one-line reason in
 * errbuf. t is caller-owned and holds no pointers. Any thread. */
int pw_topology_load(struct pw_topology *t, const char *root, double overcommit, char *errbuf,
                     size_t errlen);

/* pw_topology_read_load reads the 1-minute load average from <root>/proc/loadavg. Returns
 * PW_OK, PW_ERR_IO or PW_ERR_PARSE. */
int pw_topology_read_load(const char *root, double *load);

#endif
