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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_bad_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
