/* topology.c — NUMA nodes, CPUs and memory of the host, read from sysfs/procfs under a root
 * directory. Every file is treated as untrusted text: numbers are bounded, garbage is an error. */
#include "pw/topology.h"

#include "pw/error.h"
#include "pw/util.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOPO_FILE_MAX (64 * 1024) /* sysfs/procfs files we read are far smaller */

/* make_path formats a path; fails when it does not fit. */
static int make_path(char *out, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int make_path(char *out, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, size, fmt, ap);
    va_end(ap);
    return n < 0 || (size_t)n >= size ? -1 : 0;
}

/* read_file reads a whole small file into a NUL-terminated heap string the caller frees. */
static int read_file(const char *path, char **out, char *errbuf, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        pw_errf(errbuf, errlen, "cannot open %s: %s", path, strerror(errno));
        return PW_ERR_IO;
    }
    char *data = pw_xmalloc(TOPO_FILE_MAX + 1);
    size_t n = fread(data, 1, TOPO_FILE_MAX + 1, f);
    int rv = PW_OK;
    if (ferror(f)) {
        pw_errf(errbuf, errlen, "cannot read %s: %s", path, strerror(errno));
        rv = PW_ERR_IO;
    } else if (n > TOPO_FILE_MAX) {
        pw_errf(errbuf, errlen, "%s: larger than %d bytes", path, TOPO_FILE_MAX);
        rv = PW_ERR_TOOBIG;
    } else if (memchr(data, '\0', n) != NULL) {
        pw_errf(errbuf, errlen, "%s: contains a NUL byte", path);
        rv = PW_ERR_PARSE;
    }
    fclose(f);
    if (rv != PW_OK) {
        free(data);
        return rv;
    }
    data[n] = '\0';
    *out = data;
    return PW_OK;
}

/* parse_uint reads a decimal number at *p (no sign), advancing *p; fails on no digits or a
 * value above max. */
static int parse_uint(const char **p, unsigned long long max, unsigned long long *out)
{
    const char *s = *p;
    if (!isdigit((unsigned char)*s))
        return -1;
    unsigned long long v = 0;
    while (isdigit((unsigned char)*s)) {
        unsigned d = (unsigned)(*s - '0');
        if (v > (max - d) / 10)
            return -1;
        v = v * 10 + d;
        s++;
    }
    *p = s;
    *out = v;
    return 0;
}

/* canon_append writes "a" or "a-b" (with a leading comma unless first) into canon. */
static int canon_append(char *canon, size_t canonlen, size_t *used, int first, int a, int b)
{
    char tmp[32];
    int n = a == b ? snprintf(tmp, sizeof(tmp), "%s%d", first ? "" : ",", a)
                   : snprintf(tmp, sizeof(tmp), "%s%d-%d", first ? "" : ",", a, b);
    if (*used + (size_t)n + 1 > canonlen)
        return PW_ERR_TOOBIG;
    memcpy(canon + *used, tmp, (size_t)n + 1);
    *used += (size_t)n;
    return PW_OK;
}

