/* test_topology.c — cpulist parsing, NUMA topology from the fixture trees in
 * tests/fixtures/topology/, the one-node fallback and malformed sysfs files. */
#include "pw/error.h"
#include "pw/topology.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FIXTURES PW_SOURCE_DIR "/tests/fixtures/topology"

/* ---- temp trees ---- */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void rm_tree(const char *dir) { nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

static void make_tmp(char *dir, size_t len)
{
    const char *base = getenv("TMPDIR");
    snprintf(dir, len, "%s/pw-topo-XXXXXX", base != NULL && base[0] != '\0' ? base : "/tmp");
    assert_non_null(mkdtemp(dir));
}

/* put writes text to root/rel, creating the directories on the way. */
static void put(const char *root, const char *rel, const char *text)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", root, rel);
    for (char *p = path + strlen(root) + 1; *p != '\0'; p++) {
        if (*p == '/') {
            *p = '\0';
            mkdir(path, 0755);
            *p = '/';
        }
    }
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* ---- cpulist ---- */

static void check_cpulist(const char *in, int want_n, const char *want_canon)
{
    char canon[PW_CPULIST_MAX], err[256] = "";
    int n = -1;
    int rv = pw_cpulist_parse(in, &n, canon, sizeof(canon), err, sizeof(err));
    if (rv != PW_OK)
        fail_msg("cpulist \"%s\": %s", in, err);
    assert_int_equal(n, want_n);
    assert_string_equal(canon, want_canon);
}

static void test_cpulist_valid(void **state)
{
    (void)state;
    check_cpulist("0-3,8-11", 8, "0-3,8-11");
    check_cpulist("0", 1, "0");
    check_cpulist("", 0, "");
    check_cpulist("\n", 0, "");
    check_cpulist("  0-1 \n", 2, "0-1");
    check_cpulist("3,1-2,2", 3, "1-3");
    check_cpulist("0-3,2-5", 6, "0-5");
    check_cpulist("7,5,3,1", 4, "1,3,5,7");
    check_cpulist("0-8191", 8192, "0-8191");
    /* NULL canon: count only. */
    int n = 0;
    assert_int_equal(pw_cpulist_parse("4-7", &n, NULL, 0, NULL, 0), PW_OK);
    assert_int_equal(n, 4);
}

static void test_cpulist_garbage(void **state)
{
    (void)state;
    static const char *bad[] = {
        "abc", "0-", "-1", "3-1", "0,,1", "0,", ",0", "1 2", "0-3x", "8192", "99999999999999999999",
        "0 - 3", "0-3;4", "0x1", "+1", "1-2-3", "0\n1",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char err[256] = "";
        int n = 0;
        int rv = pw_cpulist_parse(bad[i], &n, NULL, 0, err, sizeof(err));
        if (rv != PW_ERR_PARSE)
            fail_msg("cpulist \"%s\": got %d, want PW_ERR_PARSE", bad[i], rv);
        assert_true(strstr(err, "cpulist") != NULL);
    }
    /* A canonical form that does not fit is TOOBIG, not a parse error. */
    char small[4];
    int n = 0;
    assert_int_equal(pw_cpulist_parse("0,2,4,6", &n, small, sizeof(small), NULL, 0),
                     PW_ERR_TOOBIG);
}

/* ---- fixtures ---- */

static void load_fixture(const char *name, double overcommit, struct pw_topology *t)
{
    char root[PATH_MAX], err[512] = "";
    snprintf(root, sizeof(root), "%s/%s", FIXTURES, name);
    int rv = pw_topology_load(t, root, overcommit, err, sizeof(err));
    if (rv != PW_OK)
        fail_msg("%s: %s", name, err);
}

static void test_fixture_1node(void **state)
{
    (void)state;
    struct pw_topology t;
    load_fixture("1node", 1.0, &t);
    assert_int_equal(t.nnodes, 1);
    assert_int_equal(t.from_fallback, 0);
    assert_int_equal(t.nodes[0].id, 0);
    assert_string_equal(t.nodes[0].cpulist, "0-3");
    assert_int_equal(t.nodes[0].ncpus, 4);
    assert_int_equal(t.nodes[0].mem_total_mb, 8192);
    assert_int_equal(t.nodes[0].mem_free_mb, 7168);
    assert_int_equal(t.nodes[0].vcpu_total, 4);
    assert_int_equal(t.nodes[0].vcpu_free, 4);
    double load = -1;
    char root[PATH_MAX];
    snprintf(root, sizeof(root), "%s/1node", FIXTURES);
    assert_int_equal(pw_topology_read_load(root, &load), PW_OK);
    assert_true(load > 0.24 && load < 0.26);
}

static void test_fixture_2node(void **state)
{
    (void)state;
    struct pw_topology t;
    load_fixture("2node", 2.0, &t);
    assert_int_equal(t.nnodes, 2);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(t.nodes[i].id, i);
        assert_int_equal(t.nodes[i].ncpus, 4);
        assert_int_equal(t.nodes[i].mem_total_mb, 16384);
        assert_int_equal(t.nodes[i].vcpu_total, 8);
        assert_int_equal(t.nodes[i].vcpu_free, 8);
    }
    assert_string_equal(t.nodes[0].cpulist, "0-3");
    assert_string_equal(t.nodes[1].cpulist, "4-7");
    assert_int_equal(t.nodes[0].mem_free_mb, 15360);
    assert_int_equal(t.nodes[1].mem_free_mb, 15872);
}

