/* numabind.h — binding a process to one NUMA node: its CPUs (sched_setaffinity) and its
 * memory (set_mempolicy MPOL_BIND; migrate_pages for pages it already has). Independent of any
 * VMM driver: a driver that starts processes binds them with this (docs/agent.md, "NUMA
 * binding"). Raw system calls, no libnuma.
 *
 * A binding is computed in the agent from its topology (the node's cpulist), but it acts on
 * the machine the agent really runs on: CPUs of the node that are not online here, or that the
 * agent may not use, are dropped, and a binding with no CPU left fails with a clear error (a
 * fixture topology describing a bigger host than the machine leads there). */
#ifndef PW_NUMABIND_H
#define PW_NUMABIND_H

#include <sched.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct pw_topology;

/* Node ids a binding can name: 0 .. PW_NUMABIND_MAX_NODES - 1 (the size of the node mask
 * handed to the kernel). CPUs are limited by cpu_set_t: 0 .. CPU_SETSIZE - 1 (1024). */
#define PW_NUMABIND_MAX_NODES 1024

/* A binding: run on cpus, take memory from node only. Plain data without pointers; copy it
 * freely. */
struct pw_numabind {
    int32_t node;   /* NUMA node for memory (MPOL_BIND) */
    cpu_set_t cpus; /* CPUs to run on; never empty in a binding made by pw_numabind_make */
};

/* pw_numabind_parse_cpus parses a kernel cpulist ("0-3,8-11", "5", "" for none; surrounding
 * whitespace allowed) into out, with the grammar of pw_cpulist_parse (topology.h). Strict:
 * reversed ranges, empty items and stray characters are PW_ERR_PARSE; a CPU at or above
 * CPU_SETSIZE is PW_ERR_TOOBIG. errbuf gets a one-line reason naming the input. out is
 * written only on PW_OK. Pure; any thread. */
int pw_numabind_parse_cpus(const char *s, cpu_set_t *out, char *errbuf, size_t errlen);

/* pw_numabind_format_cpus writes set in canonical cpulist form ("0-2,5") to out, "" when
 * empty. Returns PW_OK or PW_ERR_TOOBIG when it does not fit (out then holds a truncated
 * list). Any thread. */
int pw_numabind_format_cpus(const cpu_set_t *set, char *out, size_t outlen);

/* pw_numabind_make computes the binding for NUMA node `node` whose CPUs are `cpulist` (as in
 * the topology). It keeps only the CPUs the calling thread may run on (sched_getaffinity,
 * which also leaves out offline CPUs), and checks that the node is online on this machine
 * (/sys/devices/system/node/online; without that file only node 0 exists). Returns PW_OK;
 * PW_ERR_INVAL for a node id outside 0..PW_NUMABIND_MAX_NODES-1; PW_ERR_PARSE / PW_ERR_TOOBIG
 * for a bad cpulist; PW_ERR_UNAVAIL when the node is not online here or none of its CPUs is
 * left. errbuf gets a one-line reason. b is written only on PW_OK. Any thread. */
int pw_numabind_make(struct pw_numabind *b, int32_t node, const char *cpulist, char *errbuf,
                     size_t errlen);

/* pw_numabind_for_node is pw_numabind_make for the node with id `node` in topology t, with that
 * node's cpulist. PW_ERR_NOTFOUND when t has no such node. */
int pw_numabind_for_node(struct pw_numabind *b, const struct pw_topology *t, int32_t node,
                         char *errbuf, size_t errlen);

/* pw_numabind_self applies b to the calling process (in fact its calling thread, which is the
 * whole process in a child right after fork): sched_setaffinity to b->cpus, then
 * set_mempolicy(MPOL_BIND, {b->node}). All or nothing: if the memory policy is refused, the
 * previous CPU affinity is put back. Meant for a child between fork and exec (or a child that
 * never execs): it only makes system calls and formats errbuf by hand (no malloc, no stdio, no
 * locks), so it is safe after fork in a multi-threaded parent. Returns PW_OK, PW_ERR_INVAL for
 * an empty CPU set or a node out of range, PW_ERR_UNAVAIL when the kernel refuses (errbuf says
 * which call and why). */
int pw_numabind_self(const struct pw_numabind *b, char *errbuf, size_t errlen);

/* pw_numabind_pid binds an existing process from outside: the CPU affinity of every thread in
 * /proc/PID/task (two passes, so threads created during the first are caught), then
 * migrate_pages of its pages from every online node to b->node. The process's own memory
 * policy is not changed (no system call can do that from outside), so its future allocations
 * follow its own policy; use pw_numabind_self in the child for that. Best effort: it does all
 * it can and then returns PW_OK, or PW_ERR_UNAVAIL with errbuf listing what failed (threads
 * that could not be bound, pages that could not be moved), PW_ERR_NOTFOUND when the process
 * does not exist, PW_ERR_INVAL for a bad binding. Any thread; not for use after fork. */
int pw_numabind_pid(pid_t pid, const struct pw_numabind *b, char *errbuf, size_t errlen);

#endif
