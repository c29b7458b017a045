/* test_numabind.c — NUMA bindings: cpulist parsing, making a binding against this machine, and
 * applying it for real. Children are forked, bound, and checked from the parent through the
 * kernel's own view (/proc/PID/status Cpus_allowed_list, /proc/PID/numa_maps), next to an
 * unbound child that shows the check can tell the difference. */
#include "pw/error.h"
#include "pw/numabind.h"
#include "pw/topology.h"
#include "pw/util.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define FIXTURES PW_SOURCE_DIR "/tests/fixtures/topology"

/* ---- helpers ---- */

static void allowed_cpus(cpu_set_t *set)
{
    assert_int_equal(sched_getaffinity(0, sizeof(*set), set), 0);
}

static int highest_cpu(const cpu_set_t *set)
{
    for (int c = CPU_SETSIZE - 1; c >= 0; c--)
        if (CPU_ISSET(c, set))
            return c;
    return -1;
}

static void set_text(const cpu_set_t *set, char *out, size_t outlen)
{
    assert_int_equal(pw_numabind_format_cpus(set, out, outlen), PW_OK);
}

/* online_nodes reads /sys/devices/system/node/online independently of the code under test;
 * without it, node 0 only. */
static void online_nodes(cpu_set_t *nodes)
{
    CPU_ZERO(nodes);
    FILE *f = fopen("/sys/devices/system/node/online", "r");
    if (f == NULL) {
        CPU_SET(0, nodes);
        return;
    }
    int a, b;
    char sep;
    while (fscanf(f, "%d", &a) == 1) {
        b = a;
        sep = (char)fgetc(f);
        if (sep == '-') {
            assert_int_equal(fscanf(f, "%d", &b), 1);
            sep = (char)fgetc(f);
        }
        for (int n = a; n <= b; n++)
            CPU_SET(n, nodes);
        if (sep != ',')
            break;
    }
    fclose(f);
}

/* status_field copies the value of "Key:\tvalue" from /proc/<pid>/status (or a task's). */
static void status_field(const char *status_path, const char *key, char *out, size_t outlen)
{
    FILE *f = fopen(status_path, "r");
    if (f == NULL)
        fail_msg("cannot open %s: %s", status_path, strerror(errno));
    char line[4096];
    size_t klen = strlen(key);
    out[0] = '\0';
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
            const char *v = line + klen + 1;
            v += strspn(v, " \t");
            pw_strlcpy(out, v, outlen);
            out[strcspn(out, "\n")] = '\0';
            break;
        }
    }
    fclose(f);
    if (out[0] == '\0')
        fail_msg("%s: no %s", status_path, key);
}

static void cpus_allowed_of(pid_t pid, char *out, size_t outlen)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    status_field(path, "Cpus_allowed_list", out, outlen);
}

