/* test_replay.c — prewarm-replay on tiny hand-made traces with answers computed by hand, and
 * its determinism. Black-box: the test writes trace directories to a temporary directory, runs
 * the built executable (PW_BINARY_DIR/bench/replay/prewarm-replay) and reads its JSON.
 *
 * Every trace here has one duration for all percentiles (so durations are exact) and 1024 MB
 * of memory (so 1 VM-second of waste is 1 GB-s); --spread start puts each minute's arrivals on
 * its first millisecond. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#define REPLAY PW_BINARY_DIR "/bench/replay/prewarm-replay"

static char tmpdir[256];

/* write_trace writes nfns functions of nminutes; counts[f][m] invocations; duration dur_ms. */
static void write_trace(const char *dir, size_t nfns, size_t nminutes, const unsigned *counts, unsigned dur_ms)
{
    char path[512];
    snprintf(path, sizeof(path), "mkdir -p %s", dir);
    assert_int_equal(system(path), 0);
    snprintf(path, sizeof(path), "%s/invocations_per_minute.csv", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "HashFunction,HashApp,HashOwner");
    for (size_t m = 0; m < nminutes; m++)
        fprintf(f, ",%zu", m + 1);
    fprintf(f, "\n");
    for (size_t i = 0; i < nfns; i++) {
        fprintf(f, "hash%zu,hash%zu,hash%zu", i, i, i);
        for (size_t m = 0; m < nminutes; m++)
            fprintf(f, ",%u", counts[i * nminutes + m]);
        fprintf(f, "\n");
    }
    fclose(f);
    snprintf(path, sizeof(path), "%s/durations_ms.csv", dir);
    f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "HashFunction,HashApp,HashOwner,Count,Average,Minimum,Maximum,percentile_Average_0,"
               "percentile_Average_1,percentile_Average_25,percentile_Average_50,percentile_Average_75,"
               "percentile_Average_99,percentile_Average_100\n");
    for (size_t i = 0; i < nfns; i++)
        fprintf(f, "hash%zu,hash%zu,hash%zu,1,%u,%u,%u,%u,%u,%u,%u,%u,%u,%u\n", i, i, i, dur_ms, dur_ms, dur_ms, dur_ms,
                dur_ms, dur_ms, dur_ms, dur_ms, dur_ms, dur_ms);
    fclose(f);
    snprintf(path, sizeof(path), "%s/memory_mb.csv", dir);
    f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "HashApp,HashOwner,SampleCount,AverageAllocatedMb\n");
    for (size_t i = 0; i < nfns; i++)
        fprintf(f, "hash%zu,hash%zu,1,1024\n", i, i);
    fclose(f);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    assert_non_null(s);
    assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = '\0';
    fclose(f);
    return s;
}

/* run executes prewarm-replay with args on trace dir and returns its JSON (caller frees). */
static char *run(const char *trace, const char *args)
{
    if (access(REPLAY, X_OK) != 0)
        fail_msg("%s not built: build the prewarm-replay target first", REPLAY);
    char json[512], cmd[2048];
    snprintf(json, sizeof(json), "%s/out.json", tmpdir);
    unlink(json);
    snprintf(cmd, sizeof(cmd), "%s --trace %s --no-timing --json %s %s > %s/stdout.txt 2> %s/stderr.txt", REPLAY,
             trace, json, args, tmpdir, tmpdir);
    int rv = system(cmd);
    if (rv != 0) {
        char p[512];
        snprintf(p, sizeof(p), "%s/stderr.txt", tmpdir);
        char *err = slurp(p);
        fail_msg("prewarm-replay failed (%d): %s\n%s", rv, cmd, err ? err : "");
    }
    char *s = slurp(json);
    assert_non_null(s);
    return s;
}

/* field returns the number after "key": in policy label's object (one object per line). */
static double field(const char *json, const char *label, const char *key)
{
    char pat[128];
    snprintf(pat, sizeof(pat), "{\"policy\": \"%s\",", label);
    const char *obj = strstr(json, pat);
    if (obj == NULL)
        fail_msg("policy %s not in the output:\n%s", label, json);
    const char *eol = strchr(obj, '\n');
    snprintf(pat, sizeof(pat), "\"%s\": ", key);
    const char *k = strstr(obj, pat);
    if (k == NULL || (eol != NULL && k > eol))
        fail_msg("no %s for %s", key, label);
    return strtod(k + strlen(pat), NULL);
}

