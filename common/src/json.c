/* json.c — the flat JSON object reader for hot request bodies; see pw/json.h. */
#include "pw/json.h"

#include <string.h>

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* plain_str reads a string without escapes or bytes outside printable ASCII; p is at the
 * opening quote. Returns the byte after the closing quote, or NULL. */
static const char *plain_str(const char *p, const char *end, const char **s, size_t *n)
{
    const char *q = ++p;
    while (q < end && *q != '"') {
        unsigned char c = (unsigned char)*q;
        if (c < 0x20 || c >= 0x7f || c == '\\')
            return NULL;
        q++;
    }
    if (q == end)
        return NULL;
    *s = p;
    *n = (size_t)(q - p);
    return q + 1;
}

/* plain_int reads -?(0|[1-9][0-9]{0,14}) followed by a delimiter. Returns the byte after the
 * digits, or NULL. */
static const char *plain_int(const char *p, const char *end, int64_t *out)
{
    int neg = 0;
    if (p < end && *p == '-') {
        neg = 1;
        p++;
    }
    const char *d = p;
    int64_t v = 0;
    while (p < end && *p >= '0' && *p <= '9') {
        v = v * 10 + (*p - '0');
        p++;
        if (p - d > 15)
            return NULL;
    }
    if (p == d || (*d == '0' && p - d > 1))
        return NULL;
    if (p < end && *p != ',' && *p != '}' && *p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
        return NULL; /* a fraction, an exponent or garbage: cJSON decides */
    *out = neg ? -v : v;
    return p;
}

int pw_json_flat_parse(const char *body, size_t len, struct pw_json_flat *out)
{
    out->n = 0;
    if (len == 0)
        return 1;
    const char *p = body, *end = body + len;
    p = skip_ws(p, end);
    if (p == end || *p++ != '{')
        return 0;
    p = skip_ws(p, end);
    if (p < end && *p == '}') {
        p++;
    } else {
        for (;;) {
            if (out->n == PW_JSON_FLAT_MAX || p == end || *p != '"')
                return 0;
            struct pw_json_member *m = &out->m[out->n++];
            if ((p = plain_str(p, end, &m->key, &m->klen)) == NULL)
                return 0;
            p = skip_ws(p, end);
            if (p == end || *p++ != ':')
                return 0;
            p = skip_ws(p, end);
            if (p == end)
                return 0;
            if (*p == '"') {
                m->is_str = 1;
                p = plain_str(p, end, &m->str, &m->slen);
            } else {
                m->is_str = 0;
                p = plain_int(p, end, &m->num);
            }
            if (p == NULL)
                return 0;
            p = skip_ws(p, end);
            if (p == end)
                return 0;
            if (*p == '}') {
                p++;
                break;
            }
            if (*p++ != ',')
                return 0;
            p = skip_ws(p, end);
        }
    }
    return skip_ws(p, end) == end;
}

const struct pw_json_member *pw_json_flat_get(const struct pw_json_flat *f, const char *key)
{
    size_t kl = strlen(key);
    for (size_t i = 0; i < f->n; i++)
        if (f->m[i].klen == kl && memcmp(f->m[i].key, key, kl) == 0)
            return &f->m[i];
    return NULL;
}