/* numa_policies counts the mappings of pid whose memory policy is `want` and the others. */
static void numa_policies(pid_t pid, const char *want, int *match, int *other, char *sample,
                          size_t samplelen)
{
    char path[64], line[8192];
    snprintf(path, sizeof(path), "/proc/%d/numa_maps", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        fail_msg("cannot open %s: %s", path, strerror(errno));
    *match = *other = 0;
    sample[0] = '\0';
    while (fgets(line, sizeof(line), f) != NULL) {
        char addr[64], policy[128];
        if (sscanf(line, "%63s %127s", addr, policy) != 2)
            continue;
        if (strcmp(policy, want) == 0) {
            (*match)++;
        } else {
            if (*other == 0)
                pw_strlcpy(sample, policy, samplelen);
            (*other)++;
        }
    }
    fclose(f);
}

/* A forked child reports one int and a text over a pipe, then waits to be killed. */
struct child {
    pid_t pid;
    int rv;
    char text[256];
};

static void child_report(int fd, int rv, const char *text)
{
    char msg[sizeof(int) + 256];
    memcpy(msg, &rv, sizeof(int));
    size_t n = strlen(text);
    if (n > 255)
        n = 255;
    memcpy(msg + sizeof(int), text, n);
    ssize_t w = write(fd, msg, sizeof(int) + n);
    (void)w;
    close(fd);
}

/* child_start forks; the child runs fn(arg, fd), which must report. The child then waits to
 * be killed, and dies with this process anyway, so a failed assertion leaves no orphan. */
static void child_start(struct child *c, void (*fn)(const void *arg, int fd), const void *arg)
{
    int pfd[2];
    pid_t parent = getpid();
    assert_int_equal(pipe(pfd), 0);
    c->pid = fork();
    assert_true(c->pid >= 0);
    if (c->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        close(pfd[0]);
        fn(arg, pfd[1]);
        for (;;)
            pause();
    }
    close(pfd[1]);
    char msg[sizeof(int) + 256];
    size_t got = 0;
    ssize_t n;
    while ((n = read(pfd[0], msg + got, sizeof(msg) - got)) > 0)
        got += (size_t)n;
    close(pfd[0]);
    assert_true(got >= sizeof(int));
    memcpy(&c->rv, msg, sizeof(int));
    memcpy(c->text, msg + sizeof(int), got - sizeof(int));
    c->text[got - sizeof(int)] = '\0';
}

static void child_stop(struct child *c)
{
    kill(c->pid, SIGKILL);
    int st;
    assert_int_equal(waitpid(c->pid, &st, 0), c->pid);
    assert_true(WIFSIGNALED(st));
}

static void do_bind(const void *arg, int fd)
{
    char err[256] = "";
    int rv = pw_numabind_self(arg, err, sizeof(err));
    child_report(fd, rv, err);
}

static void do_nothing(const void *arg, int fd)
{
    (void)arg;
    child_report(fd, 0, "");
}

/* A binding to the highest CPU this process may use and to node 0. */
static void target_binding(struct pw_numabind *b, int *cpu)
{
    cpu_set_t allowed;
    allowed_cpus(&allowed);
    *cpu = highest_cpu(&allowed);
    assert_true(*cpu >= 0);
    if (CPU_COUNT(&allowed) == 1)
        print_message("only one CPU (%d) here: a CPU binding looks like none; the memory policy "
                      "is still checked\n", *cpu);
    char list[16], err[256];
    snprintf(list, sizeof(list), "%d", *cpu);
    int rv = pw_numabind_make(b, 0, list, err, sizeof(err));
    if (rv != PW_OK)
        fail_msg("binding to node 0, CPU %d: %s", *cpu, err);
}

/* ---- parsing ---- */

static void test_parse_good(void **state)
{
    (void)state;
    static const struct {
        const char *in, *canon;
        int count;
    } cases[] = {
        {"0", "0", 1},
        {"0-3", "0-3", 4},
        {"0-3,8-11", "0-3,8-11", 8},
        {" 1,3\n", "1,3", 2},
        {"3,1-2,2", "1-3", 3},
        {"", "", 0},
        {"\n", "", 0},
        {"1023", "1023", 1},
        {"0-1023", "0-1023", 1024},
    };
    for (size_t i = 0; i < PW_ARRAY_LEN(cases); i++) {
        cpu_set_t set;
        char err[256] = "", canon[8192];
        memset(&set, 0xff, sizeof(set));
        int rv = pw_numabind_parse_cpus(cases[i].in, &set, err, sizeof(err));
        if (rv != PW_OK)
            fail_msg("\"%s\": %s", cases[i].in, err);
        assert_int_equal(CPU_COUNT(&set), cases[i].count);
        set_text(&set, canon, sizeof(canon));
        assert_string_equal(canon, cases[i].canon);
    }
    cpu_set_t set;
    assert_int_equal(pw_numabind_parse_cpus("0-3,8-11", &set, NULL, 0), PW_OK);
    assert_true(CPU_ISSET(3, &set) && CPU_ISSET(8, &set) && !CPU_ISSET(4, &set));
}

static void test_parse_bad(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        int rv;
        const char *want;
    } cases[] = {
        {"a", PW_ERR_PARSE, "cpulist \"a\""},
        {"1-", PW_ERR_PARSE, "offset 2"},
        {"-1", PW_ERR_PARSE, "cpulist \"-1\""},
        {"3-1", PW_ERR_PARSE, "reversed"},
        {"1,,2", PW_ERR_PARSE, "offset 2"},
        {"1 2", PW_ERR_PARSE, "unexpected text"},
        {"0x1", PW_ERR_PARSE, "cpulist \"0x1\""},
        {"1,2,", PW_ERR_PARSE, "offset 4"},
        {"8192", PW_ERR_PARSE, "below 8192"},
        {"1024", PW_ERR_TOOBIG, "CPU 1024 is beyond the 1024 CPUs a binding can hold"},
        {"0-3,1000-2000", PW_ERR_TOOBIG, "CPU 2000"},
    };
    for (size_t i = 0; i < PW_ARRAY_LEN(cases); i++) {
        cpu_set_t set, before;
        CPU_ZERO(&set);
        CPU_SET(7, &set);
        before = set;
        char err[256] = "";
        int rv = pw_numabind_parse_cpus(cases[i].in, &set, err, sizeof(err));
        if (rv != cases[i].rv)
            fail_msg("\"%s\": want %s, got %s (%s)", cases[i].in, pw_strerror(cases[i].rv),
                     pw_strerror(rv), err);
        if (strstr(err, cases[i].want) == NULL)
            fail_msg("\"%s\": reason \"%s\" lacks \"%s\"", cases[i].in, err, cases[i].want);
        assert_true(CPU_EQUAL(&set, &before)); /* untouched on error */
    }
    cpu_set_t set;
    char err[64] = "";
    assert_int_equal(pw_numabind_parse_cpus(NULL, &set, err, sizeof(err)), PW_ERR_PARSE);
    assert_true(err[0] != '\0');
}

