/* auth.c — bearer tokens with roles; see auth.h. */
#include "auth.h"

#include "pw/error.h"
#include "pw/sha256.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const role_names[] = {"none", "viewer", "gateway", "operator"};

const char *pw_role_str(enum pw_role r)
{
    return (unsigned)r < PW_ARRAY_LEN(role_names) ? role_names[r] : "none";
}

static enum pw_role role_parse(const char *s, size_t n)
{
    for (int r = PW_ROLE_VIEWER; r <= PW_ROLE_OPERATOR; r++)
        if (strlen(role_names[r]) == n && strncmp(s, role_names[r], n) == 0)
            return (enum pw_role)r;
    return PW_ROLE_NONE;
}

static int token_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || strchr("._~+/=-", c) != NULL;
}

static void digest(const char *tok, size_t n, unsigned char out[32])
{
    struct pw_sha256 s;
    char hex[65];
    pw_sha256_init(&s);
    pw_sha256_update(&s, tok, n);
    pw_sha256_final(&s, hex);
    for (int i = 0; i < 32; i++) {
        unsigned hi = (unsigned)(hex[2 * i] <= '9' ? hex[2 * i] - '0' : hex[2 * i] - 'a' + 10);
        unsigned lo = (unsigned)(hex[2 * i + 1] <= '9' ? hex[2 * i + 1] - '0' : hex[2 * i + 1] - 'a' + 10);
        out[i] = (unsigned char)(hi << 4 | lo);
    }
}

static void errf(char *buf, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void errf(char *buf, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, n, fmt, ap);
    va_end(ap);
}

/* next_word returns the next run of non-blank characters in [*p, end), advancing *p. */
static const char *next_word(const char **p, const char *end, size_t *len)
{
    const char *s = *p;
    while (s < end && (*s == ' ' || *s == '\t' || *s == '\r'))
        s++;
    const char *w = s;
    while (s < end && *s != ' ' && *s != '\t' && *s != '\r')
        s++;
    *p = s;
    *len = (size_t)(s - w);
    return *len > 0 ? w : NULL;
}

static int parse_entry(struct pw_auth *a, const char *s, const char *end, const char *from, int no, char *errbuf,
                       size_t errlen)
{
    size_t rl, tl, nl, xl;
    const char *p = s;
    const char *role_w = next_word(&p, end, &rl);
    if (role_w == NULL || *role_w == '#')
        return PW_OK; /* blank or a comment */
    const char *tok = next_word(&p, end, &tl);
    const char *name = next_word(&p, end, &nl);
    if (next_word(&p, end, &xl) != NULL) {
        errf(errbuf, errlen, "%s, entry %d: expected ROLE TOKEN [NAME], found more", from, no);
        return PW_ERR_INVAL;
    }
    enum pw_role role = role_parse(role_w, rl);
    if (role == PW_ROLE_NONE) {
        errf(errbuf, errlen, "%s, entry %d: role must be viewer, gateway or operator", from, no);
        return PW_ERR_INVAL;
    }
    if (tok == NULL || tl < PW_AUTH_TOKEN_MIN || tl > PW_AUTH_TOKEN_MAX) {
        errf(errbuf, errlen, "%s, entry %d: a token is %d-%d characters", from, no, PW_AUTH_TOKEN_MIN,
             PW_AUTH_TOKEN_MAX);
        return PW_ERR_INVAL;
    }
    for (size_t i = 0; i < tl; i++)
        if (!token_char(tok[i])) {
            errf(errbuf, errlen, "%s, entry %d: a token is made of [A-Za-z0-9._~+/=-]", from, no);
            return PW_ERR_INVAL;
        }
    if (a->n == PW_AUTH_MAX_TOKENS) {
        errf(errbuf, errlen, "%s, entry %d: more than %d tokens", from, no, PW_AUTH_MAX_TOKENS);
        return PW_ERR_INVAL;
    }
    struct pw_auth_token *t = &a->t[a->n];
    memset(t, 0, sizeof(*t));
    t->role = role;
    if (name != NULL) {
        if (nl >= sizeof(t->name)) {
            errf(errbuf, errlen, "%s, entry %d: the name is longer than %d characters", from, no, PW_NAME_MAX - 1);
            return PW_ERR_INVAL;
        }
        memcpy(t->name, name, nl);
        if (!pw_name_valid(t->name)) {
            errf(errbuf, errlen, "%s, entry %d: the name must be 1-63 characters of [A-Za-z0-9._-]", from, no);
            return PW_ERR_INVAL;
        }
    } else {
        snprintf(t->name, sizeof(t->name), "%s-%zu", pw_role_str(role), a->n + 1);
    }
    digest(tok, tl, t->digest);
    for (size_t i = 0; i < a->n; i++)
        if (memcmp(a->t[i].digest, t->digest, sizeof(t->digest)) == 0) {
            errf(errbuf, errlen, "%s, entry %d: the same token is listed twice", from, no);
            return PW_ERR_INVAL;
        }
    a->n++;
    return PW_OK;
}

