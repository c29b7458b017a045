/* numabind.c — NUMA bindings of processes with raw system calls: sched_setaffinity,
 * set_mempolicy(MPOL_BIND) and migrate_pages (numabind.h). pw_numabind_self runs after fork in
 * a multi-threaded agent, so it keeps to system calls and formats its errors by hand. */
#include "pw/numabind.h"

#include "pw/error.h"
#include "pw/topology.h"
#include "pw/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef MPOL_BIND
#define MPOL_BIND 2 /* include/uapi/linux/mempolicy.h */
#endif

#define NODE_ONLINE_PATH "/sys/devices/system/node/online"
#define LONG_BITS (8 * sizeof(unsigned long))
#define NODE_WORDS (PW_NUMABIND_MAX_NODES / LONG_BITS)
/* The kernel reads maxnode - 1 bits of a node mask (a historical off-by-one all callers
 * follow), so a mask of NODE_WORDS longs is passed with one more. */
#define NODE_MAXNODE (PW_NUMABIND_MAX_NODES + 1)
/* The longest canonical cpulist of CPUs below PW_TOPOLOGY_MAX_CPUS: at most one item per two
 * CPUs, each at most "8190-8191," or "8190,". */
#define CANON_MAX (PW_TOPOLOGY_MAX_CPUS / 2 * 10 + 1)

/* ---- cpulists ---- */

int pw_numabind_parse_cpus(const char *s, cpu_set_t *out, char *errbuf, size_t errlen)
{
    if (s == NULL) {
        pw_errf(errbuf, errlen, "cpulist: missing");
        return PW_ERR_PARSE;
    }
    /* One grammar for every cpulist in the agent: the topology's parser checks the text and
     * hands back the canonical form ("0-3,8"), which is then trivial to walk. */
    char *canon = pw_xmalloc(CANON_MAX);
    int ncpus = 0;
    int rv = pw_cpulist_parse(s, &ncpus, canon, CANON_MAX, errbuf, errlen);
    if (rv != PW_OK)
        goto out;
    cpu_set_t set;
    CPU_ZERO(&set);
    for (const char *p = canon; *p != '\0';) {
        char *end;
        unsigned long a = strtoul(p, &end, 10), b = a;
        if (*end == '-')
            b = strtoul(end + 1, &end, 10);
        if (b >= CPU_SETSIZE) {
            pw_errf(errbuf, errlen,
                    "cpulist \"%s\": CPU %lu is beyond the %d CPUs a binding can hold", s, b,
                    CPU_SETSIZE);
            rv = PW_ERR_TOOBIG;
            goto out;
        }
        for (unsigned long c = a; c <= b; c++)
            CPU_SET(c, &set);
        p = *end == ',' ? end + 1 : end;
    }
    *out = set;
out:
    free(canon);
    return rv;
}

int pw_numabind_format_cpus(const cpu_set_t *set, char *out, size_t outlen)
{
    size_t used = 0;
    int first = 1;
    if (outlen == 0)
        return PW_ERR_TOOBIG;
    out[0] = '\0';
    for (int c = 0; c < CPU_SETSIZE; c++) {
        if (!CPU_ISSET(c, set))
            continue;
        int end = c;
        while (end + 1 < CPU_SETSIZE && CPU_ISSET(end + 1, set))
            end++;
        char item[32];
        int n = end == c ? snprintf(item, sizeof(item), "%s%d", first ? "" : ",", c)
                         : snprintf(item, sizeof(item), "%s%d-%d", first ? "" : ",", c, end);
        if (used + (size_t)n + 1 > outlen)
            return PW_ERR_TOOBIG;
        memcpy(out + used, item, (size_t)n + 1);
        used += (size_t)n;
        first = 0;
        c = end;
    }
    return PW_OK;
}

/* online_nodes reads the machine's online NUMA nodes. Without NUMA sysfs (a kernel without
 * NUMA, some containers) there is one node, 0. */
static int online_nodes(cpu_set_t *nodes, char *errbuf, size_t errlen)
{
    char text[4096], why[256];
    int fd = open(NODE_ONLINE_PATH, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno != ENOENT) {
            pw_errf(errbuf, errlen, "cannot open %s: %s", NODE_ONLINE_PATH, strerror(errno));
            return PW_ERR_UNAVAIL;
        }
        CPU_ZERO(nodes);
        CPU_SET(0, nodes);
        return PW_OK;
    }
    ssize_t n = read(fd, text, sizeof(text) - 1);
    int err = errno;
    close(fd);
    if (n < 0) {
        pw_errf(errbuf, errlen, "cannot read %s: %s", NODE_ONLINE_PATH, strerror(err));
        return PW_ERR_UNAVAIL;
    }
    text[n] = '\0';
    /* A node list has the syntax of a cpulist, and node ids below CPU_SETSIZE fit a cpu_set_t. */
    if (pw_numabind_parse_cpus(text, nodes, why, sizeof(why)) != PW_OK) {
        pw_errf(errbuf, errlen, "%s: %s", NODE_ONLINE_PATH, why);
        return PW_ERR_UNAVAIL;
    }
    return PW_OK;
}

