/* proto.c — the agent wire protocol codec: messages to JSON and back (docs/protocol.md).
 *
 * Both directions are driven by one table per struct, so the encoder and the decoder cannot
 * disagree on names, ranges or which fields are required. Encoding writes JSON straight into a
 * pw_buf; decoding parses with cJSON and then walks the tree against the tables. */
#include "pw/proto.h"

#include "pw/error.h"

#include <cjson/cJSON.h>

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 2^53: the largest magnitude a JSON number (an IEEE double) carries exactly. Wider integers
 * travel as hex strings. */
#define JSON_INT_MAX 9007199254740992LL

#define PW_STR_(x) #x
#define PW_XSTR(x) PW_STR_(x)

/* ---- enum strings ---- */

static const char *const avm_state_names[] = {
#define PW_AVM_NAME(n, s) s,
    PW_AVM_STATE_MAP(PW_AVM_NAME)
#undef PW_AVM_NAME
};

static const char *const cmd_type_names[] = {
#define PW_CMD_NAME(n, s) s,
    PW_CMD_TYPE_MAP(PW_CMD_NAME)
#undef PW_CMD_NAME
};

static const char *const msg_type_names[] = {
#define PW_MSG_NAME(n, s) s,
    PW_MSG_TYPE_MAP(PW_MSG_NAME)
#undef PW_MSG_NAME
};

static int name_lookup(const char *const *names, int n, const char *s)
{
    for (int i = 0; i < n; i++)
        if (strcmp(names[i], s) == 0)
            return i;
    return -1;
}

const char *pw_avm_state_str(enum pw_avm_state s)
{
    return (unsigned)s < PW_AVM__COUNT ? avm_state_names[s] : "unknown";
}

int pw_avm_state_parse(const char *s)
{
    return s != NULL ? name_lookup(avm_state_names, PW_AVM__COUNT, s) : -1;
}

const char *pw_cmd_type_str(enum pw_cmd_type t)
{
    return (unsigned)t < PW_CMD__COUNT ? cmd_type_names[t] : "unknown";
}

const char *pw_msg_type_str(enum pw_msg_type t)
{
    return (unsigned)t < PW_MSG__COUNT ? msg_type_names[t] : "unknown";
}

/* ---- field tables ---- */

enum fkind {
    K_HEX,    /* uint64_t as a string of 1..16 lower-case hex digits */
    K_I32,    /* int32_t as a JSON integer in [min, max] */
    K_U32,    /* uint32_t, likewise */
    K_I64,    /* int64_t, likewise (|v| <= 2^53) */
    K_U64,    /* uint64_t, likewise (v <= 2^53) */
    K_DBL,    /* double, finite and >= min */
    K_BOOL,   /* int as true/false */
    K_STR,    /* char[size], any text */
    K_NAME,   /* char[size] holding a pw_name_valid() name (or empty when optional) */
    K_STATE,  /* enum pw_avm_state as its string */
    K_CMD,    /* enum pw_cmd_type as its string */
    K_LABELS, /* struct pw_label * with a size_t count, as an object {key: value} */
    K_ARRAY,  /* array of structs described by elem, with a size_t count */
    K_NAMES,  /* char (*)[size] of pw_name_valid() names with a size_t count, as strings */
};

#define F_REQ 1u      /* always sent; decoding fails without it */
#define F_PRESENCE 2u /* array sent iff the int at flag_off is set; decoding sets it */

struct elem;

struct field {
    const char *key;
    enum fkind kind;
    unsigned flags;
    size_t off;
    size_t size;         /* K_STR, K_NAME, K_NAMES: buffer size (of one name for K_NAMES) */
    int64_t min, max;    /* numbers: value range; K_LABELS, K_ARRAY, K_NAMES: count range */
    size_t count_off;    /* K_LABELS, K_ARRAY, K_NAMES */
    size_t flag_off;     /* F_PRESENCE */
    const struct elem *elem;
};

/* check returns NULL when the decoded (or to be encoded) struct is consistent, else why not. */
struct elem {
    const struct field *fields;
    size_t nfields;
    size_t size;
    const char *(*check)(const void *obj);
};

