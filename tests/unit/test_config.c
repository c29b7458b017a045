/* test_config.c — prewarmd configuration: defaults < JSON file < PREWARM_* env < flags, and a
 * clear error for every kind of bad value. */
#include "config.h"

#include "pw/error.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

static char path[64];

static void write_file(const char *text)
{
    snprintf(path, sizeof(path), "/tmp/pw-test-config-%d.json", (int)getpid());
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int load(struct pw_sched_config *c, char *err, int argc, char **argv)
{
    err[0] = '\0';
    return pw_sched_config_load(c, argc, argv, err, 256);
}

static void clear_env(void)
{
    unsetenv("PREWARM_CONFIG");
    unsetenv("PREWARM_HEARTBEAT_MS");
    unsetenv("PREWARM_HTTP");
    unsetenv("PREWARM_PLACEMENT_WEIGHTS");
    unsetenv("PREWARM_PLACEMENT_CANDIDATES");
    unsetenv("PREWARM_PLACEMENT_SCAN_BUDGET");
}

/* assert_weights compares every weight exactly (they are parsed, never computed). */
static void assert_weights(const struct pw_placer_weights *w, double cost, double fit, double spread,
                           double snapshot, double load)
{
    if (w->cost != cost || w->fit != fit || w->spread != spread || w->snapshot != snapshot || w->load != load)
        fail_msg("weights cost=%g fit=%g spread=%g snapshot=%g load=%g, want %g %g %g %g %g", w->cost, w->fit,
                 w->spread, w->snapshot, w->load, cost, fit, spread, snapshot, load);
}

static void test_defaults(void **state)
{
    (void)state;
    clear_env();
    struct pw_sched_config c;
    char err[256];
    char *argv[] = {"prewarmd", NULL};
    assert_int_equal(load(&c, err, 1, argv), PW_OK);
    assert_string_equal(c.http_host, "127.0.0.1");
    assert_int_equal(c.http_port, 8080);
    assert_int_equal(c.heartbeat_ms, 1000);
    assert_int_equal(c.adopt_grace_ms, 3000); /* 3 heartbeats */
    struct pw_placer_config want;
    pw_placer_config_default(&want);
    assert_weights(&c.placement.w, want.w.cost, want.w.fit, want.w.spread, want.w.snapshot, want.w.load);
    assert_int_equal(c.placement.candidates, want.candidates);
    assert_int_equal(c.placement.scan_budget, want.scan_budget);
}

static void test_precedence(void **state)
{
    (void)state;
    clear_env();
    write_file("{\"heartbeat_ms\": 700, \"http\": \"127.0.0.1:9000\", \"lease_ttl_ms\": \"5s\", \"max_waiters\": 7}");
    setenv("PREWARM_HEARTBEAT_MS", "600", 1);
    struct pw_sched_config c;
    char err[256];
    char *argv[] = {"prewarmd", "--config", path, "--http", "[::1]:9100", NULL};
    assert_int_equal(load(&c, err, 5, argv), PW_OK);
    assert_int_equal(c.heartbeat_ms, 600);    /* env over file */
    assert_string_equal(c.http_host, "::1"); /* flag over file */
    assert_int_equal(c.http_port, 9100);
    assert_int_equal(c.lease_ttl_ms, 5000);   /* file, with a unit */
    assert_int_equal(c.max_waiters_per_fn, 7);
    char *argv2[] = {"prewarmd", "--config", path, "--heartbeat-ms", "250", NULL};
    assert_int_equal(load(&c, err, 5, argv2), PW_OK);
    assert_int_equal(c.heartbeat_ms, 250);    /* flag over env */
    clear_env();
    unlink(path);
}

static void expect_error(int argc, char **argv, const char *needle)
{
    struct pw_sched_config c;
    char err[256];
    assert_int_equal(load(&c, err, argc, argv), PW_ERR_INVAL);
    if (strstr(err, needle) == NULL)
        fail_msg("error \"%s\" does not mention \"%s\"", err, needle);
}

static void test_bad_values(void **state)
{
    (void)state;
    clear_env();
    char *a1[] = {"prewarmd", "--heartbeat-ms", "0", NULL};
    expect_error(3, a1, "heartbeat-ms must be in 50..");
    char *a2[] = {"prewarmd", "--http", "nohost", NULL};
    expect_error(3, a2, "HOST:PORT");
    char *a3[] = {"prewarmd", "--http", "127.0.0.1:70000", NULL};
    expect_error(3, a3, "HOST:PORT");
    char *a4[] = {"prewarmd", "--bogus", NULL};
    expect_error(2, a4, "unknown flag --bogus");
    char *a5[] = {"prewarmd", "--log-level", "loud", NULL};
    expect_error(3, a5, "debug, info, warn or error");
    char *a6[] = {"prewarmd", "--max-waiters", "12x", NULL};
    expect_error(3, a6, "must be an integer");
    char *a7[] = {"prewarmd", "stray", NULL};
    expect_error(2, a7, "unexpected argument");
    write_file("{\"heartbeat_ms\": 700, \"nope\": 1}");
    char *a8[] = {"prewarmd", "--config", path, NULL};
    expect_error(3, a8, "unknown key \"nope\"");
    write_file("[1,2]");
    expect_error(3, a8, "not a JSON object");
    write_file("{\"heartbeat_ms\": 1.5}");
    expect_error(3, a8, "string or an integer");
    unlink(path);
    char *a9[] = {"prewarmd", "--config", "/nonexistent/prewarm.json", NULL};
    expect_error(3, a9, "No such file");
    setenv("PREWARM_HTTP", "bad", 1);
    char *a10[] = {"prewarmd", NULL};
    expect_error(1, a10, "PREWARM_HTTP");
    clear_env();
}

static void test_placement(void **state)
{
    (void)state;
    clear_env();
    struct pw_placer_config def;
    pw_placer_config_default(&def);
    struct pw_sched_config c;
    char err[256];

    /* The file's nested form: weights not named keep their defaults. */
    write_file("{\"placement\": {\"weights\": {\"cost\": 2.5, \"load\": 0}, \"candidates\": 4, "
               "\"scan_budget\": 32}}");
    char *argv[] = {"prewarmd", "--config", path, NULL};
    assert_int_equal(load(&c, err, 3, argv), PW_OK);
    assert_weights(&c.placement.w, 2.5, def.w.fit, def.w.spread, def.w.snapshot, 0);
    assert_int_equal(c.placement.candidates, 4);
    assert_int_equal(c.placement.scan_budget, 32);

    /* The environment over the file, a flag over both; each names only what it changes. */
    setenv("PREWARM_PLACEMENT_WEIGHTS", " fit = 3 , spread=0.25", 1);
    setenv("PREWARM_PLACEMENT_CANDIDATES", "6", 1);
    assert_int_equal(load(&c, err, 3, argv), PW_OK);
    assert_weights(&c.placement.w, 2.5, 3, 0.25, def.w.snapshot, 0);
    assert_int_equal(c.placement.candidates, 6);
    char *argv2[] = {"prewarmd", "--config", path, "--placement-weights", "snapshot=2,fit=1e-3",
                     "--placement-scan-budget", "128", NULL};
    assert_int_equal(load(&c, err, 7, argv2), PW_OK);
    assert_weights(&c.placement.w, 2.5, 0.001, 0.25, 2, 0);
    assert_int_equal(c.placement.candidates, 6);
    assert_int_equal(c.placement.scan_budget, 128);
    assert_int_equal(pw_placer_config_validate(&c.placement, err, sizeof(err)), PW_OK);
    clear_env();

    /* The flat keys and the string form work in the file too. */
    write_file("{\"placement_weights\": \"cost=7\", \"placement_candidates\": 3, "
               "\"placement\": {\"weights\": \"load=1.5\"}}");
    assert_int_equal(load(&c, err, 3, argv), PW_OK);
    assert_weights(&c.placement.w, 7, def.w.fit, def.w.spread, def.w.snapshot, 1.5);
    assert_int_equal(c.placement.candidates, 3);
    unlink(path);
}

static void test_placement_errors(void **state)
{
    (void)state;
    clear_env();
    static const struct {
        const char *weights, *needle;
    } bad[] = {
        {"cost=-1", "cost must be a finite number >= 0"},
        {"cost=nan", "finite number"},
        {"cost=inf", "finite number"},
        {"bogus=1", "unknown placement weight \"bogus\""},
        {"cost", "must look like cost=4"},
        {"=1", "must look like"},
        {"", "must look like"},
        {"cost=1;fit=2", "separated by commas"},
        {"cost=1,", "must look like"},
        {"cost=1,cost=2", "cost given twice"},
        {"cost=abc", "cost needs a number"},
        {"cost=1x", "separated by commas"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *a[] = {"prewarmd", "--placement-weights", (char *)bad[i].weights, NULL};
        expect_error(3, a, bad[i].needle);
        expect_error(3, a, "flag --placement-weights");
    }
    char *a1[] = {"prewarmd", "--placement-candidates", "0", NULL};
    expect_error(3, a1, "placement-candidates must be in 1..");
    char *a2[] = {"prewarmd", "--placement-scan-budget", "-5", NULL};
    expect_error(3, a2, "placement-scan-budget must be in 1..");
    /* Each value is fine alone; together they fail the placer's own validation. */
    char *a4[] = {"prewarmd", "--placement-candidates", "16", "--placement-scan-budget", "8", NULL};
    expect_error(5, a4, "placement configuration: ");
    char *a5[] = {"prewarmd", "--placement-weights", "cost=2e6", NULL};
    expect_error(3, a5, "placement configuration: ");
    setenv("PREWARM_PLACEMENT_WEIGHTS", "load=-0.5", 1);
    char *a3[] = {"prewarmd", NULL};
    expect_error(1, a3, "PREWARM_PLACEMENT_WEIGHTS");
    clear_env();

    char *af[] = {"prewarmd", "--config", path, NULL};
    write_file("{\"placement\": 3}");
    expect_error(3, af, "\"placement\" must be an object");
    write_file("{\"placement\": {\"weights\": {\"cost\": \"4\"}}}");
    expect_error(3, af, "placement weight cost must be a number");
    write_file("{\"placement\": {\"weights\": {\"cpu\": 1}}}");
    expect_error(3, af, "unknown placement weight \"cpu\"");
    write_file("{\"placement\": {\"weights\": {\"fit\": -2}}}");
    expect_error(3, af, "fit must be a finite number >= 0");
    write_file("{\"placement\": {\"candidate\": 8}}");
    expect_error(3, af, "unknown key \"placement.candidate\"");
    write_file("{\"placement\": {\"candidates\": 2.5}}");
    expect_error(3, af, "\"placement.candidates\" must be an integer");
    write_file("{\"placement\": {\"weights\": [1, 2]}}");
    expect_error(3, af, "an object of numbers or a string");
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_placement),
        cmocka_unit_test(test_placement_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
