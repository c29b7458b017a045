/* config.c — where prewarmctl finds its server and token: --server/--token, then
 * $PREWARM_SERVER/$PREWARM_TOKEN, then the config file ($PREWARM_CONFIG, else
 * ~/.config/prewarm/prewarmctl.json: {"server": "...", "token": "..."}), then the default. */
#include "cli.h"

#include "pw/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONFIG_MAX (64 * 1024)

/* read_config loads path into *out (NULL when the file does not exist and may be missing).
 * Returns PW_CLI_OK or PW_CLI_ERR after printing why. */
static int read_config(const char *path, int must_exist, cJSON **out)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        if (errno == ENOENT && !must_exist)
            return PW_CLI_OK;
        return pw_cli_fail("cannot read config file %s: %s", path, strerror(errno));
    }
    char *buf = pw_xmalloc(CONFIG_MAX + 1);
    size_t n = fread(buf, 1, CONFIG_MAX + 1, f);
    int rerr = ferror(f);
    fclose(f);
    int rv = PW_CLI_OK;
    if (rerr) {
        rv = pw_cli_fail("cannot read config file %s", path);
    } else if (n > CONFIG_MAX) {
        rv = pw_cli_fail("config file %s is larger than %d bytes", path, CONFIG_MAX);
    } else {
        cJSON *j = cJSON_ParseWithLength(buf, n);
        if (j == NULL || !cJSON_IsObject(j)) {
            cJSON_Delete(j);
            rv = pw_cli_fail("config file %s: not a JSON object", path);
        } else {
            const char *keys[] = {"server", "token"};
            for (size_t i = 0; i < PW_ARRAY_LEN(keys); i++) {
                const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, keys[i]);
                if (v != NULL && !cJSON_IsString(v) && !cJSON_IsNull(v)) {
                    rv = pw_cli_fail("config file %s: \"%s\" must be a string", path, keys[i]);
                    break;
                }
            }
            if (rv == PW_CLI_OK)
                *out = j;
            else
                cJSON_Delete(j);
        }
    }
    free(buf);
    return rv;
}

static void pick(char *dst, size_t size, const char *flag, const char *env, const cJSON *file, const char *key,
                 const char *dflt)
{
    const cJSON *v = file ? cJSON_GetObjectItemCaseSensitive(file, key) : NULL;
    if (flag != NULL)
        pw_strlcpy(dst, flag, size);
    else if (env != NULL && env[0] != '\0')
        pw_strlcpy(dst, env, size);
    else if (cJSON_IsString(v) && v->valuestring[0] != '\0')
        pw_strlcpy(dst, v->valuestring, size);
    else
        pw_strlcpy(dst, dflt, size);
}

int pw_cli_config_resolve(struct pw_cli *c)
{
    cJSON *file = NULL;
    const char *explicit_path = getenv("PREWARM_CONFIG");
    int need_file = !(c->server_flag || getenv("PREWARM_SERVER")) || !(c->token_flag || getenv("PREWARM_TOKEN"));
    if (explicit_path != NULL && explicit_path[0] != '\0') {
        if (read_config(explicit_path, 1, &file) != PW_CLI_OK)
            return PW_CLI_ERR;
    } else if (need_file) {
        const char *xdg = getenv("XDG_CONFIG_HOME");
        const char *home = getenv("HOME");
        char path[4096];
        path[0] = '\0';
        if (xdg != NULL && xdg[0] == '/')
            snprintf(path, sizeof(path), "%s/prewarm/prewarmctl.json", xdg);
        else if (home != NULL && home[0] != '\0')
            snprintf(path, sizeof(path), "%s/.config/prewarm/prewarmctl.json", home);
        if (path[0] != '\0' && read_config(path, 0, &file) != PW_CLI_OK)
            return PW_CLI_ERR;
    }
    pick(c->server, sizeof(c->server), c->server_flag, getenv("PREWARM_SERVER"), file, "server",
         PW_CLI_DEFAULT_SERVER);
    pick(c->token, sizeof(c->token), c->token_flag, getenv("PREWARM_TOKEN"), file, "token", "");
    cJSON_Delete(file);
    size_t n = strlen(c->server);
    while (n > 0 && c->server[n - 1] == '/')
        c->server[--n] = '\0';
    if (strpbrk(c->token, "\r\n") != NULL)
        return pw_cli_fail("the token must be one line");
    return PW_CLI_OK;
}