#define MEMBER_SIZE(st, m) sizeof(((struct st *)0)->m)
#define F_HEX(st, m, fl) {.key = #m, .kind = K_HEX, .flags = (fl), .off = offsetof(struct st, m)}
#define F_NUM(k, st, m, fl, lo, hi) \
    {.key = #m, .kind = (k), .flags = (fl), .off = offsetof(struct st, m), .min = (lo), .max = (hi)}
#define F_TXT(k, st, m, fl) \
    {.key = #m, .kind = (k), .flags = (fl), .off = offsetof(struct st, m), .size = MEMBER_SIZE(st, m)}
#define F_ENUM(k, st, m) {.key = #m, .kind = (k), .flags = F_REQ, .off = offsetof(struct st, m)}
#define F_ARR(st, m, fl, n, lo, hi, el)                                                             \
    {.key = #m, .kind = K_ARRAY, .flags = (fl), .off = offsetof(struct st, m), .min = (lo),         \
     .max = (hi), .count_off = offsetof(struct st, n), .elem = (el)}
#define F_NAMES(st, m, fl, n, hi, flag)                                                          \
    {.key = #m, .kind = K_NAMES, .flags = (fl), .off = offsetof(struct st, m),                    \
     .size = MEMBER_SIZE(st, m[0]), .min = 0, .max = (hi), .count_off = offsetof(struct st, n),   \
     .flag_off = (flag)}
#define ELEM(st, t, chk) {.fields = (t), .nfields = PW_ARRAY_LEN(t), .size = sizeof(struct st), .check = (chk)}

static const struct field numa_fields[] = {
    F_NUM(K_I32, pw_numa_node, id, F_REQ, 0, INT32_MAX),
    F_TXT(K_STR, pw_numa_node, cpulist, 0),
    F_NUM(K_I32, pw_numa_node, ncpus, 0, 0, INT32_MAX),
    F_NUM(K_U64, pw_numa_node, mem_total_mb, 0, 0, JSON_INT_MAX),
    F_NUM(K_U64, pw_numa_node, mem_free_mb, 0, 0, JSON_INT_MAX),
    F_NUM(K_I32, pw_numa_node, vcpu_total, 0, 0, INT32_MAX),
    F_NUM(K_I32, pw_numa_node, vcpu_free, 0, 0, INT32_MAX),
};
static const struct elem numa_elem = ELEM(pw_numa_node, numa_fields, NULL);

static const struct field vm_fields[] = {
    F_HEX(pw_vm_info, vm_id, F_REQ),
    F_TXT(K_NAME, pw_vm_info, function, F_REQ),
    F_ENUM(K_STATE, pw_vm_info, state),
    F_NUM(K_I32, pw_vm_info, numa_node, 0, -1, INT32_MAX),
    F_NUM(K_U32, pw_vm_info, memory_mb, 0, 0, UINT32_MAX),
    F_NUM(K_U32, pw_vm_info, vcpus, 0, 0, UINT32_MAX),
    F_HEX(pw_vm_info, lease_id, 0),
    F_NUM(K_I64, pw_vm_info, lease_left_ms, 0, -JSON_INT_MAX, JSON_INT_MAX),
    F_TXT(K_STR, pw_vm_info, address, 0),
};
static const struct elem vm_elem = ELEM(pw_vm_info, vm_fields, NULL);

static const struct field event_fields[] = {
    F_HEX(pw_agent_event, seq, F_REQ),
    F_HEX(pw_agent_event, vm_id, F_REQ),
    F_ENUM(K_STATE, pw_agent_event, state),
    F_TXT(K_NAME, pw_agent_event, function, 0),
    F_NUM(K_I32, pw_agent_event, numa_node, 0, -1, INT32_MAX),
    F_NUM(K_I32, pw_agent_event, restore_ms, 0, 0, INT32_MAX),
    F_TXT(K_STR, pw_agent_event, address, 0),
    F_TXT(K_STR, pw_agent_event, error, 0),
};
static const struct elem event_elem = ELEM(pw_agent_event, event_fields, NULL);

static const char *cmd_check(const void *obj)
{
    const struct pw_cmd *c = obj;
    if ((c->type == PW_CMD_PREWARM || c->type == PW_CMD_SNAPSHOT) && c->function[0] == '\0')
        return "prewarm and snapshot commands need a function";
    return NULL;
}

static const struct field cmd_fields[] = {
    F_HEX(pw_cmd, id, F_REQ),
    F_ENUM(K_CMD, pw_cmd, type),
    F_HEX(pw_cmd, vm_id, F_REQ),
    F_TXT(K_NAME, pw_cmd, function, 0),
    F_TXT(K_STR, pw_cmd, image, 0),
    F_NUM(K_U32, pw_cmd, memory_mb, 0, 0, UINT32_MAX),
    F_NUM(K_U32, pw_cmd, vcpus, 0, 0, UINT32_MAX),
    F_NUM(K_I32, pw_cmd, numa_node, 0, -1, INT32_MAX),
    F_HEX(pw_cmd, lease_id, 0),
    F_NUM(K_I64, pw_cmd, lease_ttl_ms, 0, 0, JSON_INT_MAX),
};
static const struct elem cmd_elem = ELEM(pw_cmd, cmd_fields, cmd_check);

static const struct field hello_fields[] = {
    F_TXT(K_NAME, pw_msg_hello, agent_id, F_REQ),
    F_TXT(K_NAME, pw_msg_hello, boot_id, F_REQ),
    F_TXT(K_STR, pw_msg_hello, version, 0),
    F_TXT(K_STR, pw_msg_hello, driver, 0),
    F_HEX(pw_msg_hello, epoch, 0),
    F_HEX(pw_msg_hello, cmd_ack, 0),
    F_HEX(pw_msg_hello, event_seq, 0),
    {.key = "labels", .kind = K_LABELS, .off = offsetof(struct pw_msg_hello, labels), .min = 0,
     .max = PW_PROTO_MAX_LABELS, .count_off = offsetof(struct pw_msg_hello, nlabels)},
    F_ARR(pw_msg_hello, numa, F_REQ, nnuma, 1, PW_PROTO_MAX_NUMA, &numa_elem),
    F_ARR(pw_msg_hello, vms, 0, nvms, 0, PW_PROTO_MAX_VMS, &vm_elem),
    F_NAMES(pw_msg_hello, snapshots, 0, nsnapshots, PW_PROTO_MAX_SNAPSHOTS, 0),
    F_NUM(K_BOOL, pw_msg_hello, draining, 0, 0, 0),
    F_TXT(K_STR, pw_msg_hello, auth_cert, 0),
    F_TXT(K_STR, pw_msg_hello, auth_sig, 0),
    F_NUM(K_I64, pw_msg_hello, auth_ts_ms, 0, 0, JSON_INT_MAX),
};

static const struct field report_fields[] = {
    F_TXT(K_NAME, pw_msg_report, agent_id, F_REQ),
    F_TXT(K_NAME, pw_msg_report, boot_id, F_REQ),
    F_HEX(pw_msg_report, seq, F_REQ),
    F_HEX(pw_msg_report, epoch, 0),
    F_HEX(pw_msg_report, cmd_ack, 0),
    F_NUM(K_DBL, pw_msg_report, load, 0, 0, 0),
    F_ARR(pw_msg_report, numa, 0, nnuma, 0, PW_PROTO_MAX_NUMA, &numa_elem),
    F_ARR(pw_msg_report, events, 0, nevents, 0, PW_PROTO_MAX_EVENTS, &event_elem),
    {.key = "vms", .kind = K_ARRAY, .flags = F_PRESENCE, .off = offsetof(struct pw_msg_report, vms),
     .min = 0, .max = PW_PROTO_MAX_VMS, .count_off = offsetof(struct pw_msg_report, nvms),
     .flag_off = offsetof(struct pw_msg_report, has_inventory), .elem = &vm_elem},
    /* Like vms: present (possibly empty) exactly when the report carries the list. */
    F_NAMES(pw_msg_report, snapshots, F_PRESENCE, nsnapshots, PW_PROTO_MAX_SNAPSHOTS,
            offsetof(struct pw_msg_report, has_snapshots)),
    F_NUM(K_BOOL, pw_msg_report, draining, 0, 0, 0),
};

static const struct field reply_fields[] = {
    F_HEX(pw_msg_reply, epoch, F_REQ),
    F_HEX(pw_msg_reply, event_ack, F_REQ),
    F_NUM(K_I32, pw_msg_reply, heartbeat_ms, F_REQ, 0, INT32_MAX),
    F_NUM(K_BOOL, pw_msg_reply, want_inventory, 0, 0, 0),
    F_ARR(pw_msg_reply, cmds, 0, ncmds, 0, PW_PROTO_MAX_CMDS, &cmd_elem),
};

static const struct field error_fields[] = {
    F_TXT(K_NAME, pw_msg_error, code, F_REQ),
    F_TXT(K_STR, pw_msg_error, message, 0),
};

/* Indexed by enum pw_msg_type; the struct is the union member of struct pw_msg. */
static const struct elem msg_elems[PW_MSG__COUNT] = {
    [PW_MSG_HELLO] = ELEM(pw_msg_hello, hello_fields, NULL),
    [PW_MSG_REPORT] = ELEM(pw_msg_report, report_fields, NULL),
    [PW_MSG_REPLY] = ELEM(pw_msg_reply, reply_fields, NULL),
    [PW_MSG_ERROR] = ELEM(pw_msg_error, error_fields, NULL),
};

/* ---- init / fini ---- */

void pw_msg_init(struct pw_msg *m, enum pw_msg_type type)
{
    memset(m, 0, sizeof(*m));
    m->type = type;
}

static void free_arrays(const struct elem *el, void *base)
{
    for (size_t i = 0; i < el->nfields; i++) {
        const struct field *f = &el->fields[i];
        if (f->kind != K_ARRAY && f->kind != K_LABELS && f->kind != K_NAMES)
            continue;
        void **p = (void **)((char *)base + f->off);
        free(*p);
        *p = NULL;
        *(size_t *)((char *)base + f->count_off) = 0;
    }
}

void pw_msg_fini(struct pw_msg *m)
{
    enum pw_msg_type type = m->type;
    if ((unsigned)type < PW_MSG__COUNT)
        free_arrays(&msg_elems[type], &m->u);
    else
        type = PW_MSG_HELLO;
    pw_msg_init(m, type);
}

/* ---- encoding ---- */

/* The encoder keeps the first error and turns every later step into a no-op, so the emit
 * code reads straight through; the caller rolls the buffer back once at the end. */
struct enc {
    struct pw_buf *b;
    int rv;
    bool first; /* no comma before the next key */
};

static void put(struct enc *e, const char *s, size_t n)
{
    if (e->rv == PW_OK && n > 0)
        e->rv = pw_buf_add(e->b, s, n);
}

static void enc_fail(struct enc *e, int rv)
{
    if (e->rv == PW_OK)
        e->rv = rv;
}

static void put_key(struct enc *e, const char *key)
{
    char tmp[64];
    size_t n = 0, klen = strlen(key);
    if (!e->first)
        tmp[n++] = ',';
    e->first = false;
    tmp[n++] = '"';
    memcpy(tmp + n, key, klen); /* keys are our own short literals */
    n += klen;
    tmp[n++] = '"';
    tmp[n++] = ':';
    put(e, tmp, n);
}

static void put_str(struct enc *e, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t run = 0;
    put(e, "\"", 1);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        put(e, s + run, i - run);
        run = i + 1;
        char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
        switch (c) {
        case '"': put(e, "\\\"", 2); break;
        case '\\': put(e, "\\\\", 2); break;
        case '\n': put(e, "\\n", 2); break;
        case '\r': put(e, "\\r", 2); break;
        case '\t': put(e, "\\t", 2); break;
        default: put(e, esc, sizeof(esc)); break;
        }
    }
    put(e, s + run, len - run);
    put(e, "\"", 1);
}

static void put_hex(struct enc *e, uint64_t v)
{
    static const char hex[] = "0123456789abcdef";
    char tmp[18];
    tmp[0] = '"';
    for (int i = 0; i < 16; i++)
        tmp[1 + i] = hex[(v >> (60 - 4 * i)) & 15];
    tmp[17] = '"';
    put(e, tmp, sizeof(tmp));
}

static void put_int(struct enc *e, int64_t v)
{
    char tmp[24];
    size_t n = sizeof(tmp);
    /* The magnitude as unsigned, so INT64_MIN cannot overflow (ranges exclude it anyway). */
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[--n] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (v < 0)
        tmp[--n] = '-';
    put(e, tmp + n, sizeof(tmp) - n);
}

/* text_len returns the length of a fixed buffer's string, or -1 when it is not terminated. */
static long text_len(const char *p, size_t size)
{
    size_t n = strnlen(p, size);
    return n < size ? (long)n : -1;
}

static void enc_object(struct enc *e, const struct elem *el, const void *base);

static void enc_array(struct enc *e, const struct field *f, const void *base)
{
    size_t n = *(const size_t *)((const char *)base + f->count_off);
    const char *items = *(const void *const *)((const char *)base + f->off);
    bool emit = n > 0 || (f->flags & F_REQ);
    if (f->flags & F_PRESENCE)
        emit = *(const int *)((const char *)base + f->flag_off) != 0;
    if (!emit)
        return;
    if (n > (size_t)f->max)
        enc_fail(e, PW_ERR_TOOBIG);
    if (n < (size_t)f->min || (n > 0 && items == NULL))
        enc_fail(e, PW_ERR_INVAL);
    put_key(e, f->key);
    put(e, "[", 1);
    for (size_t i = 0; i < n && e->rv == PW_OK; i++) {
        if (i > 0)
            put(e, ",", 1);
        enc_object(e, f->elem, items + i * f->elem->size);
    }
    put(e, "]", 1);
}

static void enc_labels(struct enc *e, const struct field *f, const void *base)
{
    size_t n = *(const size_t *)((const char *)base + f->count_off);
    const struct pw_label *l = *(const void *const *)((const char *)base + f->off);
    if (n == 0)
        return;
    if (n > (size_t)f->max)
        enc_fail(e, PW_ERR_TOOBIG);
    if (l == NULL)
        enc_fail(e, PW_ERR_INVAL);
    put_key(e, f->key);
    put(e, "{", 1);
    for (size_t i = 0; i < n && e->rv == PW_OK; i++) {
        long vlen = text_len(l[i].value, sizeof(l[i].value));
        if (text_len(l[i].key, sizeof(l[i].key)) < 0 || !pw_name_valid(l[i].key) || vlen < 0) {
            enc_fail(e, PW_ERR_INVAL);
            break;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(l[i].key, l[j].key) == 0)
                enc_fail(e, PW_ERR_INVAL);
        if (i > 0)
            put(e, ",", 1);
        put_str(e, l[i].key, strlen(l[i].key));
        put(e, ":", 1);
        put_str(e, l[i].value, (size_t)vlen);
    }
    put(e, "}", 1);
}

static void enc_names(struct enc *e, const struct field *f, const void *base)
{
    size_t n = *(const size_t *)((const char *)base + f->count_off);
    const char *names = *(const void *const *)((const char *)base + f->off);
    bool emit = n > 0;
    if (f->flags & F_PRESENCE)
        emit = *(const int *)((const char *)base + f->flag_off) != 0;
    if (!emit)
        return;
    if (n > (size_t)f->max)
        enc_fail(e, PW_ERR_TOOBIG);
    if (n > 0 && names == NULL)
        enc_fail(e, PW_ERR_INVAL);
    put_key(e, f->key);
    put(e, "[", 1);
    for (size_t i = 0; i < n && e->rv == PW_OK; i++) {
        const char *name = names + i * f->size;
        long len = text_len(name, f->size);
        if (len < 0 || !pw_name_valid(name)) {
            enc_fail(e, PW_ERR_INVAL);
            break;
        }
        if (i > 0)
            put(e, ",", 1);
        put_str(e, name, (size_t)len);
    }
    put(e, "]", 1);
}

static void enc_number(struct enc *e, const struct field *f, const void *p)
{
    int64_t v;
    switch (f->kind) {
    case K_I32: v = *(const int32_t *)p; break;
    case K_U32: v = *(const uint32_t *)p; break;
    case K_I64: v = *(const int64_t *)p; break;
    default: {
        uint64_t u = *(const uint64_t *)p;
        v = u > (uint64_t)f->max ? f->max + 1 : (int64_t)u;
        break;
    }
    }
    if (v < f->min || v > f->max) {
        enc_fail(e, PW_ERR_INVAL);
        return;
    }
    if (v == 0 && !(f->flags & F_REQ))
        return;
    put_key(e, f->key);
    put_int(e, v);
}

static void enc_field(struct enc *e, const struct field *f, const void *base)
{
    const char *p = (const char *)base + f->off;
    bool req = (f->flags & F_REQ) != 0;
    switch (f->kind) {
    case K_HEX: {
        uint64_t v = *(const uint64_t *)p;
        if (v != 0 || req) {
            put_key(e, f->key);
            put_hex(e, v);
        }
        break;
    }
    case K_I32:
    case K_U32:
    case K_I64:
    case K_U64: enc_number(e, f, p); break;
    case K_DBL: {
        double v = *(const double *)p;
        char tmp[40];
        if (!isfinite(v) || v < (double)f->min) {
            enc_fail(e, PW_ERR_INVAL);
        } else if (v != 0 || req) {
            int n = snprintf(tmp, sizeof(tmp), "%.17g", v);
            put_key(e, f->key);
            put(e, tmp, (size_t)n);
        }
        break;
    }
    case K_BOOL:
        if (*(const int *)p != 0 || req) {
            put_key(e, f->key);
            if (*(const int *)p != 0)
                put(e, "true", 4);
            else
                put(e, "false", 5);
        }
        break;
    case K_STR:
    case K_NAME: {
        long n = text_len(p, f->size);
        if (n < 0 || (f->kind == K_NAME && (n > 0 || req) && !pw_name_valid(p)))
            enc_fail(e, PW_ERR_INVAL);
        else if (n > 0 || req) {
            put_key(e, f->key);
            put_str(e, p, (size_t)n);
        }
        break;
    }
    case K_STATE:
    case K_CMD: {
        int v = *(const int *)p;
        int count = f->kind == K_STATE ? PW_AVM__COUNT : PW_CMD__COUNT;
        const char *const *names = f->kind == K_STATE ? avm_state_names : cmd_type_names;
        if ((unsigned)v >= (unsigned)count) {
            enc_fail(e, PW_ERR_INVAL);
            break;
        }
        put_key(e, f->key);
        put_str(e, names[v], strlen(names[v]));
        break;
    }
    case K_LABELS: enc_labels(e, f, base); break;
    case K_ARRAY: enc_array(e, f, base); break;
    case K_NAMES: enc_names(e, f, base); break;
    }
}

static void enc_object(struct enc *e, const struct elem *el, const void *base)
{
    if (el->check != NULL && el->check(base) != NULL)
        enc_fail(e, PW_ERR_INVAL);
    put(e, "{", 1);
    e->first = true;
    for (size_t i = 0; i < el->nfields && e->rv == PW_OK; i++)
        enc_field(e, &el->fields[i], base);
    put(e, "}", 1);
    e->first = false;
}

int pw_proto_encode(const struct pw_msg *m, struct pw_buf *out)
{
    if ((unsigned)m->type >= PW_MSG__COUNT)
        return PW_ERR_INVAL;
    const struct elem *el = &msg_elems[m->type];
    const char *type = msg_type_names[m->type];
    struct enc e = {.b = out, .rv = PW_OK, .first = false};
    size_t save = out->len;

    static const char head[] = "{\"v\":" PW_XSTR(PW_PROTO_VERSION) ",\"type\":";
    put(&e, head, sizeof(head) - 1);
    put_str(&e, type, strlen(type));
    if (el->check != NULL && el->check(&m->u) != NULL)
        enc_fail(&e, PW_ERR_INVAL);
    for (size_t i = 0; i < el->nfields && e.rv == PW_OK; i++)
        enc_field(&e, &el->fields[i], &m->u);
    put(&e, "}", 1);

    if (e.rv != PW_OK) {
        out->len = save;
        if (out->data != NULL)
            out->data[save] = '\0';
    }
    return e.rv;
}

/* ---- decoding ---- */

struct dec {
    char *err;
    size_t errlen;
};

/* dec_fail writes "<where>: <reason>" to the error buffer and returns rv. */
static int dec_fail(struct dec *d, int rv, const char *where, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int dec_fail(struct dec *d, int rv, const char *where, const char *fmt, ...)
{
    if (d->err == NULL || d->errlen == 0)
        return rv;
    int n = snprintf(d->err, d->errlen, "%s: ", where);
    if (n >= 0 && (size_t)n < d->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(d->err + n, d->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    /* Peer text may be quoted in the reason; keep it to one printable line. */
    for (char *p = d->err; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    return rv;
}

/* quote copies at most 32 bytes of peer text for an error message. */
static const char *quote(char *tmp, size_t size, const char *s)
{
    size_t n = strlen(s);
    if (n + 1 > size)
        snprintf(tmp, size, "%.*s...", (int)(size - 4), s);
    else
        memcpy(tmp, s, n + 1);
    return tmp;
}

static const char *json_kind(const cJSON *v)
{
    if (cJSON_IsString(v))
        return "a string";
    if (cJSON_IsNumber(v))
        return "a number";
    if (cJSON_IsBool(v))
        return "a boolean";
    if (cJSON_IsNull(v))
        return "null";
    if (cJSON_IsArray(v))
        return "an array";
    return "an object";
}

static bool parse_hex(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    size_t n = 0;
    for (; s[n] != '\0'; n++) {
        char c = s[n];
        unsigned digit;
        if (n >= 16)
            return false;
        if (c >= '0' && c <= '9')
            digit = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            digit = (unsigned)(c - 'a' + 10);
        else
            return false;
        v = v << 4 | digit;
    }
    *out = v;
    return n > 0;
}

static int dec_object(struct dec *d, const struct elem *el, void *base, const cJSON *obj,
                      const char *where);

static int dec_number(struct dec *d, const struct field *f, void *p, const cJSON *v,
                      const char *where)
{
    if (!cJSON_IsNumber(v))
        return dec_fail(d, PW_ERR_PROTO, where, "%s must be a number, not %s", f->key, json_kind(v));
    double x = v->valuedouble;
    if (f->kind == K_DBL) {
        if (!isfinite(x) || x < (double)f->min)
            return dec_fail(d, PW_ERR_PROTO, where, "%s out of range", f->key);
        *(double *)p = x == 0 ? 0 : x; /* no -0 */
        return PW_OK;
    }
    if (!(x >= (double)f->min && x <= (double)f->max))
        return dec_fail(d, PW_ERR_PROTO, where, "%s %g out of range [%lld, %lld]", f->key, x,
                        (long long)f->min, (long long)f->max);
    int64_t i = (int64_t)x;
    if ((double)i != x)
        return dec_fail(d, PW_ERR_PROTO, where, "%s %g is not an integer", f->key, x);
    switch (f->kind) {
    case K_I32: *(int32_t *)p = (int32_t)i; break;
    case K_U32: *(uint32_t *)p = (uint32_t)i; break;
    case K_I64: *(int64_t *)p = i; break;
    default: *(uint64_t *)p = (uint64_t)i; break;
    }
    return PW_OK;
}

static int dec_labels(struct dec *d, const struct field *f, void *base, const cJSON *v,
                      const char *where)
{
    if (!cJSON_IsObject(v))
        return dec_fail(d, PW_ERR_PROTO, where, "%s must be an object, not %s", f->key, json_kind(v));
    size_t n = 0;
    for (const cJSON *c = v->child; c != NULL; c = c->next)
        if (++n > (size_t)f->max)
            return dec_fail(d, PW_ERR_TOOBIG, where, "more than %lld %s", (long long)f->max, f->key);
    if (n == 0)
        return PW_OK;
    struct pw_label *l = pw_xcalloc(n, sizeof(*l));
    *(struct pw_label **)((char *)base + f->off) = l;
    *(size_t *)((char *)base + f->count_off) = n;
    size_t i = 0;
    char tmp[40];
    for (const cJSON *c = v->child; c != NULL; c = c->next, i++) {
        const char *key = c->string != NULL ? c->string : "";
        if (!pw_name_valid(key))
            return dec_fail(d, PW_ERR_PROTO, where, "%s key \"%s\" is not a valid name", f->key,
                            quote(tmp, sizeof(tmp), key));
        for (size_t j = 0; j < i; j++)
            if (strcmp(l[j].key, key) == 0)
                return dec_fail(d, PW_ERR_PROTO, where, "duplicate %s key \"%s\"", f->key, key);
        if (!cJSON_IsString(c))
            return dec_fail(d, PW_ERR_PROTO, where, "%s.%s must be a string, not %s", f->key, key,
                            json_kind(c));
        if (strlen(c->valuestring) >= sizeof(l[i].value))
            return dec_fail(d, PW_ERR_PROTO, where, "%s.%s longer than %zu bytes", f->key, key,
                            sizeof(l[i].value) - 1);
        pw_strlcpy(l[i].key, key, sizeof(l[i].key));
        pw_strlcpy(l[i].value, c->valuestring, sizeof(l[i].value));
    }
    return PW_OK;
}

static int dec_array(struct dec *d, const struct field *f, void *base, const cJSON *v,
                     const char *where)
{
    if (!cJSON_IsArray(v))
        return dec_fail(d, PW_ERR_PROTO, where, "%s must be an array, not %s", f->key, json_kind(v));
    size_t n = 0;
    for (const cJSON *c = v->child; c != NULL; c = c->next)
        if (++n > (size_t)f->max)
            return dec_fail(d, PW_ERR_TOOBIG, where, "more than %lld %s", (long long)f->max, f->key);
    if (n < (size_t)f->min)
        return dec_fail(d, PW_ERR_PROTO, where, "%s needs at least %lld entries", f->key,
                        (long long)f->min);
    if (f->flags & F_PRESENCE)
        *(int *)((char *)base + f->flag_off) = 1;
    if (n == 0)
        return PW_OK;
    char *items = pw_xcalloc(n, f->elem->size);
    *(void **)((char *)base + f->off) = items;
    *(size_t *)((char *)base + f->count_off) = n;
    size_t i = 0;
    char sub[96];
    for (const cJSON *c = v->child; c != NULL; c = c->next, i++) {
        snprintf(sub, sizeof(sub), "%s.%s[%zu]", where, f->key, i);
        if (!cJSON_IsObject(c))
            return dec_fail(d, PW_ERR_PROTO, sub, "must be an object, not %s", json_kind(c));
        int rv = dec_object(d, f->elem, items + i * f->elem->size, c, sub);
        if (rv != PW_OK)
            return rv;
    }
    return PW_OK;
}

static int dec_names(struct dec *d, const struct field *f, void *base, const cJSON *v,
                     const char *where)
{
    if (!cJSON_IsArray(v))
        return dec_fail(d, PW_ERR_PROTO, where, "%s must be an array, not %s", f->key, json_kind(v));
    size_t n = 0;
    for (const cJSON *c = v->child; c != NULL; c = c->next)
        if (++n > (size_t)f->max)
            return dec_fail(d, PW_ERR_TOOBIG, where, "more than %lld %s", (long long)f->max, f->key);
    if (f->flags & F_PRESENCE)
        *(int *)((char *)base + f->flag_off) = 1;
    if (n == 0)
        return PW_OK;
    char *names = pw_xcalloc(n, f->size);
    *(void **)((char *)base + f->off) = names;
    *(size_t *)((char *)base + f->count_off) = n;
    size_t i = 0;
    char tmp[40];
    for (const cJSON *c = v->child; c != NULL; c = c->next, i++) {
        if (!cJSON_IsString(c))
            return dec_fail(d, PW_ERR_PROTO, where, "%s[%zu] must be a string, not %s", f->key, i,
                            json_kind(c));
        size_t len = strlen(c->valuestring);
        if (len >= f->size)
            return dec_fail(d, PW_ERR_PROTO, where, "%s[%zu] longer than %zu bytes", f->key, i,
                            f->size - 1);
        if (!pw_name_valid(c->valuestring))
            return dec_fail(d, PW_ERR_PROTO, where, "%s[%zu] \"%s\" is not a valid name", f->key, i,
                            quote(tmp, sizeof(tmp), c->valuestring));
        memcpy(names + i * f->size, c->valuestring, len + 1);
    }
    return PW_OK;
}

static int dec_field(struct dec *d, const struct field *f, void *base, const cJSON *v,
                     const char *where)
{
    char *p = (char *)base + f->off;
    char tmp[40];
    switch (f->kind) {
    case K_HEX:
        if (!cJSON_IsString(v) || !parse_hex(v->valuestring, (uint64_t *)p))
            return dec_fail(d, PW_ERR_PROTO, where,
                            "%s must be a string of 1-16 lower-case hex digits", f->key);
        return PW_OK;
    case K_I32:
    case K_U32:
    case K_I64:
    case K_U64:
    case K_DBL: return dec_number(d, f, p, v, where);
    case K_BOOL:
        if (!cJSON_IsBool(v))
            return dec_fail(d, PW_ERR_PROTO, where, "%s must be a boolean, not %s", f->key,
                            json_kind(v));
        *(int *)p = cJSON_IsTrue(v) ? 1 : 0;
        return PW_OK;
    case K_STR:
    case K_NAME: {
        if (!cJSON_IsString(v))
            return dec_fail(d, PW_ERR_PROTO, where, "%s must be a string, not %s", f->key,
                            json_kind(v));
        size_t n = strlen(v->valuestring);
        if (n >= f->size)
            return dec_fail(d, PW_ERR_PROTO, where, "%s longer than %zu bytes", f->key, f->size - 1);
        if (f->kind == K_NAME && (n > 0 || (f->flags & F_REQ)) && !pw_name_valid(v->valuestring))
            return dec_fail(d, PW_ERR_PROTO, where, "%s \"%s\" is not a valid name", f->key,
                            quote(tmp, sizeof(tmp), v->valuestring));
        memcpy(p, v->valuestring, n + 1);
        return PW_OK;
    }
    case K_STATE:
    case K_CMD: {
        int x = -1;
        if (cJSON_IsString(v))
            x = f->kind == K_STATE ? pw_avm_state_parse(v->valuestring)
                                   : name_lookup(cmd_type_names, PW_CMD__COUNT, v->valuestring);
        if (x < 0)
            return dec_fail(d, PW_ERR_PROTO, where, "%s: unknown %s \"%s\"", f->key,
                            f->kind == K_STATE ? "state" : "command type",
                            cJSON_IsString(v) ? quote(tmp, sizeof(tmp), v->valuestring) : "");
        *(int *)p = x;
        return PW_OK;
    }
    case K_LABELS: return dec_labels(d, f, base, v, where);
    case K_ARRAY: return dec_array(d, f, base, v, where);
    case K_NAMES: return dec_names(d, f, base, v, where);
    }
    return PW_ERR_INTERNAL;
}

/* dec_object decodes obj into base by the table: unknown keys are ignored (so a peer may add
 * optional fields within a version), a known key given twice is an error. */
static int dec_object(struct dec *d, const struct elem *el, void *base, const cJSON *obj,
                      const char *where)
{
    uint64_t seen = 0; /* tables have fewer than 64 fields */
    for (const cJSON *c = obj->child; c != NULL; c = c->next) {
        if (c->string == NULL)
            continue;
        size_t i = 0;
        while (i < el->nfields && strcmp(el->fields[i].key, c->string) != 0)
            i++;
        if (i == el->nfields)
            continue;
        if (seen & (UINT64_C(1) << i))
            return dec_fail(d, PW_ERR_PROTO, where, "duplicate field %s", c->string);
        seen |= UINT64_C(1) << i;
        int rv = dec_field(d, &el->fields[i], base, c, where);
        if (rv != PW_OK)
            return rv;
    }
    for (size_t i = 0; i < el->nfields; i++)
        if ((el->fields[i].flags & F_REQ) && !(seen & (UINT64_C(1) << i)))
            return dec_fail(d, PW_ERR_PROTO, where, "missing field %s", el->fields[i].key);
    const char *why = el->check != NULL ? el->check(base) : NULL;
    if (why != NULL)
        return dec_fail(d, PW_ERR_PROTO, where, "%s", why);
    return PW_OK;
}

/* unique_item finds key in obj; -1 when it is there more than once. */
static int unique_item(const cJSON *obj, const char *key, const cJSON **out)
{
    *out = NULL;
    for (const cJSON *c = obj->child; c != NULL; c = c->next) {
        if (c->string == NULL || strcmp(c->string, key) != 0)
            continue;
        if (*out != NULL)
            return -1;
        *out = c;
    }
    return 0;
}

static int dec_message(struct dec *d, const cJSON *root, struct pw_msg *m)
{
    const cJSON *v, *t;
    char tmp[40];
    if (!cJSON_IsObject(root))
        return dec_fail(d, PW_ERR_PARSE, "message", "not a JSON object");
    if (unique_item(root, "v", &v) != 0)
        return dec_fail(d, PW_ERR_PROTO, "message", "duplicate field v");
    if (v == NULL)
        return dec_fail(d, PW_ERR_PROTO, "message", "missing protocol version \"v\"");
    if (!cJSON_IsNumber(v) || v->valuedouble != PW_PROTO_VERSION)
        return dec_fail(d, PW_ERR_PROTO, "message",
                        "unsupported protocol version %s (this side speaks %d)",
                        cJSON_IsNumber(v) ? (snprintf(tmp, sizeof(tmp), "%g", v->valuedouble), tmp)
                                          : json_kind(v),
                        PW_PROTO_VERSION);
    if (unique_item(root, "type", &t) != 0)
        return dec_fail(d, PW_ERR_PROTO, "message", "duplicate field type");
    if (t == NULL)
        return dec_fail(d, PW_ERR_PROTO, "message", "missing field type");
    if (!cJSON_IsString(t))
        return dec_fail(d, PW_ERR_PROTO, "message", "type must be a string, not %s", json_kind(t));
    int type = name_lookup(msg_type_names, PW_MSG__COUNT, t->valuestring);
    if (type < 0)
        return dec_fail(d, PW_ERR_PROTO, "message", "unknown message type \"%s\"",
                        quote(tmp, sizeof(tmp), t->valuestring));
    m->type = (enum pw_msg_type)type;
    return dec_object(d, &msg_elems[type], &m->u, root, msg_type_names[type]);
}

int pw_proto_decode(const char *data, size_t len, struct pw_msg *m, char *errbuf, size_t errlen)
{
    struct dec d = {.err = errbuf, .errlen = errlen};
    cJSON *root = NULL;
    char *copy = NULL;
    int rv;

    memset(m, 0, sizeof(*m));
    if (errbuf != NULL && errlen > 0)
        errbuf[0] = '\0';
    if (len > PW_PROTO_MAX_MSG) {
        rv = dec_fail(&d, PW_ERR_TOOBIG, "message", "%zu bytes, more than the limit of %d", len,
                      PW_PROTO_MAX_MSG);
        goto fail;
    }
    if (len == 0 || data == NULL) {
        rv = dec_fail(&d, PW_ERR_PARSE, "message", "empty");
        goto fail;
    }
    /* JSON text holds no raw control bytes but tab, newline and carriage return; cJSON would
     * take the others (NUL included) for whitespace. */
    /* A \u0000 escape would end a C string early (a name "a\u0000b" would read as "a"):
     * refused rather than truncated. */
    int escaped = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)data[i];
        if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') {
            rv = dec_fail(&d, PW_ERR_PARSE, "message", "control byte 0x%02x at byte %zu", c, i);
            goto fail;
        }
        if (escaped) {
            if (c == 'u' && i + 4 < len && memcmp(data + i + 1, "0000", 4) == 0) {
                rv = dec_fail(&d, PW_ERR_PARSE, "message", "\\u0000 at byte %zu: strings may not hold NUL", i - 1);
                goto fail;
            }
            escaped = 0;
        } else if (c == '\\') {
            escaped = 1;
        }
    }
    /* cJSON may peek one byte past the length it is given; a terminated copy makes that safe. */
    copy = pw_xmalloc(len + 1);
    memcpy(copy, data, len);
    copy[len] = '\0';
    const char *end = NULL;
    root = cJSON_ParseWithLengthOpts(copy, len, &end, 0);
    if (root == NULL) {
        rv = dec_fail(&d, PW_ERR_PARSE, "message", "malformed JSON at byte %td",
                      end != NULL ? end - copy : (ptrdiff_t)0);
        goto fail;
    }
    /* cJSON stops after the first value; anything but whitespace after it is an error. */
    for (const char *p = end; p < copy + len; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            rv = dec_fail(&d, PW_ERR_PARSE, "message", "trailing data at byte %td", p - copy);
            goto fail;
        }
    }
    rv = dec_message(&d, root, m);
    if (rv != PW_OK)
        goto fail;
    cJSON_Delete(root);
    free(copy);
    return PW_OK;

fail:
    cJSON_Delete(root);
    free(copy);
    pw_msg_fini(m);
    memset(m, 0, sizeof(*m));
    return rv;
}