int pw_numabind_make(struct pw_numabind *b, int32_t node, const char *cpulist, char *errbuf,
                     size_t errlen)
{
    char why[256], have[256], want_text[256];
    if (node < 0 || node >= PW_NUMABIND_MAX_NODES) {
        pw_errf(errbuf, errlen, "NUMA node %d: a binding names nodes 0..%d", node,
                PW_NUMABIND_MAX_NODES - 1);
        return PW_ERR_INVAL;
    }
    cpu_set_t want, allowed, nodes;
    int rv = pw_numabind_parse_cpus(cpulist, &want, why, sizeof(why));
    if (rv != PW_OK) {
        pw_errf(errbuf, errlen, "NUMA node %d: %s", node, why);
        return rv;
    }
    rv = online_nodes(&nodes, why, sizeof(why));
    if (rv != PW_OK) {
        pw_errf(errbuf, errlen, "NUMA node %d: %s", node, why);
        return rv;
    }
    if (!CPU_ISSET(node, &nodes)) {
        pw_numabind_format_cpus(&nodes, have, sizeof(have));
        pw_errf(errbuf, errlen, "NUMA node %d is not online on this machine (online nodes: %s)",
                node, have);
        return PW_ERR_UNAVAIL;
    }
    if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0) {
        pw_errf(errbuf, errlen, "NUMA node %d: sched_getaffinity: %s", node, strerror(errno));
        return PW_ERR_UNAVAIL;
    }
    cpu_set_t cpus;
    CPU_AND(&cpus, &want, &allowed);
    if (CPU_COUNT(&cpus) == 0) {
        pw_numabind_format_cpus(&want, want_text, sizeof(want_text));
        pw_numabind_format_cpus(&allowed, have, sizeof(have));
        pw_errf(errbuf, errlen,
                "NUMA node %d: none of its CPUs (%s) is online and usable here (this process may "
                "run on CPUs %s)",
                node, want_text[0] != '\0' ? want_text : "none", have);
        return PW_ERR_UNAVAIL;
    }
    b->node = node;
    b->cpus = cpus;
    return PW_OK;
}

int pw_numabind_for_node(struct pw_numabind *b, const struct pw_topology *t, int32_t node,
                         char *errbuf, size_t errlen)
{
    for (size_t i = 0; i < t->nnodes; i++)
        if (t->nodes[i].id == node)
            return pw_numabind_make(b, node, t->nodes[i].cpulist, errbuf, errlen);
    pw_errf(errbuf, errlen, "no NUMA node %d in the topology", node);
    return PW_ERR_NOTFOUND;
}

/* ---- applying a binding ---- */

/* A bounded text builder for errors after fork: no stdio, no allocation. */
struct ebuf {
    char *p;
    size_t size, len;
};

static void eb_puts(struct ebuf *e, const char *s)
{
    if (e->p == NULL || e->size == 0)
        return;
    while (*s != '\0' && e->len + 1 < e->size)
        e->p[e->len++] = *s++;
    e->p[e->len] = '\0';
}