int pw_cpulist_parse(const char *s, int *ncpus, char *canon, size_t canonlen, char *errbuf,
                     size_t errlen)
{
    uint64_t bits[PW_TOPOLOGY_MAX_CPUS / 64];
    memset(bits, 0, sizeof(bits));
    const char *p = s;
    while (isspace((unsigned char)*p))
        p++;
    int count = 0;
    int first = 1;
    /* Grammar: empty | item ("," item)*, item = N | N "-" M with N <= M. Trailing whitespace
     * (the kernel's newline) is allowed; anything else is garbage. */
    while (*p != '\0' && !isspace((unsigned char)*p)) {
        if (!first) {
            if (*p != ',') {
                pw_errf(errbuf, errlen, "cpulist \"%s\": expected ',' at offset %td", s, p - s);
                return PW_ERR_PARSE;
            }
            p++;
        }
        unsigned long long a, b;
        if (parse_uint(&p, PW_TOPOLOGY_MAX_CPUS - 1, &a) != 0) {
            pw_errf(errbuf, errlen, "cpulist \"%s\": expected a cpu number below %d at offset %td",
                    s, PW_TOPOLOGY_MAX_CPUS, p - s);
            return PW_ERR_PARSE;
        }
        b = a;
        if (*p == '-') {
            p++;
            if (parse_uint(&p, PW_TOPOLOGY_MAX_CPUS - 1, &b) != 0) {
                pw_errf(errbuf, errlen,
                        "cpulist \"%s\": expected a cpu number below %d at offset %td", s,
                        PW_TOPOLOGY_MAX_CPUS, p - s);
                return PW_ERR_PARSE;
            }
            if (b < a) {
                pw_errf(errbuf, errlen, "cpulist \"%s\": range %llu-%llu is reversed", s, a, b);
                return PW_ERR_PARSE;
            }
        }
        for (unsigned long long c = a; c <= b; c++) {
            uint64_t bit = UINT64_C(1) << (c % 64);
            if (!(bits[c / 64] & bit)) {
                bits[c / 64] |= bit;
                count++;
            }
        }
        first = 0;
    }
    while (isspace((unsigned char)*p))
        p++;
    if (*p != '\0') {
        pw_errf(errbuf, errlen, "cpulist \"%s\": unexpected text at offset %td", s, p - s);
        return PW_ERR_PARSE;
    }
    if (canon != NULL) {
        if (canonlen == 0)
            return PW_ERR_TOOBIG;
        canon[0] = '\0';
        size_t used = 0;
        int firstout = 1;
        int c = 0;
        while (c < PW_TOPOLOGY_MAX_CPUS) {
            if (!(bits[c / 64] & (UINT64_C(1) << (c % 64)))) {
                c++;
                continue;
            }
            int start = c;
            while (c + 1 < PW_TOPOLOGY_MAX_CPUS &&
                   (bits[(c + 1) / 64] & (UINT64_C(1) << ((c + 1) % 64))))
                c++;
            if (canon_append(canon, canonlen, &used, firstout, start, c) != PW_OK) {
                pw_errf(errbuf, errlen, "cpulist \"%s\": longer than %zu bytes", s, canonlen - 1);
                return PW_ERR_TOOBIG;
            }
            firstout = 0;
            c++;
        }
    }
    *ncpus = count;
    return PW_OK;
}

/* parse_meminfo finds "MemTotal:" and "MemFree:" (in kB) in a meminfo file. With node >= 0 every
 * line must start with "Node <node> " (the per-node format); with node < 0 it is /proc/meminfo.
 * Lines with other keys are skipped, but every line must have the "Key: number [kB]" shape. */