static void test_fixture_4node(void **state)
{
    (void)state;
    struct pw_topology t;
    load_fixture("4node", 1.5, &t);
    assert_int_equal(t.nnodes, 4);
    for (int i = 0; i < 4; i++) {
        char want[16];
        snprintf(want, sizeof(want), "%d-%d", 2 * i, 2 * i + 1);
        assert_int_equal(t.nodes[i].id, i);
        assert_string_equal(t.nodes[i].cpulist, want);
        assert_int_equal(t.nodes[i].ncpus, 2);
        assert_int_equal(t.nodes[i].mem_total_mb, 4096);
        assert_int_equal(t.nodes[i].mem_free_mb, 3072);
        assert_int_equal(t.nodes[i].vcpu_total, 3); /* floor(2 * 1.5) */
    }
}

static void test_bad_overcommit(void **state)
{
    (void)state;
    struct pw_topology t;
    char root[PATH_MAX], err[256] = "";
    snprintf(root, sizeof(root), "%s/1node", FIXTURES);
    assert_int_equal(pw_topology_load(&t, root, 0.0, err, sizeof(err)), PW_ERR_INVAL);
    assert_int_equal(pw_topology_load(&t, root, -1.0, err, sizeof(err)), PW_ERR_INVAL);
}

/* ---- temp trees: fallback and malformed input ---- */

static void test_fallback_one_node(void **state)
{
    (void)state;
    char dir[PATH_MAX], err[512] = "";
    make_tmp(dir, sizeof(dir));
    put(dir, "proc/meminfo",
        "MemTotal:        2097152 kB\nMemFree:         1048576 kB\nMemAvailable:    1572864 kB\n"
        "HugePages_Total:       0\n");
    put(dir, "sys/devices/system/cpu/online", "0-1,4-5\n");
    struct pw_topology t;
    int rv = pw_topology_load(&t, dir, 1.0, err, sizeof(err));
    if (rv != PW_OK)
        fail_msg("fallback: %s", err);
    assert_int_equal(t.nnodes, 1);
    assert_int_equal(t.from_fallback, 1);
    assert_int_equal(t.nodes[0].ncpus, 4);
    assert_string_equal(t.nodes[0].cpulist, "0-1,4-5");
    assert_int_equal(t.nodes[0].mem_total_mb, 2048);
    assert_int_equal(t.nodes[0].mem_free_mb, 1024);
    rm_tree(dir);
}