static void test_format(void **state)
{
    (void)state;
    cpu_set_t set;
    CPU_ZERO(&set);
    char out[64];
    set_text(&set, out, sizeof(out));
    assert_string_equal(out, "");
    static const int cpus[] = {0, 1, 2, 5, 7, 8, 1023};
    for (size_t i = 0; i < PW_ARRAY_LEN(cpus); i++)
        CPU_SET(cpus[i], &set);
    set_text(&set, out, sizeof(out));
    assert_string_equal(out, "0-2,5,7-8,1023");
    char small[6];
    assert_int_equal(pw_numabind_format_cpus(&set, small, sizeof(small)), PW_ERR_TOOBIG);
    assert_int_equal(pw_numabind_format_cpus(&set, small, 0), PW_ERR_TOOBIG);
}

/* ---- making a binding against this machine ---- */

static void test_make(void **state)
{
    (void)state;
    cpu_set_t allowed, nodes;
    allowed_cpus(&allowed);
    online_nodes(&nodes);
    if (!CPU_ISSET(0, &nodes)) {
        print_message("node 0 is not online here: nothing to bind to\n");
        return;
    }
    char allowed_text[1024], got[1024], err[512];
    set_text(&allowed, allowed_text, sizeof(allowed_text));

    /* The whole range: exactly the CPUs this process may use remain. */
    struct pw_numabind b;
    memset(&b, 0, sizeof(b));
    assert_int_equal(pw_numabind_make(&b, 0, "0-1023", err, sizeof(err)), PW_OK);
    assert_int_equal(b.node, 0);
    set_text(&b.cpus, got, sizeof(got));
    assert_string_equal(got, allowed_text);

    /* A host bigger than this machine: its CPUs are not here, the binding fails clearly. */
    cpu_set_t far;
    CPU_ZERO(&far);
    int far_cpu = -1;
    for (int c = 1000; c < CPU_SETSIZE && far_cpu < 0; c++)
        if (!CPU_ISSET(c, &allowed))
            far_cpu = c;
    assert_true(far_cpu >= 0);
    char far_list[32];
    snprintf(far_list, sizeof(far_list), "%d", far_cpu);
    b.node = 42;
    assert_int_equal(pw_numabind_make(&b, 0, far_list, err, sizeof(err)), PW_ERR_UNAVAIL);
    assert_non_null(strstr(err, "NUMA node 0: none of its CPUs"));
    assert_non_null(strstr(err, far_list));
    assert_int_equal(b.node, 42); /* untouched on error */
    assert_int_equal(pw_numabind_make(&b, 0, "", err, sizeof(err)), PW_ERR_UNAVAIL);
    assert_non_null(strstr(err, "none of its CPUs (none)"));

    /* A node that is not online here. */
    int off = -1;
    for (int n = 1; n < PW_NUMABIND_MAX_NODES && off < 0; n++)
        if (!CPU_ISSET(n, &nodes))
            off = n;
    assert_true(off > 0);
    assert_int_equal(pw_numabind_make(&b, off, "0", err, sizeof(err)), PW_ERR_UNAVAIL);
    assert_non_null(strstr(err, "is not online on this machine"));

    /* Out of range and malformed. */
    assert_int_equal(pw_numabind_make(&b, -1, "0", err, sizeof(err)), PW_ERR_INVAL);
    assert_non_null(strstr(err, "NUMA node -1"));
    assert_int_equal(pw_numabind_make(&b, PW_NUMABIND_MAX_NODES, "0", err, sizeof(err)),
                     PW_ERR_INVAL);
    assert_int_equal(pw_numabind_make(&b, 0, "0-", err, sizeof(err)), PW_ERR_PARSE);
    assert_non_null(strstr(err, "NUMA node 0: cpulist \"0-\""));
    assert_int_equal(b.node, 42);
}

