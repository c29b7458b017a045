/* test_auth.c — API tokens: the entry format and its errors (which never quote a token), the
 * tokens file, roles, and checking Authorization headers. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"
#include "pw/error.h"

#define TOK_V "viewer-token-0123456789"
#define TOK_G "gateway.token_0123456789~+/="
#define TOK_O "operator-token-abcdefghij"

static void test_parse_and_check(void **state)
{
    (void)state;
    struct pw_auth a;
    memset(&a, 0, sizeof(a));
    char err[256];
    const char *text = "# comment\n\nviewer " TOK_V "\n  gateway\t" TOK_G " gw-1 \r\noperator " TOK_O " alice\n";
    assert_int_equal(pw_auth_parse(&a, text, "test", err, sizeof(err)), PW_OK);
    assert_int_equal(a.n, 3);
    assert_string_equal(a.t[0].name, "viewer-1");
    assert_string_equal(a.t[1].name, "gw-1");
    assert_string_equal(a.t[2].name, "alice");
    assert_int_equal(a.t[2].role, PW_ROLE_OPERATOR);

    const struct pw_auth_token *who;
    assert_int_equal(pw_auth_check(&a, "Bearer " TOK_G, &who), PW_AUTH_OK);
    assert_string_equal(who->name, "gw-1");
    assert_int_equal(who->role, PW_ROLE_GATEWAY);
    assert_int_equal(pw_auth_check(&a, "bearer   " TOK_O "  ", &who), PW_AUTH_OK);
    assert_int_equal(who->role, PW_ROLE_OPERATOR);
    assert_int_equal(pw_auth_check(&a, NULL, &who), PW_AUTH_MISSING);
    assert_null(who);
    assert_int_equal(pw_auth_check(&a, "Basic dXNlcjpwYXNz", &who), PW_AUTH_MISSING);
    assert_int_equal(pw_auth_check(&a, "Bearer " TOK_V "x", &who), PW_AUTH_INVALID);
    assert_int_equal(pw_auth_check(&a, "Bearer short", &who), PW_AUTH_INVALID);
    assert_int_equal(pw_auth_check(&a, "Bearer ", &who), PW_AUTH_INVALID);
    /* One character off anywhere is a different token. */
    char near[] = "Bearer " TOK_O;
    near[strlen(near) - 1] ^= 1;
    assert_int_equal(pw_auth_check(&a, near, &who), PW_AUTH_INVALID);

    /* ';' separates entries in the environment form. */
    struct pw_auth b;
    memset(&b, 0, sizeof(b));
    assert_int_equal(pw_auth_parse(&b, "viewer " TOK_V ";operator " TOK_O " ops", "PREWARM_TOKENS", err, sizeof(err)),
                     PW_OK);
    assert_int_equal(b.n, 2);
    assert_string_equal(b.t[1].name, "ops");
    assert_string_equal(pw_role_str(PW_ROLE_GATEWAY), "gateway");
}

static void test_errors_keep_state(void **state)
{
    (void)state;
    struct pw_auth a;
    memset(&a, 0, sizeof(a));
    char err[256];
    assert_int_equal(pw_auth_parse(&a, "viewer " TOK_V, "t", err, sizeof(err)), PW_OK);
    static const struct {
        const char *text, *want;
    } bad[] = {
        {"admin " TOK_O, "entry 1: role must be viewer, gateway or operator"},
        {"operator", "entry 1: a token is 16-256 characters"},
        {"operator short-token", "entry 1: a token is 16-256 characters"},
        {"operator " TOK_O "\nviewer bad\"token-0123456789", "entry 2: a token is made of"},
        {"operator " TOK_O " name extra", "entry 1: expected ROLE TOKEN [NAME], found more"},
        {"operator " TOK_O " bad/name", "entry 1: the name must be"},
        {"operator " TOK_V, "entry 1: the same token is listed twice"},
        {"operator " TOK_O "\noperator " TOK_O, "entry 2: the same token is listed twice"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        assert_int_equal(pw_auth_parse(&a, bad[i].text, "t", err, sizeof(err)), PW_ERR_INVAL);
        if (strstr(err, bad[i].want) == NULL)
            fail_msg("case %zu: \"%s\" lacks \"%s\"", i, err, bad[i].want);
        /* Errors name the entry, never the token. */
        assert_null(strstr(err, TOK_O));
        assert_null(strstr(err, TOK_V));
        assert_int_equal(a.n, 1);
    }
    /* The cap. */
    struct pw_auth c;
    memset(&c, 0, sizeof(c));
    char line[128];
    for (int i = 0; i < PW_AUTH_MAX_TOKENS; i++) {
        snprintf(line, sizeof(line), "viewer token-number-%06d", i);
        assert_int_equal(pw_auth_parse(&c, line, "t", err, sizeof(err)), PW_OK);
    }
    assert_int_equal(pw_auth_parse(&c, "viewer token-number-999999", "t", err, sizeof(err)), PW_ERR_INVAL);
    assert_non_null(strstr(err, "more than"));
    assert_int_equal(c.n, PW_AUTH_MAX_TOKENS);
}

static void test_file(void **state)
{
    (void)state;
    char path[] = "/tmp/pw-tokens-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *text = "operator " TOK_O " alice\ngateway " TOK_G "\n";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    struct pw_auth a;
    memset(&a, 0, sizeof(a));
    char err[512];
    assert_int_equal(pw_auth_load_file(&a, path, err, sizeof(err)), PW_OK);
    assert_int_equal(a.n, 2);
    /* In a file ';' does not split entries: it is a bad token character. */
    FILE *f = fopen(path, "w");
    fputs("operator " TOK_O ";viewer " TOK_V "\n", f);
    fclose(f);
    memset(&a, 0, sizeof(a));
    assert_int_equal(pw_auth_load_file(&a, path, err, sizeof(err)), PW_ERR_INVAL);
    assert_int_equal(a.n, 0);
    unlink(path);
    assert_int_equal(pw_auth_load_file(&a, path, err, sizeof(err)), PW_ERR_IO);
    assert_non_null(strstr(err, "cannot open"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_parse_and_check), cmocka_unit_test(test_errors_keep_state),
                                       cmocka_unit_test(test_file)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
