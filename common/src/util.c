/* util.c — allocation, hash table, capped buffers, names, durations and clocks. */
#include "pw/util.h"

#include "pw/error.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void oom(size_t n)
{
    fprintf(stderr, "{\"level\":\"error\",\"msg\":\"out of memory allocating %zu bytes\"}\n", n);
    abort();
}

void *pw_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL)
        oom(n);
    return p;
}

void *pw_xcalloc(size_t nmemb, size_t size)
{
    void *p = calloc(nmemb ? nmemb : 1, size ? size : 1);
    if (p == NULL)
        oom(nmemb * size);
    return p;
}

void *pw_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (q == NULL)
        oom(n);
    return q;
}

char *pw_xstrdup(const char *s) { return pw_xstrndup(s, strlen(s)); }

char *pw_xstrndup(const char *s, size_t n)
{
    char *p = pw_xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

void pw_errf(char *errbuf, size_t errlen, const char *fmt, ...)
{
    if (errbuf == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf, errlen, fmt, ap);
    va_end(ap);
}

size_t pw_strlcpy(char *dst, const char *src, size_t size)
{
    size_t len = strlen(src);
    if (size > 0) {
        size_t n = len < size - 1 ? len : size - 1;
        memcpy(dst, src, n);
        dst[n] = '\0';
    }
    return len;
}

/* ---- hash table ---- */

void pw_htab_init(struct pw_htab *t)
{
    t->nbuckets = 16;
    t->count = 0;
    t->buckets = pw_xcalloc(t->nbuckets, sizeof(*t->buckets));
}

void pw_htab_fini(struct pw_htab *t)
{
    free(t->buckets);
    t->buckets = NULL;
    t->nbuckets = t->count = 0;
}

static void htab_grow(struct pw_htab *t)
{
    size_t n = t->nbuckets * 2;
    struct pw_hnode **b = pw_xcalloc(n, sizeof(*b));
    for (size_t i = 0; i < t->nbuckets; i++) {
        struct pw_hnode *e = t->buckets[i];
        while (e != NULL) {
            struct pw_hnode *next = e->next;
            size_t j = e->hash & (n - 1);
            e->next = b[j];
            b[j] = e;
            e = next;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->nbuckets = n;
}

void pw_htab_insert(struct pw_htab *t, struct pw_hnode *n, uint64_t hash)
{
    if (t->count >= t->nbuckets)
        htab_grow(t);
    n->hash = hash;
    size_t i = hash & (t->nbuckets - 1);
    n->next = t->buckets[i];
    t->buckets[i] = n;
    t->count++;
}

struct pw_hnode *pw_htab_find(const struct pw_htab *t, uint64_t hash, const void *key, pw_htab_eq_fn eq)
{
    for (struct pw_hnode *e = t->buckets[hash & (t->nbuckets - 1)]; e != NULL; e = e->next)
        if (e->hash == hash && eq(e, key))
            return e;
    return NULL;
}

void pw_htab_remove(struct pw_htab *t, struct pw_hnode *n)
{
    struct pw_hnode **pp = &t->buckets[n->hash & (t->nbuckets - 1)];
    while (*pp != NULL && *pp != n)
        pp = &(*pp)->next;
    if (*pp == n) {
        *pp = n->next;
        n->next = NULL;
        t->count--;
    }
}

struct pw_hnode *pw_htab_next(const struct pw_htab *t, size_t *bucket, struct pw_hnode **node)
{
    /* *node holds the successor of the last returned node, so removing that node is safe. */
    struct pw_hnode *e = *node;
    while (e == NULL) {
        if (*bucket >= t->nbuckets)
            return NULL;
        e = t->buckets[(*bucket)++];
    }
    *node = e->next;
    return e;
}

uint64_t pw_hash_str(const char *s)
{
    /* FNV-1a, then a finaliser so the low bits (used for buckets) mix well. */
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return pw_hash_u64(h);
}

uint64_t pw_hash_u64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

/* ---- capped buffer ---- */

void pw_buf_init(struct pw_buf *b, size_t max)
{
    b->data = NULL;
    b->len = b->cap = 0;
    b->max = max;
}

void pw_buf_fini(struct pw_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void pw_buf_reset(struct pw_buf *b)
{
    b->len = 0;
    if (b->data != NULL)
        b->data[0] = '\0';
}

static int buf_reserve(struct pw_buf *b, size_t add)
{
    if (add > b->max || b->len > b->max - add)
        return PW_ERR_TOOBIG;
    size_t need = b->len + add + 1;
    if (need > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < need)
            cap *= 2;
        if (cap > b->max + 1)
            cap = b->max + 1;
        b->data = pw_xrealloc(b->data, cap);
        b->cap = cap;
    }
    return PW_OK;
}

int pw_buf_reserve(struct pw_buf *b, size_t n)
{
    if (n > b->max - b->len)
        n = b->max - b->len;
    size_t need = b->len + n + 1;
    if (need > b->cap) {
        b->data = pw_xrealloc(b->data, need);
        if (b->cap == 0)
            b->data[0] = '\0';
        b->cap = need;
    }
    return PW_OK;
}

int pw_buf_add(struct pw_buf *b, const void *p, size_t n)
{
    int rv = buf_reserve(b, n);
    if (rv != PW_OK)
        return rv;
    if (n > 0)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return PW_OK;
}

int pw_buf_adds(struct pw_buf *b, const char *s) { return pw_buf_add(b, s, strlen(s)); }

int pw_buf_printf(struct pw_buf *b, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0)
        return PW_ERR_INVAL;
    if ((size_t)n < sizeof(small))
        return pw_buf_add(b, small, (size_t)n);
    int rv = buf_reserve(b, (size_t)n);
    if (rv != PW_OK)
        return rv;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return PW_OK;
}

int pw_buf_add_json_str(struct pw_buf *b, const char *s)
{
    size_t save = b->len;
    int rv = pw_buf_add(b, "\"", 1);
    const unsigned char *p = (const unsigned char *)s;
    while (rv == PW_OK && *p) {
        /* Runs of characters that need no escape go in with one copy. */
        const unsigned char *run = p;
        while (*p >= 0x20 && *p != '"' && *p != '\\')
            p++;
        if (p > run) {
            rv = pw_buf_add(b, run, (size_t)(p - run));
            continue;
        }
        switch (*p) {
        case '"': rv = pw_buf_add(b, "\\\"", 2); break;
        case '\\': rv = pw_buf_add(b, "\\\\", 2); break;
        case '\n': rv = pw_buf_add(b, "\\n", 2); break;
        case '\r': rv = pw_buf_add(b, "\\r", 2); break;
        case '\t': rv = pw_buf_add(b, "\\t", 2); break;
        default: rv = pw_buf_printf(b, "\\u%04x", *p); break;
        }
        p++;
    }
    if (rv == PW_OK)
        rv = pw_buf_add(b, "\"", 1);
    if (rv != PW_OK) {
        b->len = save;
        if (b->data != NULL)
            b->data[save] = '\0';
    }
    return rv;
}

int pw_buf_add_u64(struct pw_buf *b, uint64_t v)
{
    char tmp[20];
    size_t n = sizeof(tmp);
    do {
        tmp[--n] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    return pw_buf_add(b, tmp + n, sizeof(tmp) - n);
}

int pw_buf_add_i64(struct pw_buf *b, int64_t v)
{
    if (v >= 0)
        return pw_buf_add_u64(b, (uint64_t)v);
    char tmp[21];
    uint64_t u = (uint64_t)0 - (uint64_t)v; /* INT64_MIN too */
    size_t n = sizeof(tmp);
    do {
        tmp[--n] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    tmp[--n] = '-';
    return pw_buf_add(b, tmp + n, sizeof(tmp) - n);
}

int pw_buf_add_hex16(struct pw_buf *b, uint64_t v)
{
    static const char digits[] = "0123456789abcdef";
    char tmp[16];
    for (int i = 15; i >= 0; i--) {
        tmp[i] = digits[v & 0xf];
        v >>= 4;
    }
    return pw_buf_add(b, tmp, sizeof(tmp));
}

char *pw_buf_steal(struct pw_buf *b, size_t *len)
{
    char *p = b->data ? b->data : pw_xstrdup("");
    if (len != NULL)
        *len = b->len;
    b->data = NULL;
    b->len = b->cap = 0;
    return p;
}

/* ---- names and durations ---- */

int pw_name_valid(const char *s)
{
    if (s == NULL || !isalnum((unsigned char)s[0]))
        return 0;
    size_t n = 0;
    for (; s[n]; n++) {
        unsigned char c = (unsigned char)s[n];
        if (!isalnum(c) && c != '.' && c != '_' && c != '-')
            return 0;
        if (n + 1 >= PW_NAME_MAX)
            return 0;
    }
    return 1;
}

int pw_parse_duration_ms(const char *s, int64_t *out)
{
    if (s == NULL || *s == '\0')
        return PW_ERR_INVAL;
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (errno != 0 || end == s || v < 0 || v > 1e12)
        return PW_ERR_INVAL;
    double mult;
    if (strcmp(end, "ms") == 0)
        mult = 1;
    else if (*end == '\0' || strcmp(end, "s") == 0)
        mult = 1000;
    else if (strcmp(end, "m") == 0)
        mult = 60000;
    else if (strcmp(end, "h") == 0)
        mult = 3600000;
    else
        return PW_ERR_INVAL;
    *out = (int64_t)(v * mult + 0.5);
    return PW_OK;
}

int64_t pw_now_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t pw_now_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