static void eb_putint(struct ebuf *e, long v)
{
    char tmp[24];
    size_t n = sizeof(tmp);
    unsigned long u = v < 0 ? 0UL - (unsigned long)v : (unsigned long)v;
    tmp[--n] = '\0';
    do {
        tmp[--n] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (v < 0)
        tmp[--n] = '-';
    eb_puts(e, tmp + n);
}

/* eb_errno appends ": <description of err>". strerrordesc_np reads a static table (no locale,
 * no buffer), unlike strerror. */
static void eb_errno(struct ebuf *e, int err)
{
    const char *desc = strerrordesc_np(err);
    eb_puts(e, ": ");
    if (desc != NULL) {
        eb_puts(e, desc);
    } else {
        eb_puts(e, "errno ");
        eb_putint(e, err);
    }
}

static int binding_valid(const struct pw_numabind *b, struct ebuf *e)
{
    if (b->node < 0 || b->node >= PW_NUMABIND_MAX_NODES) {
        eb_puts(e, "binding: NUMA node ");
        eb_putint(e, b->node);
        eb_puts(e, " out of range");
        return 0;
    }
    if (CPU_COUNT(&b->cpus) == 0) {
        eb_puts(e, "binding: no CPU");
        return 0;
    }
    return 1;
}

static void node_mask(unsigned long mask[NODE_WORDS], int32_t node)
{
    for (size_t i = 0; i < NODE_WORDS; i++)
        mask[i] = 0;
    mask[(size_t)node / LONG_BITS] = 1UL << ((size_t)node % LONG_BITS);
}

int pw_numabind_self(const struct pw_numabind *b, char *errbuf, size_t errlen)
{
    struct ebuf e = {.p = errbuf, .size = errlen, .len = 0};
    eb_puts(&e, "");
    if (!binding_valid(b, &e))
        return PW_ERR_INVAL;
    cpu_set_t old;
    /* Raw system calls: the libc wrappers are thin, but nothing promises they stay so. The raw
     * sched_getaffinity returns the size it wrote. */
    if (syscall(SYS_sched_getaffinity, 0, sizeof(old), &old) < 0) {
        eb_puts(&e, "sched_getaffinity");
        eb_errno(&e, errno);
        return PW_ERR_UNAVAIL;
    }
    if (syscall(SYS_sched_setaffinity, 0, sizeof(b->cpus), &b->cpus) != 0) {
        eb_puts(&e, "sched_setaffinity");
        eb_errno(&e, errno);
        return PW_ERR_UNAVAIL;
    }
    unsigned long mask[NODE_WORDS];
    node_mask(mask, b->node);
    if (syscall(SYS_set_mempolicy, MPOL_BIND, mask, (unsigned long)NODE_MAXNODE) != 0) {
        int err = errno;
        syscall(SYS_sched_setaffinity, 0, sizeof(old), &old);
        eb_puts(&e, "set_mempolicy(MPOL_BIND, node ");
        eb_putint(&e, b->node);
        eb_puts(&e, ")");
        eb_errno(&e, err);
        return PW_ERR_UNAVAIL;
    }
    return PW_OK;
}

/* bind_threads sets the affinity of every thread of pid once. *seen counts threads found,
 * *failed those that refused (first failure in *first_tid / *first_err); a thread that exits
 * meanwhile is neither. Returns -1 when the process has no task directory. */
static int bind_threads(pid_t pid, const cpu_set_t *cpus, size_t *seen, size_t *failed,
                        long *first_tid, int *first_err)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (d == NULL)
        return -1;
    *seen = *failed = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        char *end;
        long tid = strtol(de->d_name, &end, 10);
        if (de->d_name[0] < '0' || de->d_name[0] > '9' || *end != '\0' || tid <= 0 ||
            tid > INT_MAX)
            continue;
        if (sched_setaffinity((pid_t)tid, sizeof(*cpus), cpus) == 0) {
            (*seen)++;
        } else if (errno != ESRCH) {
            (*seen)++;
            if ((*failed)++ == 0) {
                *first_tid = tid;
                *first_err = errno;
            }
        }
    }
    closedir(d);
    return 0;
}

int pw_numabind_pid(pid_t pid, const struct pw_numabind *b, char *errbuf, size_t errlen)
{
    char why[256] = "";
    struct ebuf e = {.p = why, .size = sizeof(why), .len = 0};
    if (!binding_valid(b, &e)) {
        pw_errf(errbuf, errlen, "%s", why);
        return PW_ERR_INVAL;
    }
    if (pid <= 0) {
        pw_errf(errbuf, errlen, "process %d: not a process id", (int)pid);
        return PW_ERR_INVAL;
    }
    size_t seen = 0, failed = 0;
    long first_tid = 0;
    int first_err = 0;
    /* A thread created while the first pass runs may copy the old mask from a thread not yet
     * bound; the second pass catches it. Only the second pass's failures count. */
    for (int pass = 0; pass < 2; pass++) {
        if (bind_threads(pid, &b->cpus, &seen, &failed, &first_tid, &first_err) != 0 ||
            seen == 0) {
            pw_errf(errbuf, errlen, "process %d not found", (int)pid);
            return PW_ERR_NOTFOUND;
        }
    }

    char mig[160] = "";
    cpu_set_t nodes;
    unsigned long from[NODE_WORDS] = {0}, to[NODE_WORDS];
    if (online_nodes(&nodes, mig, sizeof(mig)) == PW_OK) {
        for (int n = 0; n < PW_NUMABIND_MAX_NODES; n++)
            if (CPU_ISSET(n, &nodes))
                from[(size_t)n / LONG_BITS] |= 1UL << ((size_t)n % LONG_BITS);
        node_mask(to, b->node);
        long left = syscall(SYS_migrate_pages, (long)pid, (unsigned long)NODE_MAXNODE, from, to);
        if (left < 0)
            snprintf(mig, sizeof(mig), "migrate_pages to node %d: %s", b->node, strerror(errno));
        else if (left > 0)
            snprintf(mig, sizeof(mig), "migrate_pages to node %d: %ld pages not moved", b->node,
                     left);
    }
    if (failed == 0 && mig[0] == '\0')
        return PW_OK;
    char thr[160] = "";
    if (failed > 0)
        snprintf(thr, sizeof(thr), "%zu of %zu threads not bound (thread %ld: %s)", failed, seen,
                 first_tid, strerror(first_err));
    pw_errf(errbuf, errlen, "process %d: %s%s%s", (int)pid, thr,
            thr[0] != '\0' && mig[0] != '\0' ? "; " : "", mig);
    return PW_ERR_UNAVAIL;
}