/* Bindings from a fixture topology: node 0 ("0-3") binds to what this machine has of it;
 * node 1 ("4-7") binds only on a machine with node 1 online and one of those CPUs. */
static void test_for_node_fixture(void **state)
{
    (void)state;
    struct pw_topology t;
    char err[512];
    assert_int_equal(pw_topology_load(&t, FIXTURES "/2node", 1.0, err, sizeof(err)), PW_OK);
    cpu_set_t allowed, nodes, want, expect;
    allowed_cpus(&allowed);
    online_nodes(&nodes);
    for (int node = 0; node <= 1; node++) {
        CPU_ZERO(&want);
        for (int c = 4 * node; c < 4 * node + 4; c++)
            CPU_SET(c, &want);
        CPU_AND(&expect, &want, &allowed);
        int ok = CPU_ISSET(node, &nodes) && CPU_COUNT(&expect) > 0;
        struct pw_numabind b;
        int rv = pw_numabind_for_node(&b, &t, node, err, sizeof(err));
        print_message("fixture node %d: %s%s\n", node, rv == PW_OK ? "bound" : "not bound: ",
                      rv == PW_OK ? "" : err);
        if (ok) {
            assert_int_equal(rv, PW_OK);
            assert_int_equal(b.node, node);
            assert_true(CPU_EQUAL(&b.cpus, &expect));
        } else {
            char who[32];
            snprintf(who, sizeof(who), "NUMA node %d", node);
            assert_int_equal(rv, PW_ERR_UNAVAIL);
            assert_non_null(strstr(err, who));
        }
    }
    struct pw_numabind b;
    assert_int_equal(pw_numabind_for_node(&b, &t, 7, err, sizeof(err)), PW_ERR_NOTFOUND);
    assert_non_null(strstr(err, "no NUMA node 7 in the topology"));
}

/* ---- applying a binding ---- */

/* A child binds itself to one CPU and node 0; the kernel's view of it says so, while an unbound
 * child's view does not. */
static void test_self_binds_child(void **state)
{
    (void)state;
    struct pw_numabind b;
    int cpu;
    target_binding(&b, &cpu);
    cpu_set_t allowed;
    allowed_cpus(&allowed);
    char want_cpus[16], allowed_text[1024], got[1024], sample[128];
    snprintf(want_cpus, sizeof(want_cpus), "%d", cpu);
    set_text(&allowed, allowed_text, sizeof(allowed_text));

    struct child unbound;
    child_start(&unbound, do_nothing, NULL);
    cpus_allowed_of(unbound.pid, got, sizeof(got));
    assert_string_equal(got, allowed_text);
    int match, other;
    numa_policies(unbound.pid, "bind:0", &match, &other, sample, sizeof(sample));
    assert_int_equal(match, 0); /* the check below can fail */
    assert_true(other > 0);
    child_stop(&unbound);

    struct child c;
    child_start(&c, do_bind, &b);
    if (c.rv != PW_OK)
        fail_msg("pw_numabind_self in the child: %s: %s", pw_strerror(c.rv), c.text);
    cpus_allowed_of(c.pid, got, sizeof(got));
    assert_string_equal(got, want_cpus);
    numa_policies(c.pid, "bind:0", &match, &other, sample, sizeof(sample));
    if (other != 0)
        fail_msg("%d mappings of the bound child have policy %s", other, sample);
    assert_true(match > 0);
    print_message("bound child %d: Cpus_allowed_list %s, %d mappings bind:0\n", (int)c.pid, got,
                  match);
    child_stop(&c);
}

/* When the memory policy is refused (a node that is not online), the CPU affinity is put back. */
struct half {
    struct pw_numabind b;
};