/* expect_load_error builds a one-node sysfs tree with the given files and expects rv and a
 * message containing want. */
static void expect_load_error(const char *cpulist, const char *meminfo, int want_rv,
                              const char *want)
{
    char dir[PATH_MAX], err[512] = "";
    make_tmp(dir, sizeof(dir));
    if (cpulist != NULL)
        put(dir, "sys/devices/system/node/node0/cpulist", cpulist);
    if (meminfo != NULL)
        put(dir, "sys/devices/system/node/node0/meminfo", meminfo);
    else
        put(dir, "sys/devices/system/node/node0/has_nothing", "");
    struct pw_topology t;
    int rv = pw_topology_load(&t, dir, 1.0, err, sizeof(err));
    rm_tree(dir);
    if (rv != want_rv)
        fail_msg("got %d (%s), want %d", rv, err, want_rv);
    if (strstr(err, want) == NULL)
        fail_msg("error \"%s\" lacks \"%s\"", err, want);
    assert_int_equal(t.nnodes, 0);
}

static const char good_meminfo[] = "Node 0 MemTotal: 1048576 kB\nNode 0 MemFree: 524288 kB\n";

static void test_malformed(void **state)
{
    (void)state;
    expect_load_error("0-3,x\n", good_meminfo, PW_ERR_PARSE, "node0/cpulist");
    expect_load_error("3-0\n", good_meminfo, PW_ERR_PARSE, "reversed");
    expect_load_error(NULL, good_meminfo, PW_ERR_IO, "cpulist");
    expect_load_error("0-3\n", NULL, PW_ERR_IO, "meminfo");
    expect_load_error("0-3\n", "Node 0 MemTotal: 1048576 kB\n", PW_ERR_PARSE, "MemFree missing");
    expect_load_error("0-3\n", "Node 0 MemFree: 1 kB\n", PW_ERR_PARSE, "MemTotal missing");
    expect_load_error("0-3\n", "Node 1 MemTotal: 1048576 kB\nNode 1 MemFree: 1 kB\n",
                      PW_ERR_PARSE, "expected \"Node 0\"");
    expect_load_error("0-3\n", "Node 0 MemTotal: lots kB\nNode 0 MemFree: 1 kB\n", PW_ERR_PARSE,
                      "expected a number");
    expect_load_error("0-3\n", "Node 0 MemTotal: 1048576 MB\nNode 0 MemFree: 1 kB\n",
                      PW_ERR_PARSE, "unexpected");
    expect_load_error("0-3\n", "Node 0 MemTotal 1048576 kB\n", PW_ERR_PARSE, "Key: value");
    expect_load_error("0-3\n", "Node 0 MemTotal: 1 kB\nNode 0 MemFree: 2 kB\n", PW_ERR_PARSE,
                      "larger than MemTotal");
    expect_load_error("0-3\n", "Node 0 MemTotal: 99999999999999999999999 kB\n", PW_ERR_PARSE,
                      "expected a number");
}

static void test_missing_everything(void **state)
{
    (void)state;
    char dir[PATH_MAX], err[512] = "";
    make_tmp(dir, sizeof(dir));
    struct pw_topology t;
    assert_int_equal(pw_topology_load(&t, dir, 1.0, err, sizeof(err)), PW_ERR_IO);
    assert_true(strstr(err, "cpu/online") != NULL);
    double load;
    assert_int_equal(pw_topology_read_load(dir, &load), PW_ERR_IO);
    put(dir, "proc/loadavg", "nonsense\n");
    assert_int_equal(pw_topology_read_load(dir, &load), PW_ERR_PARSE);
    rm_tree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cpulist_valid),
        cmocka_unit_test(test_cpulist_garbage),
        cmocka_unit_test(test_fixture_1node),
        cmocka_unit_test(test_fixture_2node),
        cmocka_unit_test(test_fixture_4node),
        cmocka_unit_test(test_bad_overcommit),
        cmocka_unit_test(test_fallback_one_node),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_missing_everything),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