#define assert_near(a, b) \
    do { \
        double a_ = (a), b_ = (b); \
        if (!(a_ - b_ < 1e-6 && b_ - a_ < 1e-6)) \
            fail_msg("%s = %.9g, expected %.9g", #a, a_, b_); \
    } while (0)

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/pw_test_replay_XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* One function, one invocation at minutes 1 and 6, 1 s each, R = 200 ms, 20 minutes.
 *  none: both cold; each VM lives 1.2 s for 1 s of work: 0.4 GB-s.
 *  keepalive:10m: the first is cold (VM from 60 s), the second warm (300 s later); the VM idles
 *    from 361 s and goes at the 961 s tick: alive 901 s, busy 2 s: 899 GB-s.
 *  oracle: restores R before each arrival, destroys at the end: 0 cold, 0.4 GB-s. */
static void test_two_invocations(void **state)
{
    (void)state;
    unsigned counts[20] = {0};
    counts[1] = 1;
    counts[6] = 1;
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/two", tmpdir);
    write_trace(dir, 1, 20, counts, 1000);
    char *j = run(dir, "--spread start --policy none --policy keepalive:10m --policy oracle");
    assert_near(field(j, "none", "invocations"), 2);
    assert_near(field(j, "none", "cold"), 2);
    assert_near(field(j, "none", "waste_gb_s"), 0.4);
    assert_near(field(j, "keepalive:10m", "cold"), 1);
    assert_near(field(j, "keepalive:10m", "waste_gb_s"), 899.0);
    assert_near(field(j, "keepalive:10m", "waste_norm"), 100.0);
    assert_near(field(j, "keepalive:10m", "fn_cold_pct_p75"), 50.0);
    assert_near(field(j, "oracle", "cold"), 0);
    assert_near(field(j, "oracle", "waste_gb_s"), 0.4);
    assert_near(field(j, "none", "peak_vms"), 1);
    free(j);

    /* Instance mode: the same timing without the core. keepalive:10m wastes the restore, the
     * 298.8 s gap and the 600 s after the last run. */
    j = run(dir, "--spread start --mode instance --policy none --policy keepalive:10m --policy oracle");
    assert_near(field(j, "none", "cold"), 2);
    assert_near(field(j, "keepalive:10m", "cold"), 1);
    assert_near(field(j, "keepalive:10m", "waste_gb_s"), 899.0);
    assert_near(field(j, "oracle", "cold"), 0);
    assert_near(field(j, "oracle", "waste_gb_s"), 0.4);
    free(j);
}

/* Pool and instance modes differ under concurrency: 3 invocations at the same instant need 3
 * VMs (3 cold) in pool mode but one instance (1 cold) in instance mode. */
static void test_concurrency(void **state)
{
    (void)state;
    unsigned counts[5] = {0, 3, 0, 0, 0};
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/conc", tmpdir);
    write_trace(dir, 1, 5, counts, 5000);
    char *j = run(dir, "--spread start --policy keepalive:10m");
    assert_near(field(j, "keepalive:10m", "cold"), 3);
    assert_near(field(j, "keepalive:10m", "peak_vms"), 3);
    free(j);
    j = run(dir, "--spread start --mode instance --policy keepalive:10m");
    assert_near(field(j, "keepalive:10m", "cold"), 1);
    free(j);
}

/* A function invoked every 10 minutes for 6 hours: hybrid learns the period (idle times all in
 * bin 9) and after its 10 samples pre-warms 8.1 min after each run instead of keeping the VM:
 * one cold start, and less waste than keepalive:10m. none is cold every time. */
static void test_hybrid_periodic(void **state)
{
    (void)state;
    unsigned counts[360] = {0};
    for (int m = 0; m < 360; m += 10)
        counts[m] = 1;
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/periodic", tmpdir);
    write_trace(dir, 1, 360, counts, 1000);
    char *j = run(dir, "--spread start --policy none --policy keepalive:10m --policy hybrid");
    assert_near(field(j, "none", "cold"), 36);
    assert_near(field(j, "hybrid", "cold"), 1);
    double hy = field(j, "hybrid", "waste_gb_s"), ka = field(j, "keepalive:10m", "waste_gb_s");
    assert_true(hy < ka);
    /* Roughly: 10 gaps of 599 s on the 4 h fallback, then 25 gaps of 599 - 486 = 113 s each
     * (pre-warm at 8.1 min, arrival at ~10 min), against 36 x ~599 s for keepalive:10m. */
    assert_true(hy < 0.5 * ka);
    free(j);
}

/* Reactive scales to zero 30 s after the last request: one request at 60 s for 1 s; the
 * evaluation at 92 s (first 2 s step >= 61.2 + 30 s) sets 0, so the VM lives 32 s: 31 GB-s. */
static void test_reactive_scale_to_zero(void **state)
{
    (void)state;
    unsigned counts[3] = {0, 1, 0};
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/reactive", tmpdir);
    write_trace(dir, 1, 3, counts, 1000);
    char *j = run(dir, "--spread start --policy reactive");
    assert_near(field(j, "reactive", "cold"), 1);
    assert_near(field(j, "reactive", "waste_gb_s"), 31.0);
    free(j);
}

/* Same seed, same JSON byte for byte; another seed, other numbers. */
static void test_determinism(void **state)
{
    (void)state;
    enum { NF = 6, NM = 30 };
    unsigned counts[NF * NM];
    uint64_t x = 42;
    for (size_t i = 0; i < NF * NM; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        counts[i] = (unsigned)((x >> 33) % (i % NF == 0 ? 200 : 4));
    }
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/det", tmpdir);
    write_trace(dir, NF, NM, counts, 700);
    const char *args = "--seed 7 --policy none --policy keepalive:2m --policy hybrid --policy reactive "
                       "--policy predictive:0.9 --model none --policy oracle";
    char *a = run(dir, args);
    char *b = run(dir, args);
    assert_string_equal(a, b);
    char *c = run(dir, "--seed 8 --policy none --policy keepalive:2m --policy hybrid --policy reactive "
                       "--policy predictive:0.9 --model none --policy oracle");
    assert_string_not_equal(a, c);
    free(a);
    free(b);
    free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_invocations),
        cmocka_unit_test(test_concurrency),
        cmocka_unit_test(test_hybrid_periodic),
        cmocka_unit_test(test_reactive_scale_to_zero),
        cmocka_unit_test(test_determinism),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