static void do_bind_and_compare(const void *arg, int fd)
{
    const struct half *h = arg;
    cpu_set_t before, after;
    char err[256] = "";
    sched_getaffinity(0, sizeof(before), &before);
    int rv = pw_numabind_self(&h->b, err, sizeof(err));
    sched_getaffinity(0, sizeof(after), &after);
    if (rv != PW_OK && !CPU_EQUAL(&before, &after))
        pw_strlcpy(err, "affinity changed although the binding failed", sizeof(err));
    child_report(fd, rv, err);
}

static void test_self_all_or_nothing(void **state)
{
    (void)state;
    cpu_set_t nodes;
    online_nodes(&nodes);
    struct half h;
    int cpu;
    target_binding(&h.b, &cpu);
    h.b.node = -1;
    for (int n = 1; n < PW_NUMABIND_MAX_NODES && h.b.node < 0; n++)
        if (!CPU_ISSET(n, &nodes))
            h.b.node = n;
    struct child c;
    child_start(&c, do_bind_and_compare, &h);
    assert_int_equal(c.rv, PW_ERR_UNAVAIL);
    if (strstr(c.text, "set_mempolicy(MPOL_BIND, node ") == NULL)
        fail_msg("unexpected reason: %s", c.text);
    child_stop(&c);

    /* Bindings that cannot be valid are refused before any system call. */
    struct pw_numabind bad = h.b;
    char err[128];
    CPU_ZERO(&bad.cpus);
    assert_int_equal(pw_numabind_self(&bad, err, sizeof(err)), PW_ERR_INVAL);
    assert_string_equal(err, "binding: no CPU");
    bad = h.b;
    bad.node = -3;
    assert_int_equal(pw_numabind_self(&bad, err, sizeof(err)), PW_ERR_INVAL);
    assert_string_equal(err, "binding: NUMA node -3 out of range");
    assert_int_equal(pw_numabind_self(&bad, NULL, 0), PW_ERR_INVAL);
}

static void *sleeper(void *arg)
{
    (void)arg;
    for (;;)
        pause();
    return NULL;
}

static void do_threads(const void *arg, int fd)
{
    (void)arg;
    pthread_t t;
    int rv = 0;
    for (int i = 0; i < 2; i++)
        rv |= pthread_create(&t, NULL, sleeper, NULL);
    child_report(fd, rv, "");
}

/* A running process with three threads is bound from outside: every thread's affinity. */
static void test_pid_binds_threads(void **state)
{
    (void)state;
    struct pw_numabind b;
    int cpu;
    target_binding(&b, &cpu);
    char want[16], got[1024], err[512], path[PATH_MAX];
    snprintf(want, sizeof(want), "%d", cpu);

    struct child c;
    child_start(&c, do_threads, NULL);
    assert_int_equal(c.rv, 0);
    int rv = pw_numabind_pid(c.pid, &b, err, sizeof(err));
    if (rv != PW_OK)
        fail_msg("pw_numabind_pid: %s", err);
    snprintf(path, sizeof(path), "/proc/%d/task", (int)c.pid);
    DIR *d = opendir(path);
    assert_non_null(d);
    int threads = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char status[PATH_MAX + 300];
        snprintf(status, sizeof(status), "%s/%s/status", path, de->d_name);
        status_field(status, "Cpus_allowed_list", got, sizeof(got));
        if (strcmp(got, want) != 0)
            fail_msg("thread %s: Cpus_allowed_list %s, want %s", de->d_name, got, want);
        threads++;
    }
    closedir(d);
    assert_int_equal(threads, 3);
    child_stop(&c);

    /* Gone (reaped) or never there: not found. */
    assert_int_equal(pw_numabind_pid(c.pid, &b, err, sizeof(err)), PW_ERR_NOTFOUND);
    assert_non_null(strstr(err, "not found"));
    assert_int_equal(pw_numabind_pid(0, &b, err, sizeof(err)), PW_ERR_INVAL);
    struct pw_numabind bad = b;
    CPU_ZERO(&bad.cpus);
    assert_int_equal(pw_numabind_pid(getpid(), &bad, err, sizeof(err)), PW_ERR_INVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_good),
        cmocka_unit_test(test_parse_bad),
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_make),
        cmocka_unit_test(test_for_node_fixture),
        cmocka_unit_test(test_self_binds_child),
        cmocka_unit_test(test_self_all_or_nothing),
        cmocka_unit_test(test_pid_binds_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