static int parse_meminfo(const char *path, const char *text, int node, uint64_t *total_kb,
                         uint64_t *free_kb, char *errbuf, size_t errlen)
{
    int have_total = 0, have_free = 0;
    const char *line = text;
    int lineno = 0;
    while (*line != '\0') {
        const char *eol = strchr(line, '\n');
        size_t len = eol != NULL ? (size_t)(eol - line) : strlen(line);
        lineno++;
        char buf[256];
        if (len >= sizeof(buf)) {
            pw_errf(errbuf, errlen, "%s:%d: line too long", path, lineno);
            return PW_ERR_PARSE;
        }
        memcpy(buf, line, len);
        buf[len] = '\0';
        line = eol != NULL ? eol + 1 : line + len;

        const char *p = buf;
        while (isspace((unsigned char)*p))
            p++;
        if (*p == '\0')
            continue;
        if (node >= 0) {
            unsigned long long id;
            if (strncmp(p, "Node", 4) != 0 || !isspace((unsigned char)p[4])) {
                pw_errf(errbuf, errlen, "%s:%d: expected \"Node %d\"", path, lineno, node);
                return PW_ERR_PARSE;
            }
            p += 4;
            while (isspace((unsigned char)*p))
                p++;
            if (parse_uint(&p, INT_MAX, &id) != 0 || id != (unsigned long long)node) {
                pw_errf(errbuf, errlen, "%s:%d: expected \"Node %d\"", path, lineno, node);
                return PW_ERR_PARSE;
            }
            while (isspace((unsigned char)*p))
                p++;
        }
        const char *key = p;
        while (*p != '\0' && *p != ':' && !isspace((unsigned char)*p))
            p++;
        size_t keylen = (size_t)(p - key);
        if (*p != ':' || keylen == 0) {
            pw_errf(errbuf, errlen, "%s:%d: expected \"Key: value\"", path, lineno);
            return PW_ERR_PARSE;
        }
        p++;
        while (isspace((unsigned char)*p))
            p++;
        unsigned long long v;
        if (parse_uint(&p, UINT64_MAX / 2, &v) != 0) {
            pw_errf(errbuf, errlen, "%s:%d: %.*s: expected a number", path, lineno, (int)keylen,
                    key);
            return PW_ERR_PARSE;
        }
        while (isspace((unsigned char)*p))
            p++;
        if (*p != '\0' && strcmp(p, "kB") != 0) {
            pw_errf(errbuf, errlen, "%s:%d: %.*s: unexpected \"%s\"", path, lineno, (int)keylen,
                    key, p);
            return PW_ERR_PARSE;
        }
        if (keylen == 8 && memcmp(key, "MemTotal", 8) == 0) {
            *total_kb = v;
            have_total = 1;
        } else if (keylen == 7 && memcmp(key, "MemFree", 7) == 0) {
            *free_kb = v;
            have_free = 1;
        }
    }
    if (!have_total || !have_free) {
        pw_errf(errbuf, errlen, "%s: %s missing", path, !have_total ? "MemTotal" : "MemFree");
        return PW_ERR_PARSE;
    }
    if (*free_kb > *total_kb) {
        pw_errf(errbuf, errlen, "%s: MemFree is larger than MemTotal", path);
        return PW_ERR_PARSE;
    }
    return PW_OK;
}

/* fill_node reads cpulist and meminfo text into n. */
static int fill_node(struct pw_numa_node *n, int id, const char *cpupath, const char *mempath,
                     int per_node, double overcommit, char *errbuf, size_t errlen)
{
    char *cpus = NULL, *mem = NULL;
    char why[256];
    int rv = read_file(cpupath, &cpus, errbuf, errlen);
    if (rv != PW_OK)
        goto out;
    rv = pw_cpulist_parse(cpus, &n->ncpus, n->cpulist, sizeof(n->cpulist), why, sizeof(why));
    if (rv != PW_OK) {
        pw_errf(errbuf, errlen, "%s: %s", cpupath, why);
        goto out;
    }
    rv = read_file(mempath, &mem, errbuf, errlen);
    if (rv != PW_OK)
        goto out;
    uint64_t total_kb = 0, free_kb = 0;
    rv = parse_meminfo(mempath, mem, per_node ? id : -1, &total_kb, &free_kb, errbuf, errlen);
    if (rv != PW_OK)
        goto out;
    n->id = id;
    n->mem_total_mb = total_kb / 1024;
    n->mem_free_mb = free_kb / 1024;
    n->vcpu_total = (int32_t)floor((double)n->ncpus * overcommit);
    n->vcpu_free = n->vcpu_total;
out:
    free(cpus);
    free(mem);
    return rv;
}

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* list_nodes collects the N of every node<N> directory entry; returns -1 when the directory
 * does not exist. */
