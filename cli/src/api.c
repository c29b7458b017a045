/* api.c — prewarmctl's calls to prewarmd: one request, its JSON answer, and the one-line error
 * an operator sees when it fails; plus the small JSON accessors the commands share. */
#include "cli.h"

#include "client.h"

#include "pw/error.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int pw_cli_call(const struct pw_cli *c, const char *method, const char *path, const char *body, cJSON **out,
                char *err, size_t errlen)
{
    *out = NULL;
    struct pw_cli_resp resp;
    if (pw_cli_http_do(c->server, c->token, method, path, body, c->timeout_ms, &resp, err, errlen) != PW_OK)
        return -1;
    if (resp.body.len > 0)
        *out = cJSON_ParseWithLength(resp.body.data, resp.body.len);
    int status = resp.status;
    if (*out == NULL && status >= 200 && status < 300 && resp.body.len > 0)
        pw_errf(err, errlen, "%s %s: the answer is not JSON (HTTP %d)", method, path, status);
    pw_cli_resp_fini(&resp);
    return status;
}

int pw_cli_api(const struct pw_cli *c, const char *method, const char *path, const char *body, cJSON **out)
{
    char err[512] = "";
    int status = pw_cli_call(c, method, path, body, out, err, sizeof(err));
    if (status < 0)
        return pw_cli_fail("%s", err);
    if (status >= 200 && status < 300) {
        if (*out == NULL)
            return pw_cli_fail("%s", err[0] ? err : "empty answer from the server");
        return PW_CLI_OK;
    }
    const cJSON *e = *out ? cJSON_GetObjectItemCaseSensitive(*out, "error") : NULL;
    const char *code = pw_cli_str(e, "code"), *msg = pw_cli_str(e, "message");
    int rv;
    if (msg[0] != '\0')
        rv = pw_cli_fail("%s (%s, HTTP %d)", msg, code[0] ? code : "error", status);
    else
        rv = pw_cli_fail("%s %s: HTTP %d with no error object", method, path, status);
    cJSON_Delete(*out);
    *out = NULL;
    return rv;
}

/* print_value writes v indented by depth levels of two spaces (as Python's json.dumps with
 * indent=2); scalars and their escaping are cJSON's own. */
static void print_value(FILE *f, const cJSON *v, int depth)
{
    if ((cJSON_IsArray(v) || cJSON_IsObject(v)) && v->child != NULL) {
        int obj = cJSON_IsObject(v);
        fputc(obj ? '{' : '[', f);
        for (const cJSON *it = v->child; it != NULL; it = it->next) {
            fprintf(f, "\n%*s", 2 * (depth + 1), "");
            if (obj) {
                cJSON *key = cJSON_CreateString(it->string ? it->string : "");
                char *ks = cJSON_PrintUnformatted(key);
                fprintf(f, "%s: ", ks ? ks : "\"\"");
                cJSON_free(ks);
                cJSON_Delete(key);
            }
            print_value(f, it, depth + 1);
            if (it->next != NULL)
                fputc(',', f);
        }
        fprintf(f, "\n%*s%c", 2 * depth, "", obj ? '}' : ']');
        return;
    }
    char *s = cJSON_PrintUnformatted(v);
    if (s == NULL) {
        fprintf(stderr, "prewarmctl: out of memory\n");
        exit(PW_CLI_ERR);
    }
    fputs(s, f);
    cJSON_free(s);
}

void pw_cli_print_json(const cJSON *j)
{
    print_value(stdout, j, 0);
    fputc('\n', stdout);
}

const char *pw_cli_str(const cJSON *o, const char *key)
{
    const cJSON *v = o ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
    return cJSON_IsString(v) ? v->valuestring : "";
}

double pw_cli_num(const cJSON *o, const char *key)
{
    const cJSON *v = o ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

int pw_cli_bool(const cJSON *o, const char *key)
{
    const cJSON *v = o ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
    return cJSON_IsTrue(v);
}

static void fmt_num(double v, char *buf, size_t size)
{
    if (!isfinite(v))
        snprintf(buf, size, "-");
    else if (v == floor(v) && fabs(v) < 1e15)
        snprintf(buf, size, "%.0f", v);
    else
        snprintf(buf, size, "%.4g", v);
}

const char *pw_cli_fmt(const cJSON *v, char *buf, size_t size)
{
    buf[0] = '\0';
    if (v == NULL || cJSON_IsNull(v)) {
        pw_strlcpy(buf, "-", size);
    } else if (cJSON_IsString(v)) {
        pw_strlcpy(buf, v->valuestring[0] ? v->valuestring : "-", size);
    } else if (cJSON_IsBool(v)) {
        pw_strlcpy(buf, cJSON_IsTrue(v) ? "true" : "false", size);
    } else if (cJSON_IsNumber(v)) {
        fmt_num(v->valuedouble, buf, size);
    } else if (cJSON_IsArray(v)) {
        size_t len = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, v) {
            char one[256];
            pw_cli_fmt(e, one, sizeof(one));
            len += (size_t)snprintf(buf + (len < size ? len : size), len < size ? size - len : 0, "%s%s",
                                    len ? "," : "", one);
        }
        if (len == 0)
            pw_strlcpy(buf, "-", size);
    } else {
        char *s = cJSON_PrintUnformatted(v);
        pw_strlcpy(buf, s ? s : "-", size);
        cJSON_free(s);
    }
    return buf;
}