int pw_auth_parse(struct pw_auth *a, const char *text, const char *from, char *errbuf, size_t errlen)
{
    size_t n0 = a->n;
    int no = 0;
    const char *s = text;
    while (*s != '\0') {
        const char *e = s;
        while (*e != '\0' && *e != '\n' && *e != ';')
            e++;
        no++;
        int rv = parse_entry(a, s, e, from, no, errbuf, errlen);
        if (rv != PW_OK) {
            memset(&a->t[n0], 0, (a->n - n0) * sizeof(a->t[0]));
            a->n = n0;
            return rv;
        }
        s = *e != '\0' ? e + 1 : e;
    }
    return PW_OK;
}

int pw_auth_load_file(struct pw_auth *a, const char *path, char *errbuf, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        errf(errbuf, errlen, "tokens file %s: cannot open it", path);
        return PW_ERR_IO;
    }
    enum { MAX = 64 * 1024 };
    char *buf = pw_xmalloc(MAX + 1);
    size_t n = fread(buf, 1, MAX + 1, f);
    int bad = ferror(f);
    fclose(f);
    int rv;
    if (bad) {
        errf(errbuf, errlen, "tokens file %s: read error", path);
        rv = PW_ERR_IO;
    } else if (n > MAX) {
        errf(errbuf, errlen, "tokens file %s: larger than 64 KiB", path);
        rv = PW_ERR_INVAL;
    } else if (memchr(buf, '\0', n) != NULL) {
        errf(errbuf, errlen, "tokens file %s: contains a NUL byte", path);
        rv = PW_ERR_INVAL;
    } else {
        buf[n] = '\0';
        /* In the file only newlines separate entries: a ';' there is an error in the token. */
        for (size_t i = 0; i < n; i++)
            if (buf[i] == ';')
                buf[i] = '!';
        char from[600];
        snprintf(from, sizeof(from), "tokens file %s", path);
        rv = pw_auth_parse(a, buf, from, errbuf, errlen);
    }
    /* The buffer held tokens: wipe it before it goes back to the allocator. */
    volatile char *v = buf;
    for (size_t i = 0; i < n && i <= MAX; i++)
        v[i] = 0;
    free(buf);
    return rv;
}

enum pw_auth_result pw_auth_check(const struct pw_auth *a, const char *authorization,
                                  const struct pw_auth_token **who)
{
    *who = NULL;
    if (authorization == NULL)
        return PW_AUTH_MISSING;
    const char *s = authorization;
    while (*s == ' ' || *s == '\t')
        s++;
    if (strncasecmp(s, "Bearer ", 7) != 0)
        return PW_AUTH_MISSING;
    s += 7;
    while (*s == ' ')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    if (n < PW_AUTH_TOKEN_MIN || n > PW_AUTH_TOKEN_MAX)
        return PW_AUTH_INVALID;
    unsigned char d[32];
    digest(s, n, d);
    /* Every entry is compared in full, whatever matched, so the time taken says nothing. */
    size_t found = a->n;
    for (size_t i = 0; i < a->n; i++) {
        unsigned diff = 0;
        for (size_t k = 0; k < sizeof(d); k++)
            diff |= (unsigned)(a->t[i].digest[k] ^ d[k]);
        size_t hit = (size_t)((diff - 1u) >> 31 & 1u); /* 1 when diff == 0, without a branch */
        found = hit ? i : found;
    }
    if (found == a->n)
        return PW_AUTH_INVALID;
    *who = &a->t[found];
    return PW_AUTH_OK;
}