static int list_nodes(const char *dir, int *ids, size_t max, size_t *n, char *errbuf,
                      size_t errlen)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        if (errno == ENOENT || errno == ENOTDIR) {
            *n = 0;
            return PW_OK;
        }
        pw_errf(errbuf, errlen, "cannot open %s: %s", dir, strerror(errno));
        return PW_ERR_IO;
    }
    *n = 0;
    int rv = PW_OK;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const char *p = e->d_name;
        if (strncmp(p, "node", 4) != 0)
            continue;
        p += 4;
        unsigned long long id;
        if (parse_uint(&p, INT32_MAX, &id) != 0 || *p != '\0')
            continue; /* not a node directory (e.g. "node_states" style names) */
        if (*n == max) {
            pw_errf(errbuf, errlen, "%s: more than %zu NUMA nodes", dir, max);
            rv = PW_ERR_TOOBIG;
            break;
        }
        ids[(*n)++] = (int)id;
    }
    closedir(d);
    if (rv == PW_OK)
        qsort(ids, *n, sizeof(ids[0]), cmp_int);
    return rv;
}

int pw_topology_load(struct pw_topology *t, const char *root, double overcommit, char *errbuf,
                     size_t errlen)
{
    memset(t, 0, sizeof(*t));
    if (root == NULL || root[0] == '\0')
        root = "/";
    if (!(overcommit > 0.0) || overcommit > 1000.0) {
        pw_errf(errbuf, errlen, "vcpu overcommit %g: must be > 0 and <= 1000", overcommit);
        return PW_ERR_INVAL;
    }
    /* Paths are built as root + "/sys/..."; a trailing slash on root gives "//", harmless. */
    char dir[PATH_MAX], cpupath[PATH_MAX], mempath[PATH_MAX];
    if (make_path(dir, sizeof(dir), "%s/sys/devices/system/node", root) != 0 ||
        make_path(cpupath, sizeof(cpupath), "%s/sys/devices/system/cpu/online", root) != 0 ||
        make_path(mempath, sizeof(mempath), "%s/proc/meminfo", root) != 0) {
        pw_errf(errbuf, errlen, "topology root too long");
        return PW_ERR_INVAL;
    }
    int ids[PW_PROTO_MAX_NUMA];
    size_t nids = 0;
    int rv = list_nodes(dir, ids, PW_ARRAY_LEN(ids), &nids, errbuf, errlen);
    if (rv != PW_OK)
        return rv;
    if (nids == 0) {
        /* No NUMA sysfs (containers, some VMs): the host is one node. */
        rv = fill_node(&t->nodes[0], 0, cpupath, mempath, 0, overcommit, errbuf, errlen);
        if (rv != PW_OK)
            return rv;
        t->nnodes = 1;
        t->from_fallback = 1;
        return PW_OK;
    }
    for (size_t i = 0; i < nids; i++) {
        if (make_path(cpupath, sizeof(cpupath), "%s/node%d/cpulist", dir, ids[i]) != 0 ||
            make_path(mempath, sizeof(mempath), "%s/node%d/meminfo", dir, ids[i]) != 0) {
            pw_errf(errbuf, errlen, "topology root too long");
            memset(t, 0, sizeof(*t));
            return PW_ERR_INVAL;
        }
        rv = fill_node(&t->nodes[i], ids[i], cpupath, mempath, 1, overcommit, errbuf, errlen);
        if (rv != PW_OK) {
            memset(t, 0, sizeof(*t));
            return rv;
        }
    }
    t->nnodes = nids;
    return PW_OK;
}

int pw_topology_read_load(const char *root, double *load)
{
    char path[PATH_MAX];
    if (root == NULL || root[0] == '\0')
        root = "/";
    if (make_path(path, sizeof(path), "%s/proc/loadavg", root) != 0)
        return PW_ERR_INVAL;
    char *text = NULL;
    int rv = read_file(path, &text, NULL, 0);
    if (rv != PW_OK)
        return rv;
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (end == text || errno != 0 || !isfinite(v) || v < 0)
        rv = PW_ERR_PARSE;
    else
        *load = v;
    free(text);
    return rv;
}
