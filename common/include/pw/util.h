/* util.h — allocation, intrusive lists and small helpers shared by every part.
 *
 * Out of memory aborts through pw_xmalloc and friends: Prewarm does not try to limp on
 * without memory, it bounds what it allocates instead. */
#ifndef PW_UTIL_H
#define PW_UTIL_H

#include <stddef.h>
#include <stdint.h>

#define PW_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define pw_container_of(ptr, type, member) \
    ((type *)(void *)((char *)(ptr) - offsetof(type, member)))
#define PW_MIN(a, b) ((a) < (b) ? (a) : (b))
#define PW_MAX(a, b) ((a) > (b) ? (a) : (b))

/* pw_xmalloc/pw_xcalloc/pw_xrealloc/pw_xstrdup never return NULL: they abort with a message.
 * The caller owns the result and frees it with free(). Any thread. */
void *pw_xmalloc(size_t n);
void *pw_xcalloc(size_t nmemb, size_t size);
void *pw_xrealloc(void *p, size_t n);
char *pw_xstrdup(const char *s);
char *pw_xstrndup(const char *s, size_t n);

/* pw_errf formats a one-line reason into errbuf (nothing when errbuf is NULL or errlen 0). */
void pw_errf(char *errbuf, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* pw_strlcpy copies at most size-1 bytes and NUL-terminates; returns strlen(src). */
size_t pw_strlcpy(char *dst, const char *src, size_t size);

/* Intrusive doubly-linked circular list (libuv queue.h style). An empty list's head points to
 * itself; an element not on any list has both pointers NULL after pw_list_remove. */
struct pw_list {
    struct pw_list *prev, *next;
};

static inline void pw_list_init(struct pw_list *h) { h->prev = h->next = h; }
static inline int pw_list_empty(const struct pw_list *h) { return h->next == h; }
static inline int pw_list_linked(const struct pw_list *e) { return e->next != NULL; }
/* Inserts e right after h (at the head). */
static inline void pw_list_push_head(struct pw_list *h, struct pw_list *e)
{
    e->next = h->next;
    e->prev = h;
    h->next->prev = e;
    h->next = e;
}
/* Inserts e right before h (at the tail). */
static inline void pw_list_push_tail(struct pw_list *h, struct pw_list *e)
{
    e->prev = h->prev;
    e->next = h;
    h->prev->next = e;
    h->prev = e;
}
static inline void pw_list_remove(struct pw_list *e)
{
    e->prev->next = e->next;
    e->next->prev = e->prev;
    e->prev = e->next = NULL;
}
static inline struct pw_list *pw_list_head(const struct pw_list *h)
{
    return h->next == h ? NULL : h->next;
}
static inline struct pw_list *pw_list_tail(const struct pw_list *h)
{
    return h->prev == h ? NULL : h->prev;
}
#define pw_list_foreach(pos, head) for ((pos) = (head)->next; (pos) != (head); (pos) = (pos)->next)
#define pw_list_foreach_safe(pos, tmp, head) \
    for ((pos) = (head)->next, (tmp) = (pos)->next; (pos) != (head); (pos) = (tmp), (tmp) = (pos)->next)

/* Intrusive chained hash table keyed by a 64-bit hash plus a caller's equality test. The table
 * never owns its nodes; it grows by doubling (bounded by memory). Not thread-safe. */
struct pw_hnode {
    struct pw_hnode *next;
    uint64_t hash;
};
struct pw_htab {
    struct pw_hnode **buckets;
    size_t nbuckets; /* power of two */
    size_t count;
};
/* pw_htab_eq_fn returns nonzero when node matches key. */
typedef int (*pw_htab_eq_fn)(const struct pw_hnode *node, const void *key);

void pw_htab_init(struct pw_htab *t);
/* pw_htab_fini frees the bucket array only; nodes belong to the caller. */
void pw_htab_fini(struct pw_htab *t);
void pw_htab_insert(struct pw_htab *t, struct pw_hnode *n, uint64_t hash);
struct pw_hnode *pw_htab_find(const struct pw_htab *t, uint64_t hash, const void *key, pw_htab_eq_fn eq);
/* pw_htab_remove unlinks n, which must be in t. */
void pw_htab_remove(struct pw_htab *t, struct pw_hnode *n);
/* Iteration: start with *bucket = 0, *node = NULL; returns NULL at the end. Do not insert while
 * iterating; removing the returned node is allowed. */
struct pw_hnode *pw_htab_next(const struct pw_htab *t, size_t *bucket, struct pw_hnode **node);

/* Hashes. */
uint64_t pw_hash_str(const char *s);
uint64_t pw_hash_u64(uint64_t x);

/* Growable byte buffer with a hard cap (curl dynbuf style). Data is always NUL-terminated. */
struct pw_buf {
    char *data;
    size_t len, cap, max;
};
/* pw_buf_init sets up an empty buffer that never grows beyond max bytes (plus the NUL). */
void pw_buf_init(struct pw_buf *b, size_t max);
void pw_buf_fini(struct pw_buf *b);
void pw_buf_reset(struct pw_buf *b);
/* pw_buf_add/pw_buf_printf return PW_OK, or PW_ERR_TOOBIG leaving the buffer unchanged. */
int pw_buf_add(struct pw_buf *b, const void *p, size_t n);
int pw_buf_adds(struct pw_buf *b, const char *s);
int pw_buf_printf(struct pw_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* pw_buf_add_json_str appends s as a JSON string literal, quotes included. */
int pw_buf_add_json_str(struct pw_buf *b, const char *s);
/* pw_buf_reserve makes room for n more bytes at once (one allocation instead of doublings),
 * as far as the cap allows. Returns PW_OK. */
int pw_buf_reserve(struct pw_buf *b, size_t n);
/* pw_buf_add_u64, pw_buf_add_i64 append v in decimal; pw_buf_add_hex16 appends v as 16
 * lowercase hex digits (as "%016" PRIx64). They are printf's results without its cost, for the
 * hot paths (HTTP responses, acquire answers). Same return values as pw_buf_add. */
int pw_buf_add_u64(struct pw_buf *b, uint64_t v);
int pw_buf_add_i64(struct pw_buf *b, int64_t v);
int pw_buf_add_hex16(struct pw_buf *b, uint64_t v);
/* pw_buf_steal hands the data to the caller (free() it) and leaves b empty. */
char *pw_buf_steal(struct pw_buf *b, size_t *len);

/* Identifiers: names of functions, hosts and labels are 1..63 bytes of [A-Za-z0-9._-] and
 * start with an alphanumeric. pw_name_valid returns nonzero for a valid name. */
#define PW_NAME_MAX 64
int pw_name_valid(const char *s);

/* pw_parse_duration_ms parses "250ms", "10s", "5m", "2h" or a bare number of seconds into
 * milliseconds. Returns PW_OK or PW_ERR_INVAL. */
int pw_parse_duration_ms(const char *s, int64_t *out);

/* Monotonic and wall clocks for the shells (never used by scheduler/core). */
int64_t pw_now_mono_ms(void);
int64_t pw_now_wall_ms(void);

#endif
