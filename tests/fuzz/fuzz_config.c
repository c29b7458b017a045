/* fuzz_config.c — libFuzzer target for the configuration files operators write: prewarmd's
 * JSON config file (--config), its API tokens (--tokens-file and the PREWARM_TOKENS form) and
 * the agent's JSON config file (--config).
 *
 * The first byte picks the parser, the rest is the file. Every parser must either accept the
 * input or refuse it with a non-empty one-line reason; a refused tokens file leaves the token
 * table as it was, and no reason ever quotes a token. */
#include "auth.h"
#include "config.h"

#include "pw/agent_config.h"
#include "pw/error.h"
#include "pw/util.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char path[64];

static void check(int ok, const char *what, const char *detail)
{
    if (!ok) {
        fprintf(stderr, "fuzz_config: %s: %s\n", what, detail);
        abort();
    }
}

static void setup_once(void)
{
    if (path[0] != '\0')
        return;
    char dir[] = "/tmp/pw-fuzz-config-XXXXXX";
    check(mkdtemp(dir) != NULL, "mkdtemp", dir);
    snprintf(path, sizeof(path), "%s/file", dir);
    /* Only the file under test may configure anything. */
    extern char **environ;
    for (char **e = environ; *e != NULL;) {
        if (strncmp(*e, "PREWARM_", 8) == 0) {
            char name[128];
            size_t n = strcspn(*e, "=");
            snprintf(name, sizeof(name), "%.*s", (int)n, *e);
            unsetenv(name);
        } else {
            e++;
        }
    }
}

static void write_file(const uint8_t *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    check(f != NULL, "cannot write", path);
    check(fwrite(p, 1, n, f) == n, "short write", path);
    fclose(f);
}

static void check_reason(const char *err, const char *what)
{
    check(err[0] != '\0', what, "refused without a reason");
    check(strchr(err, '\n') == NULL, what, "a reason of more than one line");
}

static void fuzz_sched(const uint8_t *p, size_t n)
{
    write_file(p, n);
    static struct pw_sched_config c;
    char err[512] = "";
    char *argv[] = {"prewarmd", "--config", path, NULL};
    int rv = pw_sched_config_load(&c, 3, argv, err, sizeof(err));
    if (rv != PW_OK) {
        check(rv == PW_ERR_INVAL, "prewarmd config", "an error other than PW_ERR_INVAL");
        check_reason(err, "prewarmd config");
        return;
    }
    char why[200];
    check(pw_placer_config_validate(&c.placement, why, sizeof(why)) == PW_OK, "accepted placement", why);
    check(c.http_port >= 0 && c.http_port <= 65535, "accepted port", "out of range");
}

static void fuzz_tokens(const uint8_t *p, size_t n, int from_file)
{
    static struct pw_auth a;
    memset(&a, 0, sizeof(a));
    char err[512] = "";
    /* One good entry first: a refused input must leave it alone. */
    check(pw_auth_parse(&a, "viewer fuzz-seed-token-0123456789", "seed", err, sizeof(err)) == PW_OK, "seed", err);
    int rv;
    char *text = NULL;
    if (from_file) {
        write_file(p, n);
        rv = pw_auth_load_file(&a, path, err, sizeof(err));
    } else {
        text = pw_xmalloc(n + 1);
        memcpy(text, p, n);
        text[n] = '\0';
        rv = pw_auth_parse(&a, text, "PREWARM_TOKENS", err, sizeof(err));
    }
    if (rv != PW_OK) {
        check_reason(err, "tokens");
        check(a.n == 1, "tokens", "a refused input changed the table");
        /* No token-looking run of the input (16+ token characters) appears in the reason. */
        const char *src = text;
        if (src != NULL) {
            for (const char *s = src; *s != '\0';) {
                size_t k = strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~+/=-");
                if (k >= PW_AUTH_TOKEN_MIN && k <= PW_AUTH_TOKEN_MAX) {
                    char tok[PW_AUTH_TOKEN_MAX + 1];
                    memcpy(tok, s, k);
                    tok[k] = '\0';
                    /* (The reason's own character class text is not a token.) */
                    check(strstr(err, tok) == NULL || strstr(tok, "A-Za-z") != NULL, "tokens",
                          "the reason quotes a token");
                }
                s += k > 0 ? k : 1;
            }
        }
    } else {
        for (size_t i = 0; i < a.n; i++) {
            check(a.t[i].role >= PW_ROLE_VIEWER && a.t[i].role <= PW_ROLE_OPERATOR, "tokens", "bad role");
            check(pw_name_valid(a.t[i].name), "tokens", "bad name");
            const struct pw_auth_token *who;
            check(pw_auth_check(&a, "Bearer fuzz-seed-token-0123456789", &who) == PW_AUTH_OK && who == &a.t[0],
                  "tokens", "the seed token no longer matches");
        }
    }
    free(text);
}

static void fuzz_agent(const uint8_t *p, size_t n)
{
    write_file(p, n);
    static struct pw_agent_config c;
    pw_agent_config_init(&c);
    char err[512] = "";
    int rv = pw_agent_config_load_file(&c, path, err, sizeof(err));
    if (rv != PW_OK) {
        check_reason(err, "agent config");
        return;
    }
    err[0] = '\0';
    if (pw_agent_config_check(&c, err, sizeof(err)) != PW_OK)
        check_reason(err, "agent config check");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup_once();
    if (size == 0)
        return 0;
    switch (data[0] % 4) {
    case 0:
        fuzz_sched(data + 1, size - 1);
        break;
    case 1:
        fuzz_tokens(data + 1, size - 1, 0);
        break;
    case 2:
        fuzz_tokens(data + 1, size - 1, 1);
        break;
    default:
        fuzz_agent(data + 1, size - 1);
        break;
    }
    return 0;
}
