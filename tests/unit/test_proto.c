/* test_proto.c — the agent wire protocol codec: round trips, bounds and hostile input. */
#include "pw/error.h"
#include "pw/proto.h"
#include "pw/util.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define BIG_ID UINT64_C(0xfedcba9876543210) /* above 2^53: would not survive a double */
#define ID_2P53_PLUS1 UINT64_C(9007199254740993)

/* ---- helpers ---- */

static void fill_numa(struct pw_numa_node *n, int i)
{
    n->id = i;
    snprintf(n->cpulist, sizeof(n->cpulist), "%d-%d,%d-%d", i * 8, i * 8 + 3, 64 + i * 8, 64 + i * 8 + 3);
    n->ncpus = 8;
    n->mem_total_mb = UINT64_C(1) << 40;
    n->mem_free_mb = 123456 + (uint64_t)i;
    n->vcpu_total = 16;
    n->vcpu_free = 5 + i;
}

static void fill_vm(struct pw_vm_info *v, int i)
{
    v->vm_id = BIG_ID + (uint64_t)i;
    snprintf(v->function, sizeof(v->function), "fn-%d.v2_x", i);
    v->state = (enum pw_avm_state)(i % PW_AVM__COUNT);
    v->numa_node = i % 2 ? -1 : 1;
    v->memory_mb = UINT32_MAX - (uint32_t)i;
    v->vcpus = 2 + (uint32_t)i;
    v->lease_id = ID_2P53_PLUS1 + (uint64_t)i;
    v->lease_left_ms = i % 2 ? -1500 : 9007199254740992LL;
    snprintf(v->address, sizeof(v->address), "10.0.%d.1:8080", i);
}

static void fill_event(struct pw_agent_event *e, int i)
{
    e->seq = UINT64_MAX - (uint64_t)i;
    e->vm_id = BIG_ID ^ (uint64_t)i;
    e->state = PW_AVM_FAILED;
    snprintf(e->function, sizeof(e->function), "ev%d", i);
    e->numa_node = 3;
    e->restore_ms = 42 + i;
    snprintf(e->address, sizeof(e->address), "[::1]:%d", 9000 + i);
    snprintf(e->error, sizeof(e->error), "restore \"failed\"\\ at\tline\n%d \x01 \xc3\xa9", i);
}

static void fill_cmd(struct pw_cmd *c, int i)
{
    c->id = BIG_ID + 100 + (uint64_t)i;
    c->type = i == 0 ? PW_CMD_PREWARM : (enum pw_cmd_type)(i % PW_CMD__COUNT);
    c->vm_id = BIG_ID - (uint64_t)i;
    snprintf(c->function, sizeof(c->function), "fn%d", i);
    snprintf(c->image, sizeof(c->image), "/var/lib/prewarm/images/fn%d.snap", i);
    c->memory_mb = 1024;
    c->vcpus = 4;
    c->numa_node = -1;
    c->lease_id = ID_2P53_PLUS1;
    c->lease_ttl_ms = 60000 + i;
}

/* fill_names returns n valid snapshot names (pw_xcalloc'd; the message owns them). */
static char (*fill_names(size_t n))[PW_NAME_MAX]
{
    char(*names)[PW_NAME_MAX] = n ? pw_xcalloc(n, sizeof(*names)) : NULL;
    for (size_t i = 0; i < n; i++)
        snprintf(names[i], sizeof(names[i]), "snap-fn_%zu.v1", i);
    return names;
}

static void make_hello(struct pw_msg *m, size_t nvms)
{
    pw_msg_init(m, PW_MSG_HELLO);
    struct pw_msg_hello *h = &m->u.hello;
    pw_strlcpy(h->agent_id, "host-01.rack_7", sizeof(h->agent_id));
    pw_strlcpy(h->boot_id, "3f1c0a9e-5b2d-4c7e-9f10-2a3b4c5d6e7f", sizeof(h->boot_id));
    pw_strlcpy(h->version, "0.1.0", sizeof(h->version));
    pw_strlcpy(h->driver, "qemu", sizeof(h->driver));
    h->epoch = BIG_ID;
    h->cmd_ack = ID_2P53_PLUS1;
    h->event_seq = UINT64_MAX;
    h->nlabels = 3;
    h->labels = pw_xcalloc(h->nlabels, sizeof(*h->labels));
    pw_strlcpy(h->labels[0].key, "zone", sizeof(h->labels[0].key));
    pw_strlcpy(h->labels[0].value, "eu-west-1a", sizeof(h->labels[0].value));
    pw_strlcpy(h->labels[1].key, "gpu", sizeof(h->labels[1].key));
    pw_strlcpy(h->labels[1].value, "", sizeof(h->labels[1].value));
    pw_strlcpy(h->labels[2].key, "note", sizeof(h->labels[2].key));
    pw_strlcpy(h->labels[2].value, "quote \" and \\ and \xe2\x82\xac", sizeof(h->labels[2].value));
    h->nnuma = 2;
    h->numa = pw_xcalloc(h->nnuma, sizeof(*h->numa));
    for (size_t i = 0; i < h->nnuma; i++)
        fill_numa(&h->numa[i], (int)i);
    h->nvms = nvms;
    h->vms = nvms ? pw_xcalloc(nvms, sizeof(*h->vms)) : NULL;
    for (size_t i = 0; i < nvms; i++)
        fill_vm(&h->vms[i], (int)i);
    h->nsnapshots = 3;
    h->snapshots = fill_names(h->nsnapshots);
    pw_strlcpy(h->snapshots[2], "x123456789012345678901234567890123456789012345678901234567890ab",
               sizeof(h->snapshots[2])); /* 63 bytes: the longest name */
    h->draining = 1;
}

static void make_report(struct pw_msg *m, size_t nevents, size_t nvms)
{
    pw_msg_init(m, PW_MSG_REPORT);
    struct pw_msg_report *r = &m->u.report;
    pw_strlcpy(r->agent_id, "host-01", sizeof(r->agent_id));
    pw_strlcpy(r->boot_id, "b00t", sizeof(r->boot_id));
    r->seq = BIG_ID + 1;
    r->epoch = 7;
    r->cmd_ack = UINT64_MAX - 1;
    r->load = 1.0 / 3.0;
    r->nnuma = 1;
    r->numa = pw_xcalloc(1, sizeof(*r->numa));
    fill_numa(&r->numa[0], 0);
    r->nevents = nevents;
    r->events = nevents ? pw_xcalloc(nevents, sizeof(*r->events)) : NULL;
    for (size_t i = 0; i < nevents; i++)
        fill_event(&r->events[i], (int)i);
    r->has_inventory = 1;
    r->nvms = nvms;
    r->vms = nvms ? pw_xcalloc(nvms, sizeof(*r->vms)) : NULL;
    for (size_t i = 0; i < nvms; i++)
        fill_vm(&r->vms[i], (int)i);
    r->has_snapshots = 1;
    r->nsnapshots = 2;
    r->snapshots = fill_names(r->nsnapshots);
    r->draining = 1;
}

static void make_reply(struct pw_msg *m, size_t ncmds)
{
    pw_msg_init(m, PW_MSG_REPLY);
    struct pw_msg_reply *r = &m->u.reply;
    r->epoch = BIG_ID;
    r->event_ack = ID_2P53_PLUS1;
    r->heartbeat_ms = 5000;
    r->want_inventory = 1;
    r->ncmds = ncmds;
    r->cmds = ncmds ? pw_xcalloc(ncmds, sizeof(*r->cmds)) : NULL;
    for (size_t i = 0; i < ncmds; i++)
        fill_cmd(&r->cmds[i], (int)i);
}

static void make_error(struct pw_msg *m)
{
    pw_msg_init(m, PW_MSG_ERROR);
    pw_strlcpy(m->u.error.code, "rehello", sizeof(m->u.error.code));
    pw_strlcpy(m->u.error.message, "unknown session for \"host-01\"\n", sizeof(m->u.error.message));
}

static void cmp_numa(const struct pw_numa_node *a, const struct pw_numa_node *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(a[i].id, b[i].id);
        assert_string_equal(a[i].cpulist, b[i].cpulist);
        assert_int_equal(a[i].ncpus, b[i].ncpus);
        assert_int_equal(a[i].mem_total_mb, b[i].mem_total_mb);
        assert_int_equal(a[i].mem_free_mb, b[i].mem_free_mb);
        assert_int_equal(a[i].vcpu_total, b[i].vcpu_total);
        assert_int_equal(a[i].vcpu_free, b[i].vcpu_free);
    }
}

static void cmp_vms(const struct pw_vm_info *a, const struct pw_vm_info *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(a[i].vm_id, b[i].vm_id);
        assert_string_equal(a[i].function, b[i].function);
        assert_int_equal(a[i].state, b[i].state);
        assert_int_equal(a[i].numa_node, b[i].numa_node);
        assert_int_equal(a[i].memory_mb, b[i].memory_mb);
        assert_int_equal(a[i].vcpus, b[i].vcpus);
        assert_int_equal(a[i].lease_id, b[i].lease_id);
        assert_int_equal(a[i].lease_left_ms, b[i].lease_left_ms);
        assert_string_equal(a[i].address, b[i].address);
    }
}

static void cmp_msg(const struct pw_msg *a, const struct pw_msg *b)
{
    assert_int_equal(a->type, b->type);
    switch (a->type) {
    case PW_MSG_HELLO: {
        const struct pw_msg_hello *x = &a->u.hello, *y = &b->u.hello;
        assert_string_equal(x->agent_id, y->agent_id);
        assert_string_equal(x->boot_id, y->boot_id);
        assert_string_equal(x->version, y->version);
        assert_string_equal(x->driver, y->driver);
        assert_int_equal(x->epoch, y->epoch);
        assert_int_equal(x->cmd_ack, y->cmd_ack);
        assert_int_equal(x->event_seq, y->event_seq);
        assert_int_equal(x->nlabels, y->nlabels);
        for (size_t i = 0; i < x->nlabels; i++) {
            assert_string_equal(x->labels[i].key, y->labels[i].key);
            assert_string_equal(x->labels[i].value, y->labels[i].value);
        }
        assert_int_equal(x->nnuma, y->nnuma);
        cmp_numa(x->numa, y->numa, x->nnuma);
        assert_int_equal(x->nvms, y->nvms);
        cmp_vms(x->vms, y->vms, x->nvms);
        assert_int_equal(x->nsnapshots, y->nsnapshots);
        for (size_t i = 0; i < x->nsnapshots; i++)
            assert_string_equal(x->snapshots[i], y->snapshots[i]);
        assert_int_equal(x->draining, y->draining);
        break;
    }
    case PW_MSG_REPORT: {
        const struct pw_msg_report *x = &a->u.report, *y = &b->u.report;
        assert_string_equal(x->agent_id, y->agent_id);
        assert_string_equal(x->boot_id, y->boot_id);
        assert_int_equal(x->seq, y->seq);
        assert_int_equal(x->epoch, y->epoch);
        assert_int_equal(x->cmd_ack, y->cmd_ack);
        assert_true(x->load == y->load);
        assert_int_equal(x->nnuma, y->nnuma);
        cmp_numa(x->numa, y->numa, x->nnuma);
        assert_int_equal(x->nevents, y->nevents);
        for (size_t i = 0; i < x->nevents; i++) {
            const struct pw_agent_event *e = &x->events[i], *f = &y->events[i];
            assert_int_equal(e->seq, f->seq);
            assert_int_equal(e->vm_id, f->vm_id);
            assert_int_equal(e->state, f->state);
            assert_string_equal(e->function, f->function);
            assert_int_equal(e->numa_node, f->numa_node);
            assert_int_equal(e->restore_ms, f->restore_ms);
            assert_string_equal(e->address, f->address);
            assert_string_equal(e->error, f->error);
        }
        assert_int_equal(x->has_inventory, y->has_inventory);
        assert_int_equal(x->nvms, y->nvms);
        cmp_vms(x->vms, y->vms, x->nvms);
        assert_int_equal(x->has_snapshots, y->has_snapshots);
        assert_int_equal(x->nsnapshots, y->nsnapshots);
        for (size_t i = 0; i < x->nsnapshots; i++)
            assert_string_equal(x->snapshots[i], y->snapshots[i]);
        assert_int_equal(x->draining, y->draining);
        break;
    }
    case PW_MSG_REPLY: {
        const struct pw_msg_reply *x = &a->u.reply, *y = &b->u.reply;
        assert_int_equal(x->epoch, y->epoch);
        assert_int_equal(x->event_ack, y->event_ack);
        assert_int_equal(x->heartbeat_ms, y->heartbeat_ms);
        assert_int_equal(x->want_inventory, y->want_inventory);
        assert_int_equal(x->ncmds, y->ncmds);
        for (size_t i = 0; i < x->ncmds; i++) {
            const struct pw_cmd *c = &x->cmds[i], *d = &y->cmds[i];
            assert_int_equal(c->id, d->id);
            assert_int_equal(c->type, d->type);
            assert_int_equal(c->vm_id, d->vm_id);
            assert_string_equal(c->function, d->function);
            assert_string_equal(c->image, d->image);
            assert_int_equal(c->memory_mb, d->memory_mb);
            assert_int_equal(c->vcpus, d->vcpus);
            assert_int_equal(c->numa_node, d->numa_node);
            assert_int_equal(c->lease_id, d->lease_id);
            assert_int_equal(c->lease_ttl_ms, d->lease_ttl_ms);
        }
        break;
    }
    case PW_MSG_ERROR:
        assert_string_equal(a->u.error.code, b->u.error.code);
        assert_string_equal(a->u.error.message, b->u.error.message);
        break;
    default: fail_msg("bad type %d", a->type);
    }
}

/* round_trip encodes m, decodes the result, compares both and frees m. */
static void round_trip(struct pw_msg *m)
{
    struct pw_buf b;
    struct pw_msg out;
    char err[256];
    pw_buf_init(&b, PW_PROTO_MAX_MSG);
    assert_int_equal(pw_proto_encode(m, &b), PW_OK);
    int rv = pw_proto_decode(b.data, b.len, &out, err, sizeof(err));
    if (rv != PW_OK)
        fail_msg("decode: %s: %s", pw_strerror(rv), err);
    cmp_msg(m, &out);
    pw_msg_fini(&out);
    pw_msg_fini(m);
    pw_buf_fini(&b);
}

static int is_zero(const void *p, size_t n)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        if (c[i] != 0)
            return 0;
    return 1;
}

/* decode_err decodes a string that must fail with rv and a reason containing want. */
static void decode_err_len(const char *json, size_t len, int want_rv, const char *want)
{
    struct pw_msg m;
    char err[256];
    memset(&m, 0xa5, sizeof(m));
    int rv = pw_proto_decode(json, len, &m, err, sizeof(err));
    if (rv != want_rv)
        fail_msg("want %s, got %s (%s) for %.200s", pw_strerror(want_rv), pw_strerror(rv), err, json);
    assert_true(is_zero(&m, sizeof(m)));
    assert_true(err[0] != '\0');
    assert_null(strchr(err, '\n'));
    if (want != NULL && strstr(err, want) == NULL)
        fail_msg("reason \"%s\" lacks \"%s\"", err, want);
}

static void decode_err(const char *json, int want_rv, const char *want)
{
    decode_err_len(json, strlen(json), want_rv, want);
}

static void decode_ok(const char *json, struct pw_msg *m)
{
    char err[256];
    int rv = pw_proto_decode(json, strlen(json), m, err, sizeof(err));
    if (rv != PW_OK)
        fail_msg("decode %s: %s: %s", json, pw_strerror(rv), err);
}

#define HELLO_HEAD "{\"v\":1,\"type\":\"hello\",\"agent_id\":\"a1\",\"boot_id\":\"b1\""
#define NUMA0 "\"numa\":[{\"id\":0}]"
#define HELLO_MIN HELLO_HEAD "," NUMA0 "}"
#define REPORT_HEAD "{\"v\":1,\"type\":\"report\",\"agent_id\":\"a1\",\"boot_id\":\"b1\",\"seq\":\"1\""
#define REPLY_HEAD "{\"v\":1,\"type\":\"reply\",\"epoch\":\"1\",\"event_ack\":\"0\",\"heartbeat_ms\":1000"
#define VM0 "{\"vm_id\":\"1\",\"function\":\"f\",\"state\":\"running\"}"
#define EV0 "{\"seq\":\"1\",\"vm_id\":\"2\",\"state\":\"gone\"}"
#define CMD0 "{\"id\":\"1\",\"type\":\"destroy\",\"vm_id\":\"2\"}"

/* ---- round trips ---- */

static void test_roundtrip_hello(void **state)
{
    struct pw_msg m;
    make_hello(&m, 5);
    round_trip(&m);
}

static void test_roundtrip_report(void **state)
{
    struct pw_msg m;
    make_report(&m, 4, 3);
    round_trip(&m);
}

static void test_roundtrip_reply(void **state)
{
    struct pw_msg m;
    make_reply(&m, 4);
    round_trip(&m);
}

static void test_roundtrip_error(void **state)
{
    struct pw_msg m;
    make_error(&m);
    round_trip(&m);
}

static void test_roundtrip_minimal(void **state)
{
    /* Zero-valued optional fields are omitted and come back as zero. */
    struct pw_msg m;
    pw_msg_init(&m, PW_MSG_REPORT);
    pw_strlcpy(m.u.report.agent_id, "a", sizeof(m.u.report.agent_id));
    pw_strlcpy(m.u.report.boot_id, "b", sizeof(m.u.report.boot_id));
    round_trip(&m);

    pw_msg_init(&m, PW_MSG_REPLY);
    round_trip(&m);

    pw_msg_init(&m, PW_MSG_ERROR);
    pw_strlcpy(m.u.error.code, "rehello", sizeof(m.u.error.code));
    round_trip(&m);
}

static void test_roundtrip_max_counts(void **state)
{
    struct pw_msg m;
    make_hello(&m, PW_PROTO_MAX_VMS);
    round_trip(&m);
    make_report(&m, PW_PROTO_MAX_EVENTS, 0);
    round_trip(&m);
    make_reply(&m, PW_PROTO_MAX_CMDS);
    round_trip(&m);
}

static void test_json_shape(void **state)
{
    struct pw_msg m;
    struct pw_buf b;
    pw_buf_init(&b, PW_PROTO_MAX_MSG);
    make_hello(&m, 1);
    assert_int_equal(pw_proto_encode(&m, &b), PW_OK);
    pw_msg_fini(&m);
    assert_memory_equal(b.data, "{\"v\":1,\"type\":\"hello\",", 22);
    assert_non_null(strstr(b.data, "\"epoch\":\"fedcba9876543210\""));
    assert_non_null(strstr(b.data, "\"cmd_ack\":\"0020000000000001\""));
    assert_non_null(strstr(b.data, "\"event_seq\":\"ffffffffffffffff\""));
    assert_non_null(strstr(b.data, "\"labels\":{\"zone\":\"eu-west-1a\",\"gpu\":\"\""));
    assert_non_null(strstr(b.data, "\"vm_id\":\"fedcba9876543210\""));
    assert_non_null(strstr(b.data, "\"state\":\"restoring\""));
    assert_non_null(strstr(b.data, "\"mem_total_mb\":1099511627776"));
    assert_non_null(strstr(b.data, "\"lease_left_ms\":9007199254740992"));

    /* A report without inventory has no "vms"; an empty inventory is "vms":[]. */
    pw_buf_reset(&b);
    make_report(&m, 0, 0);
    m.u.report.has_inventory = 0;
    assert_int_equal(pw_proto_encode(&m, &b), PW_OK);
    assert_null(strstr(b.data, "\"vms\""));
    assert_null(strstr(b.data, "\"events\""));
    pw_buf_reset(&b);
    m.u.report.has_inventory = 1;
    assert_int_equal(pw_proto_encode(&m, &b), PW_OK);
    assert_non_null(strstr(b.data, "\"vms\":[]"));
    pw_msg_fini(&m);

    struct pw_msg d;
    decode_ok(b.data, &d);
    assert_int_equal(d.u.report.has_inventory, 1);
    assert_int_equal(d.u.report.nvms, 0);
    pw_msg_fini(&d);

    /* Optional strings are omitted when empty. */
    pw_buf_reset(&b);
    make_error(&m);
    m.u.error.message[0] = '\0';
    assert_int_equal(pw_proto_encode(&m, &b), PW_OK);
    assert_string_equal(b.data, "{\"v\":1,\"type\":\"error\",\"code\":\"rehello\"}");
    pw_msg_fini(&m);

    /* Encoding appends. */
    assert_int_equal(pw_buf_adds(&b, "|"), PW_OK);
    make_error(&m);
    assert_int_equal(pw_proto_encode(&m, &b), PW_OK);
    pw_msg_fini(&m);
    assert_non_null(strstr(b.data, "}|{\"v\":1"));
    pw_buf_fini(&b);
}

static void test_decode_optional_present(void **state)
{
    /* Optional fields may be present with zero values, and the ids may be short. */
    struct pw_msg m;
    decode_ok(REPLY_HEAD ",\"want_inventory\":false,\"cmds\":[]}", &m);
    assert_int_equal(m.type, PW_MSG_REPLY);
    assert_int_equal(m.u.reply.epoch, 1);
    assert_int_equal(m.u.reply.heartbeat_ms, 1000);
    assert_int_equal(m.u.reply.want_inventory, 0);
    assert_int_equal(m.u.reply.ncmds, 0);
    assert_null(m.u.reply.cmds);
    pw_msg_fini(&m);

    decode_ok(" \r\n\t" HELLO_HEAD ",\"epoch\":\"0\",\"labels\":{},\"vms\":[],\"version\":\"\","
              "\"numa\":[{\"id\":1,\"cpulist\":\"\",\"mem_free_mb\":0}],\"x-future\":[1,2]} \n",
              &m);
    assert_int_equal(m.u.hello.nnuma, 1);
    assert_int_equal(m.u.hello.numa[0].id, 1);
    assert_int_equal(m.u.hello.nlabels, 0);
    pw_msg_fini(&m);
    assert_int_equal(m.type, PW_MSG_HELLO);
    assert_null(m.u.hello.numa);

    decode_ok(REPLY_HEAD ",\"cmds\":[{\"id\":\"a\",\"type\":\"prewarm\",\"vm_id\":\"0000000000000abc\","
                         "\"function\":\"f\",\"numa_node\":-1,\"memory_mb\":4294967295,\"vcpus\":1e1}]}",
              &m);
    assert_int_equal(m.u.reply.cmds[0].id, 10);
    assert_int_equal(m.u.reply.cmds[0].vm_id, 0xabc);
    assert_int_equal(m.u.reply.cmds[0].type, PW_CMD_PREWARM);
    assert_int_equal(m.u.reply.cmds[0].numa_node, -1);
    assert_int_equal(m.u.reply.cmds[0].memory_mb, UINT32_MAX);
    assert_int_equal(m.u.reply.cmds[0].vcpus, 10);
    pw_msg_fini(&m);
}

/* Snapshots and draining: sent only when set, except report.snapshots, which is present
 * (possibly empty) exactly when has_snapshots is set. */
static void test_snapshots_and_draining(void **state)
{
    struct pw_msg m, d;
    struct pw_buf b;
    pw_buf_init(&b, PW_PROTO_MAX_MSG);

    make_hello(&m, 0);
    assert_int_equal(pw_proto_encode(&m, &b), PW_OK);
    assert_non_null(strstr(b.data, "\"snapshots\":[\"snap-fn_0.v1\",\"snap-fn_1.v1\",\"x12"));
    assert_non_null(strstr(b.data, "\"draining\":true"));
    free(m.u.hello.snapshots);
    m.u.hello.snapshots = NULL;
    m.u.hello.nsnapshots = 0;
    m.u.hello.draining = 0;
    pw_buf_reset(&b);
    assert_int_equal(pw_proto_encode(&m, &b), PW_OK);
    assert_null(strstr(b.data, "\"snapshots\""));
    assert_null(strstr(b.data, "\"draining\""));
    pw_msg_fini(&m);
    decode_ok(b.data, &d);
    assert_int_equal(d.u.hello.nsnapshots, 0);
    assert_null(d.u.hello.snapshots);
    assert_int_equal(d.u.hello.draining, 0);
    pw_msg_fini(&d);

    /* report: an empty list that is carried is "snapshots":[] and decodes as present. */
    make_report(&m, 0, 0);
    free(m.u.report.snapshots);
    m.u.report.snapshots = NULL;
    m.u.report.nsnapshots = 0;
    pw_buf_reset(&b);
    assert_int_equal(pw_proto_encode(&m, &b), PW_OK);
    assert_non_null(strstr(b.data, "\"snapshots\":[]"));
    decode_ok(b.data, &d);
    assert_int_equal(d.u.report.has_snapshots, 1);
    assert_int_equal(d.u.report.nsnapshots, 0);
    assert_int_equal(d.u.report.draining, 1);
    pw_msg_fini(&d);
    round_trip(&m);

    /* Not carried: no key at all, whatever the count says, and it decodes as absent. */
    make_report(&m, 0, 0);
    m.u.report.has_snapshots = 0;
    m.u.report.draining = 0;
    pw_buf_reset(&b);
    assert_int_equal(pw_proto_encode(&m, &b), PW_OK);
    assert_null(strstr(b.data, "\"snapshots\""));
    assert_null(strstr(b.data, "\"draining\""));
    pw_msg_fini(&m);
    decode_ok(b.data, &d);
    assert_int_equal(d.u.report.has_snapshots, 0);
    assert_int_equal(d.u.report.nsnapshots, 0);
    assert_null(d.u.report.snapshots);
    assert_int_equal(d.u.report.draining, 0);
    pw_msg_fini(&d);

    /* Decoding: explicit false and [] are accepted; fini frees the list. */
    decode_ok(REPORT_HEAD ",\"draining\":false,\"snapshots\":[\"fn-a\",\"fn-a\",\"B.2\"]}", &d);
    assert_int_equal(d.u.report.draining, 0);
    assert_int_equal(d.u.report.has_snapshots, 1);
    assert_int_equal(d.u.report.nsnapshots, 3);
    assert_string_equal(d.u.report.snapshots[1], "fn-a"); /* duplicates are the protocol's business */
    assert_string_equal(d.u.report.snapshots[2], "B.2");
    pw_msg_fini(&d);
    assert_null(d.u.report.snapshots);
    assert_int_equal(d.u.report.has_snapshots, 0);
    decode_ok(HELLO_HEAD "," NUMA0 ",\"snapshots\":[],\"draining\":true}", &d);
    assert_int_equal(d.u.hello.nsnapshots, 0);
    assert_int_equal(d.u.hello.draining, 1);
    pw_msg_fini(&d);
    pw_buf_fini(&b);
}

static void test_big_ids(void **state)
{
    struct pw_msg m;
    decode_ok(REPLY_HEAD ",\"cmds\":[{\"id\":\"ffffffffffffffff\",\"type\":\"lease\","
                         "\"vm_id\":\"0020000000000001\",\"lease_id\":\"8000000000000000\"}]}",
              &m);
    assert_int_equal(m.u.reply.cmds[0].id, UINT64_MAX);
    assert_int_equal(m.u.reply.cmds[0].vm_id, ID_2P53_PLUS1);
    assert_int_equal(m.u.reply.cmds[0].lease_id, UINT64_C(1) << 63);
    pw_msg_fini(&m);

    /* Numbers for ids are refused: they would have lost precision already. */
    decode_err(REPLY_HEAD ",\"cmds\":[{\"id\":9007199254740993,\"type\":\"lease\",\"vm_id\":\"1\"}]}",
               PW_ERR_PROTO, "reply.cmds[0]: id must be a string of 1-16 lower-case hex digits");
    decode_err("{\"v\":1,\"type\":\"reply\",\"epoch\":\"\",\"event_ack\":\"0\",\"heartbeat_ms\":1}",
               PW_ERR_PROTO, "epoch");
    decode_err("{\"v\":1,\"type\":\"reply\",\"epoch\":\"00000000000000001\",\"event_ack\":\"0\","
               "\"heartbeat_ms\":1}",
               PW_ERR_PROTO, "epoch");
    decode_err("{\"v\":1,\"type\":\"reply\",\"epoch\":\"ABC\",\"event_ack\":\"0\",\"heartbeat_ms\":1}",
               PW_ERR_PROTO, "epoch");
    decode_err("{\"v\":1,\"type\":\"reply\",\"epoch\":\"0x1\",\"event_ack\":\"0\",\"heartbeat_ms\":1}",
               PW_ERR_PROTO, "epoch");
    decode_err("{\"v\":1,\"type\":\"reply\",\"epoch\":\" 1\",\"event_ack\":\"0\",\"heartbeat_ms\":1}",
               PW_ERR_PROTO, "epoch");
    decode_err("{\"v\":1,\"type\":\"reply\",\"epoch\":\"-1\",\"event_ack\":\"0\",\"heartbeat_ms\":1}",
               PW_ERR_PROTO, "epoch");
}

/* ---- bounds ---- */

/* json_array builds HEAD,"key":[item,item,...]} with n items. */
static char *json_array(const char *head, const char *key, const char *item, size_t n, const char *tail)
{
    struct pw_buf b;
    pw_buf_init(&b, 64 * 1024 * 1024);
    assert_int_equal(pw_buf_printf(&b, "%s,\"%s\":[", head, key), PW_OK);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(pw_buf_printf(&b, "%s%s", i ? "," : "", item), PW_OK);
    assert_int_equal(pw_buf_printf(&b, "]%s}", tail), PW_OK);
    return pw_buf_steal(&b, NULL);
}

static void test_count_bounds(void **state)
{
    struct {
        const char *head, *key, *item, *tail;
        size_t max;
    } cases[] = {
        {HELLO_HEAD, "vms", VM0, "," NUMA0, PW_PROTO_MAX_VMS},
        {REPORT_HEAD, "vms", VM0, "", PW_PROTO_MAX_VMS},
        {REPORT_HEAD, "events", EV0, "", PW_PROTO_MAX_EVENTS},
        {REPLY_HEAD, "cmds", CMD0, "", PW_PROTO_MAX_CMDS},
        {HELLO_HEAD, "numa", "{\"id\":0}", "", PW_PROTO_MAX_NUMA},
        {REPORT_HEAD, "numa", "{\"id\":0}", "", PW_PROTO_MAX_NUMA},
        {HELLO_HEAD, "snapshots", "\"fn-1\"", "," NUMA0, PW_PROTO_MAX_SNAPSHOTS},
        {REPORT_HEAD, "snapshots", "\"fn-1\"", "", PW_PROTO_MAX_SNAPSHOTS},
    };
    for (size_t i = 0; i < PW_ARRAY_LEN(cases); i++) {
        struct pw_msg m;
        char *ok = json_array(cases[i].head, cases[i].key, cases[i].item, cases[i].max, cases[i].tail);
        decode_ok(ok, &m);
        pw_msg_fini(&m);
        free(ok);
        char *bad = json_array(cases[i].head, cases[i].key, cases[i].item, cases[i].max + 1,
                               cases[i].tail);
        decode_err(bad, PW_ERR_TOOBIG, cases[i].key);
        free(bad);
    }

    /* Labels: an object of at most PW_PROTO_MAX_LABELS keys. */
    struct pw_buf b;
    for (size_t n = PW_PROTO_MAX_LABELS; n <= PW_PROTO_MAX_LABELS + 1; n++) {
        pw_buf_init(&b, 1 << 20);
        pw_buf_adds(&b, HELLO_HEAD "," NUMA0 ",\"labels\":{");
        for (size_t i = 0; i < n; i++)
            pw_buf_printf(&b, "%s\"k%zu\":\"v\"", i ? "," : "", i);
        pw_buf_adds(&b, "}}");
        if (n == PW_PROTO_MAX_LABELS) {
            struct pw_msg m;
            decode_ok(b.data, &m);
            assert_int_equal(m.u.hello.nlabels, n);
            assert_string_equal(m.u.hello.labels[n - 1].key, "k31");
            pw_msg_fini(&m);
        } else {
            decode_err(b.data, PW_ERR_TOOBIG, "labels");
        }
        pw_buf_fini(&b);
    }

    /* The encoder refuses what the decoder would refuse. */
    struct pw_msg m;
    pw_buf_init(&b, PW_PROTO_MAX_MSG * 4);
    make_hello(&m, PW_PROTO_MAX_VMS + 1);
    assert_int_equal(pw_proto_encode(&m, &b), PW_ERR_TOOBIG);
    assert_int_equal(b.len, 0);
    pw_msg_fini(&m);
    make_reply(&m, PW_PROTO_MAX_CMDS + 1);
    assert_int_equal(pw_proto_encode(&m, &b), PW_ERR_TOOBIG);
    pw_msg_fini(&m);
    make_hello(&m, 0);
    m.u.hello.nlabels = PW_PROTO_MAX_LABELS + 1;
    m.u.hello.labels = pw_xrealloc(m.u.hello.labels, m.u.hello.nlabels * sizeof(struct pw_label));
    assert_int_equal(pw_proto_encode(&m, &b), PW_ERR_TOOBIG);
    pw_msg_fini(&m);
    make_hello(&m, 0);
    free(m.u.hello.snapshots);
    m.u.hello.nsnapshots = PW_PROTO_MAX_SNAPSHOTS + 1;
    m.u.hello.snapshots = fill_names(m.u.hello.nsnapshots);
    assert_int_equal(pw_proto_encode(&m, &b), PW_ERR_TOOBIG);
    pw_msg_fini(&m);
    make_report(&m, 0, 0);
    free(m.u.report.snapshots);
    m.u.report.nsnapshots = PW_PROTO_MAX_SNAPSHOTS + 1;
    m.u.report.snapshots = fill_names(m.u.report.nsnapshots);
    assert_int_equal(pw_proto_encode(&m, &b), PW_ERR_TOOBIG);
    assert_int_equal(b.len, 0);
    pw_msg_fini(&m);
    pw_buf_fini(&b);
}

static void test_hello_needs_numa(void **state)
{
    decode_err(HELLO_HEAD "}", PW_ERR_PROTO, "hello: missing field numa");
    decode_err(HELLO_HEAD ",\"numa\":[]}", PW_ERR_PROTO, "numa needs at least 1");

    struct pw_msg m;
    struct pw_buf b;
    pw_buf_init(&b, 4096);
    make_hello(&m, 0);
    free(m.u.hello.numa);
    m.u.hello.numa = NULL;
    m.u.hello.nnuma = 0;
    assert_int_equal(pw_proto_encode(&m, &b), PW_ERR_INVAL);
    assert_int_equal(b.len, 0);
    pw_msg_fini(&m);
    pw_buf_fini(&b);
}

static void test_string_bounds(void **state)
{
    char longs[600], json[1024];
    struct {
        const char *fmt; /* %s gets a string of len bytes */
        size_t len;      /* the buffer size: len-1 fits, len does not */
        const char *field;
    } cases[] = {
        {HELLO_HEAD "," NUMA0 ",\"version\":\"%s\"}", 32, "version"},
        {HELLO_HEAD "," NUMA0 ",\"driver\":\"%s\"}", 32, "driver"},
        {HELLO_HEAD ",\"numa\":[{\"id\":0,\"cpulist\":\"%s\"}]}", PW_CPULIST_MAX, "cpulist"},
        {HELLO_HEAD "," NUMA0 ",\"labels\":{\"k\":\"%s\"}}", PW_LABEL_VALUE_MAX, "labels.k"},
        {REPORT_HEAD ",\"vms\":[{\"vm_id\":\"1\",\"function\":\"f\",\"state\":\"running\","
                     "\"address\":\"%s\"}]}",
         PW_LABEL_VALUE_MAX, "address"},
        {REPORT_HEAD ",\"events\":[{\"seq\":\"1\",\"vm_id\":\"1\",\"state\":\"failed\","
                     "\"error\":\"%s\"}]}",
         PW_ERRMSG_MAX, "error"},
        {REPLY_HEAD ",\"cmds\":[{\"id\":\"1\",\"type\":\"prewarm\",\"vm_id\":\"1\",\"function\":\"f\","
                    "\"image\":\"%s\"}]}",
         PW_IMAGE_MAX, "image"},
        {"{\"v\":1,\"type\":\"error\",\"code\":\"c\",\"message\":\"%s\"}", PW_ERRMSG_MAX, "message"},
        {"{\"v\":1,\"type\":\"hello\",\"agent_id\":\"%s\",\"boot_id\":\"b\"," NUMA0 "}", PW_NAME_MAX,
         "agent_id"},
        {REPLY_HEAD ",\"cmds\":[{\"id\":\"1\",\"type\":\"prewarm\",\"vm_id\":\"1\",\"function\":\"%s\"}]}",
         PW_NAME_MAX, "function"},
    };
    for (size_t i = 0; i < PW_ARRAY_LEN(cases); i++) {
        struct pw_msg m;
        memset(longs, 'x', cases[i].len - 1);
        longs[cases[i].len - 1] = '\0';
        snprintf(json, sizeof(json), cases[i].fmt, longs);
        decode_ok(json, &m);
        pw_msg_fini(&m);
        longs[cases[i].len - 1] = 'x';
        longs[cases[i].len] = '\0';
        snprintf(json, sizeof(json), cases[i].fmt, longs);
        decode_err(json, PW_ERR_PROTO, cases[i].field);
    }

    /* A label key is a name: 64 bytes is too long. */
    memset(longs, 'k', PW_NAME_MAX);
    longs[PW_NAME_MAX] = '\0';
    snprintf(json, sizeof(json), HELLO_HEAD "," NUMA0 ",\"labels\":{\"%s\":\"v\"}}", longs);
    decode_err(json, PW_ERR_PROTO, "not a valid name");

    /* The encoder refuses a string that is not terminated inside its buffer. */
    struct pw_msg m;
    struct pw_buf b;
    pw_buf_init(&b, 4096);
    make_error(&m);
    memset(m.u.error.message, 'x', sizeof(m.u.error.message));
    assert_int_equal(pw_proto_encode(&m, &b), PW_ERR_INVAL);
    assert_int_equal(b.len, 0);
    pw_buf_fini(&b);
}

static void test_message_size(void **state)
{
    /* Exactly the limit is parsed (whitespace padding), one more byte is refused unparsed. */
    size_t n = PW_PROTO_MAX_MSG + 1;
    char *big = pw_xmalloc(n);
    memset(big, ' ', n);
    memcpy(big, HELLO_MIN, strlen(HELLO_MIN));
    struct pw_msg m;
    char err[256];
    assert_int_equal(pw_proto_decode(big, PW_PROTO_MAX_MSG, &m, err, sizeof(err)), PW_OK);
    pw_msg_fini(&m);
    decode_err_len(big, n, PW_ERR_TOOBIG, "limit");
    free(big);

    /* The encoder stops at the buffer's cap and leaves the buffer as it was. */
    struct pw_buf b;
    pw_buf_init(&b, 100);
    assert_int_equal(pw_buf_adds(&b, "keep"), PW_OK);
    make_hello(&m, 3);
    assert_int_equal(pw_proto_encode(&m, &b), PW_ERR_TOOBIG);
    assert_int_equal(b.len, 4);
    assert_string_equal(b.data, "keep");
    pw_msg_fini(&m);
    pw_buf_fini(&b);
}

/* ---- hostile input ---- */

static void test_malformed_json(void **state)
{
    decode_err("", PW_ERR_PARSE, "empty");
    decode_err("{", PW_ERR_PARSE, "malformed JSON");
    decode_err("{\"v\":1,\"type\":\"hello\"", PW_ERR_PARSE, "malformed JSON");
    decode_err("{\"v\":1,}", PW_ERR_PARSE, "malformed JSON");
    decode_err("{'v':1}", PW_ERR_PARSE, "malformed JSON");
    decode_err("\"hello\"", PW_ERR_PARSE, "not a JSON object");
    decode_err("[]", PW_ERR_PARSE, "not a JSON object");
    decode_err("null", PW_ERR_PARSE, "not a JSON object");
    decode_err("42", PW_ERR_PARSE, "not a JSON object");
    decode_err(HELLO_MIN "x", PW_ERR_PARSE, "trailing data");
    decode_err(HELLO_MIN HELLO_MIN, PW_ERR_PARSE, "trailing data");
    decode_err_len(HELLO_MIN "\0", sizeof(HELLO_MIN), PW_ERR_PARSE, "control byte 0x00 at byte 71");
    decode_err_len("\0" HELLO_MIN, sizeof(HELLO_MIN), PW_ERR_PARSE, "control byte 0x00 at byte 0");
    decode_err("{\"v\":1\x01,\"type\":\"error\",\"code\":\"c\"}", PW_ERR_PARSE, "control byte 0x01");
    decode_err("{\"v\":1,\"type\":\"error\",\"code\":\"c\",\"message\":\"a\x1b\"}", PW_ERR_PARSE,
               "control byte 0x1b");
    /* A NUL escape would truncate a name ("a\u0000b" read as "a"); an escaped backslash
     * followed by "u0000" is plain text and fine. */
    decode_err("{\"v\":1,\"type\":\"error\",\"code\":\"a\\u0000b\"}", PW_ERR_PARSE, "\\u0000 at byte 31");
    {
        struct pw_msg m;
        static const char ok[] = "{\"v\":1,\"type\":\"error\",\"code\":\"c\",\"message\":\"a\\\\u0000\"}";
        assert_int_equal(pw_proto_decode(ok, strlen(ok), &m, NULL, 0), PW_OK);
        assert_string_equal(m.u.error.message, "a\\u0000");
        pw_msg_fini(&m);
    }

    /* Input need not be terminated: only len bytes are read. */
    static const char twice[] = HELLO_MIN "garbage";
    struct pw_msg m;
    char err[128];
    char *exact = pw_xmalloc(strlen(HELLO_MIN));
    memcpy(exact, twice, strlen(HELLO_MIN));
    assert_int_equal(pw_proto_decode(exact, strlen(HELLO_MIN), &m, err, sizeof(err)), PW_OK);
    pw_msg_fini(&m);
    for (size_t len = 1; len < strlen(HELLO_MIN); len++)
        decode_err_len(exact, len, PW_ERR_PARSE, NULL);
    free(exact);

    /* No error buffer is fine. */
    assert_int_equal(pw_proto_decode("{", 1, &m, NULL, 0), PW_ERR_PARSE);
    assert_int_equal(pw_proto_decode("{", 1, &m, err, 1), PW_ERR_PARSE);
    assert_string_equal(err, "");
}

static void test_version(void **state)
{
    decode_err("{\"v\":2,\"type\":\"hello\"}", PW_ERR_PROTO, "unsupported protocol version 2 (this side speaks 1)");
    decode_err("{\"v\":0,\"type\":\"hello\"}", PW_ERR_PROTO, "unsupported protocol version 0");
    decode_err("{\"v\":1.5,\"type\":\"hello\"}", PW_ERR_PROTO, "unsupported protocol version 1.5");
    decode_err("{\"v\":\"1\",\"type\":\"hello\"}", PW_ERR_PROTO, "unsupported protocol version a string");
    decode_err("{\"type\":\"hello\"}", PW_ERR_PROTO, "missing protocol version");
    decode_err("{\"v\":1,\"v\":1,\"type\":\"error\",\"code\":\"c\"}", PW_ERR_PROTO, "duplicate field v");
    /* The version is checked before anything else, so a newer peer is told what is wrong. */
    decode_err("{\"type\":\"shiny\",\"v\":7,\"agent_id\":5}", PW_ERR_PROTO, "version 7");
}

static void test_wrong_types(void **state)
{
    static const struct {
        const char *json, *want;
    } cases[] = {
        {"{\"v\":1}", "missing field type"},
        {"{\"v\":1,\"type\":3}", "type must be a string, not a number"},
        {"{\"v\":1,\"type\":\"bogus\"}", "unknown message type \"bogus\""},
        {"{\"v\":1,\"type\":\"Hello\"}", "unknown message type"},
        {"{\"v\":1,\"type\":\"error\",\"code\":5}", "error: code must be a string, not a number"},
        {"{\"v\":1,\"type\":\"hello\",\"agent_id\":[],\"boot_id\":\"b\"," NUMA0 "}", "agent_id must be a string, not an array"},
        {HELLO_HEAD "," NUMA0 ",\"epoch\":5}", "epoch must be a string"},
        {HELLO_HEAD "," NUMA0 ",\"labels\":[]}", "labels must be an object, not an array"},
        {HELLO_HEAD "," NUMA0 ",\"labels\":{\"k\":1}}", "labels.k must be a string"},
        {HELLO_HEAD "," NUMA0 ",\"vms\":{}}", "vms must be an array, not an object"},
        {HELLO_HEAD "," NUMA0 ",\"vms\":[1]}", "hello.vms[0]: must be an object, not a number"},
        {HELLO_HEAD ",\"numa\":[{\"id\":\"0\"}]}", "hello.numa[0]: id must be a number, not a string"},
        {HELLO_HEAD ",\"numa\":null}", "numa must be an array, not null"},
        {REPLY_HEAD ",\"want_inventory\":1}", "want_inventory must be a boolean, not a number"},
        {REPLY_HEAD ",\"want_inventory\":\"true\"}", "want_inventory must be a boolean"},
        {"{\"v\":1,\"type\":\"reply\",\"epoch\":\"1\",\"event_ack\":\"0\",\"heartbeat_ms\":\"1000\"}",
         "heartbeat_ms must be a number, not a string"},
        {REPORT_HEAD ",\"load\":\"1\"}", "load must be a number"},
        {REPORT_HEAD ",\"vms\":[{\"vm_id\":\"1\",\"function\":\"f\",\"state\":\"idle\"}]}", "unknown state \"idle\""},
        {REPORT_HEAD ",\"vms\":[{\"vm_id\":\"1\",\"function\":\"f\",\"state\":1}]}", "unknown state"},
        {REPORT_HEAD ",\"events\":[{\"seq\":\"1\",\"vm_id\":\"1\",\"state\":\"RUNNING\"}]}", "unknown state"},
        {REPLY_HEAD ",\"cmds\":[{\"id\":\"1\",\"type\":\"reboot\",\"vm_id\":\"1\"}]}", "unknown command type \"reboot\""},
        {REPLY_HEAD ",\"cmds\":[{\"id\":\"1\",\"type\":\"prewarm\",\"vm_id\":\"1\"}]}", "prewarm and snapshot commands need a function"},
        {REPLY_HEAD ",\"cmds\":[{\"id\":\"1\",\"type\":\"snapshot\",\"vm_id\":\"0\"}]}", "prewarm and snapshot commands need a function"},
        {"{\"v\":1,\"type\":\"error\",\"code\":\"c\",\"message\":null}", "message must be a string, not null"},
        {HELLO_HEAD "," NUMA0 ",\"snapshots\":\"fn-a\"}", "hello: snapshots must be an array, not a string"},
        {HELLO_HEAD "," NUMA0 ",\"snapshots\":{\"fn-a\":true}}", "snapshots must be an array, not an object"},
        {HELLO_HEAD "," NUMA0 ",\"snapshots\":[\"fn-a\",7]}", "hello: snapshots[1] must be a string, not a number"},
        {REPORT_HEAD ",\"snapshots\":null}", "report: snapshots must be an array, not null"},
        {REPORT_HEAD ",\"snapshots\":[[\"fn-a\"]]}", "snapshots[0] must be a string, not an array"},
        {REPORT_HEAD ",\"snapshots\":[null]}", "snapshots[0] must be a string, not null"},
        {HELLO_HEAD "," NUMA0 ",\"draining\":1}", "hello: draining must be a boolean, not a number"},
        {REPORT_HEAD ",\"draining\":\"true\"}", "report: draining must be a boolean, not a string"},
        {REPORT_HEAD ",\"draining\":null}", "draining must be a boolean, not null"},
    };
    for (size_t i = 0; i < PW_ARRAY_LEN(cases); i++)
        decode_err(cases[i].json, PW_ERR_PROTO, cases[i].want);
}

static void test_missing_required(void **state)
{
    static const struct {
        const char *json, *want;
    } cases[] = {
        {"{\"v\":1,\"type\":\"hello\",\"boot_id\":\"b\"," NUMA0 "}", "hello: missing field agent_id"},
        {"{\"v\":1,\"type\":\"hello\",\"agent_id\":\"a\"," NUMA0 "}", "hello: missing field boot_id"},
        {HELLO_HEAD ",\"numa\":[{\"ncpus\":4}]}", "hello.numa[0]: missing field id"},
        {"{\"v\":1,\"type\":\"report\",\"agent_id\":\"a\",\"boot_id\":\"b\"}", "report: missing field seq"},
        {"{\"v\":1,\"type\":\"report\",\"seq\":\"1\",\"boot_id\":\"b\"}", "report: missing field agent_id"},
        {"{\"v\":1,\"type\":\"report\",\"seq\":\"1\",\"agent_id\":\"a\"}", "report: missing field boot_id"},
        {REPORT_HEAD ",\"vms\":[" VM0 ",{\"vm_id\":\"1\",\"state\":\"running\"}]}", "report.vms[1]: missing field function"},
        {REPORT_HEAD ",\"vms\":[{\"function\":\"f\",\"state\":\"running\"}]}", "missing field vm_id"},
        {REPORT_HEAD ",\"vms\":[{\"vm_id\":\"1\",\"function\":\"f\"}]}", "missing field state"},
        {REPORT_HEAD ",\"events\":[{\"vm_id\":\"1\",\"state\":\"gone\"}]}", "report.events[0]: missing field seq"},
        {REPORT_HEAD ",\"events\":[{\"seq\":\"1\",\"state\":\"gone\"}]}", "missing field vm_id"},
        {REPORT_HEAD ",\"events\":[{\"seq\":\"1\",\"vm_id\":\"1\"}]}", "missing field state"},
        {"{\"v\":1,\"type\":\"reply\",\"event_ack\":\"0\",\"heartbeat_ms\":1}", "reply: missing field epoch"},
        {"{\"v\":1,\"type\":\"reply\",\"epoch\":\"0\",\"heartbeat_ms\":1}", "reply: missing field event_ack"},
        {"{\"v\":1,\"type\":\"reply\",\"epoch\":\"0\",\"event_ack\":\"0\"}", "reply: missing field heartbeat_ms"},
        {REPLY_HEAD ",\"cmds\":[{\"type\":\"destroy\",\"vm_id\":\"1\"}]}", "reply.cmds[0]: missing field id"},
        {REPLY_HEAD ",\"cmds\":[{\"id\":\"1\",\"vm_id\":\"1\"}]}", "missing field type"},
        {REPLY_HEAD ",\"cmds\":[{\"id\":\"1\",\"type\":\"destroy\"}]}", "missing field vm_id"},
        {"{\"v\":1,\"type\":\"error\",\"message\":\"m\"}", "error: missing field code"},
    };
    for (size_t i = 0; i < PW_ARRAY_LEN(cases); i++)
        decode_err(cases[i].json, PW_ERR_PROTO, cases[i].want);
}

static void test_invalid_names(void **state)
{
    static const struct {
        const char *json, *want;
    } cases[] = {
        {"{\"v\":1,\"type\":\"hello\",\"agent_id\":\"\",\"boot_id\":\"b\"," NUMA0 "}", "agent_id \"\" is not a valid name"},
        {"{\"v\":1,\"type\":\"hello\",\"agent_id\":\"-a\",\"boot_id\":\"b\"," NUMA0 "}", "agent_id \"-a\" is not a valid name"},
        {"{\"v\":1,\"type\":\"hello\",\"agent_id\":\"a b\",\"boot_id\":\"b\"," NUMA0 "}", "not a valid name"},
        {"{\"v\":1,\"type\":\"hello\",\"agent_id\":\"a\",\"boot_id\":\"b/../c\"," NUMA0 "}", "boot_id"},
        {"{\"v\":1,\"type\":\"report\",\"agent_id\":\"a\\n\",\"boot_id\":\"b\",\"seq\":\"1\"}", "agent_id \"a?\" is not"},
        {HELLO_HEAD "," NUMA0 ",\"labels\":{\"bad key\":\"v\"}}", "labels key \"bad key\" is not a valid name"},
        {HELLO_HEAD "," NUMA0 ",\"labels\":{\"\":\"v\"}}", "labels key"},
        {REPORT_HEAD ",\"vms\":[{\"vm_id\":\"1\",\"function\":\"f/x\",\"state\":\"running\"}]}", "function \"f/x\""},
        {REPORT_HEAD ",\"events\":[{\"seq\":\"1\",\"vm_id\":\"1\",\"state\":\"gone\",\"function\":\".f\"}]}", "function"},
        {REPLY_HEAD ",\"cmds\":[{\"id\":\"1\",\"type\":\"prewarm\",\"vm_id\":\"1\",\"function\":\"\xc3\xa9\"}]}", "function"},
        {"{\"v\":1,\"type\":\"error\",\"code\":\"re hello\"}", "code"},
        {HELLO_HEAD "," NUMA0 ",\"snapshots\":[\"fn-a\",\"bad name\"]}", "hello: snapshots[1] \"bad name\" is not a valid name"},
        {HELLO_HEAD "," NUMA0 ",\"snapshots\":[\"\"]}", "snapshots[0] \"\" is not a valid name"},
        {REPORT_HEAD ",\"snapshots\":[\"_x\"]}", "report: snapshots[0] \"_x\" is not a valid name"},
        {REPORT_HEAD ",\"snapshots\":[\"../etc\"]}", "snapshots[0]"},
        {REPORT_HEAD ",\"snapshots\":[\"x1234567890123456789012345678901234567890123456789012345678901234\"]}",
         "report: snapshots[0] longer than 63 bytes"},
    };
    for (size_t i = 0; i < PW_ARRAY_LEN(cases); i++)
        decode_err(cases[i].json, PW_ERR_PROTO, cases[i].want);

    /* Optional names may be empty (an event without a function). */
    struct pw_msg m;
    decode_ok(REPORT_HEAD ",\"events\":[{\"seq\":\"1\",\"vm_id\":\"1\",\"state\":\"gone\",\"function\":\"\"}]}", &m);
    assert_string_equal(m.u.report.events[0].function, "");
    pw_msg_fini(&m);

    /* The encoder refuses invalid names and duplicate label keys. */
    struct pw_buf b;
    pw_buf_init(&b, PW_PROTO_MAX_MSG);
    make_hello(&m, 2);
    pw_strlcpy(m.u.hello.vms[1].function, "no spaces", sizeof(m.u.hello.vms[1].function));
    assert_int_equal(pw_proto_encode(&m, &b), PW_ERR_INVAL);
    pw_msg_fini(&m);
    make_hello(&m, 0);
    pw_strlcpy(m.u.hello.labels[1].key, "zone", sizeof(m.u.hello.labels[1].key));
    assert_int_equal(pw_proto_encode(&m, &b), PW_ERR_INVAL);
    pw_msg_fini(&m);
    make_hello(&m, 0);
    m.u.hello.agent_id[0] = '\0';
    assert_int_equal(pw_proto_encode(&m, &b), PW_ERR_INVAL);
    pw_msg_fini(&m);
    make_reply(&m, 1);
    m.u.reply.cmds[0].function[0] = '\0'; /* prewarm without a function */
    assert_int_equal(pw_proto_encode(&m, &b), PW_ERR_INVAL);
    pw_msg_fini(&m);
    /* Snapshot names: invalid, empty, unterminated, or a count without an array. */
    make_hello(&m, 0);
    pw_strlcpy(m.u.hello.snapshots[1], "a/b", sizeof(m.u.hello.snapshots[1]));
    assert_int_equal(pw_proto_encode(&m, &b), PW_ERR_INVAL);
    m.u.hello.snapshots[1][0] = '\0';
    assert_int_equal(pw_proto_encode(&m, &b), PW_ERR_INVAL);
    memset(m.u.hello.snapshots[1], 'a', sizeof(m.u.hello.snapshots[1]));
    assert_int_equal(pw_proto_encode(&m, &b), PW_ERR_INVAL);
    pw_msg_fini(&m);
    make_report(&m, 0, 0);
    free(m.u.report.snapshots);
    m.u.report.snapshots = NULL;
    assert_int_equal(pw_proto_encode(&m, &b), PW_ERR_INVAL);
    pw_msg_fini(&m);
    assert_int_equal(b.len, 0);
    pw_buf_fini(&b);
}

static void test_numbers(void **state)
{
    static const struct {
        const char *json, *want;
    } cases[] = {
        {REPLY_HEAD ",\"cmds\":[{\"id\":\"1\",\"type\":\"destroy\",\"vm_id\":\"1\",\"memory_mb\":1.5}]}", "memory_mb 1.5 is not an integer"},
        {REPLY_HEAD ",\"cmds\":[{\"id\":\"1\",\"type\":\"destroy\",\"vm_id\":\"1\",\"vcpus\":-1}]}", "vcpus -1 out of range [0, 4294967295]"},
        {REPLY_HEAD ",\"cmds\":[{\"id\":\"1\",\"type\":\"destroy\",\"vm_id\":\"1\",\"memory_mb\":4294967296}]}", "memory_mb 4.29497e+09 out of range"},
        {REPLY_HEAD ",\"cmds\":[{\"id\":\"1\",\"type\":\"destroy\",\"vm_id\":\"1\",\"numa_node\":-2}]}", "numa_node -2 out of range"},
        {REPLY_HEAD ",\"cmds\":[{\"id\":\"1\",\"type\":\"lease\",\"vm_id\":\"1\",\"lease_ttl_ms\":-5}]}", "lease_ttl_ms -5 out of range"},
        {"{\"v\":1,\"type\":\"reply\",\"epoch\":\"1\",\"event_ack\":\"0\",\"heartbeat_ms\":1e30}", "heartbeat_ms 1e+30 out of range"},
        {"{\"v\":1,\"type\":\"reply\",\"epoch\":\"1\",\"event_ack\":\"0\",\"heartbeat_ms\":-1}", "heartbeat_ms -1 out of range"},
        {"{\"v\":1,\"type\":\"reply\",\"epoch\":\"1\",\"event_ack\":\"0\",\"heartbeat_ms\":2147483648}", "out of range"},
        {"{\"v\":1,\"type\":\"reply\",\"epoch\":\"1\",\"event_ack\":\"0\",\"heartbeat_ms\":0.000001}", "not an integer"},
        {HELLO_HEAD ",\"numa\":[{\"id\":-1}]}", "id -1 out of range"},
        {HELLO_HEAD ",\"numa\":[{\"id\":0,\"mem_total_mb\":9007199254740994}]}", "mem_total_mb 9.0072e+15 out of range"},
        {HELLO_HEAD ",\"numa\":[{\"id\":0,\"ncpus\":-3}]}", "ncpus -3 out of range"},
        {REPORT_HEAD ",\"vms\":[{\"vm_id\":\"1\",\"function\":\"f\",\"state\":\"running\",\"lease_left_ms\":-1e16}]}", "lease_left_ms"},
        {REPORT_HEAD ",\"events\":[{\"seq\":\"1\",\"vm_id\":\"1\",\"state\":\"running\",\"restore_ms\":-1}]}", "restore_ms -1 out of range"},
        {REPORT_HEAD ",\"load\":-0.5}", "load out of range"},
        {REPORT_HEAD ",\"load\":1e999}", "load out of range"},
    };
    for (size_t i = 0; i < PW_ARRAY_LEN(cases); i++)
        decode_err(cases[i].json, PW_ERR_PROTO, cases[i].want);

    /* Limits themselves are accepted; "-0" is zero. */
    struct pw_msg m;
    decode_ok(REPORT_HEAD ",\"load\":-0,\"vms\":[{\"vm_id\":\"1\",\"function\":\"f\",\"state\":\"running\","
                          "\"lease_left_ms\":-9007199254740992,\"numa_node\":-0.0}]}",
              &m);
    assert_int_equal(m.u.report.vms[0].lease_left_ms, -9007199254740992LL);
    assert_int_equal(m.u.report.vms[0].numa_node, 0);
    assert_true(m.u.report.load == 0);
    assert_int_equal(m.u.report.has_inventory, 1);
    pw_msg_fini(&m);

    /* The encoder refuses values the decoder would refuse. */
    struct pw_buf b;
    pw_buf_init(&b, PW_PROTO_MAX_MSG);
    make_hello(&m, 1);
    m.u.hello.numa[0].mem_total_mb = (UINT64_C(1) << 53) + 1;
    assert_int_equal(pw_proto_encode(&m, &b), PW_ERR_INVAL);
    m.u.hello.numa[0].mem_total_mb = 1;
    m.u.hello.vms[0].numa_node = -2;
    assert_int_equal(pw_proto_encode(&m, &b), PW_ERR_INVAL);
    m.u.hello.vms[0].numa_node = 0;
    m.u.hello.vms[0].state = PW_AVM__COUNT;
    assert_int_equal(pw_proto_encode(&m, &b), PW_ERR_INVAL);
    m.u.hello.vms[0].state = PW_AVM_GONE;
    assert_int_equal(pw_proto_encode(&m, &b), PW_OK);
    pw_msg_fini(&m);
    make_report(&m, 0, 0);
    m.u.report.load = INFINITY;
    pw_buf_reset(&b);
    assert_int_equal(pw_proto_encode(&m, &b), PW_ERR_INVAL);
    assert_int_equal(b.len, 0);
    pw_msg_fini(&m);
    make_reply(&m, 1);
    m.u.reply.cmds[0].type = PW_CMD__COUNT;
    assert_int_equal(pw_proto_encode(&m, &b), PW_ERR_INVAL);
    m.u.reply.cmds[0].type = PW_CMD_LEASE;
    m.u.reply.cmds[0].lease_ttl_ms = -1;
    assert_int_equal(pw_proto_encode(&m, &b), PW_ERR_INVAL);
    pw_msg_fini(&m);
    m.type = PW_MSG__COUNT;
    assert_int_equal(pw_proto_encode(&m, &b), PW_ERR_INVAL);
    assert_int_equal(b.len, 0);
    pw_buf_fini(&b);
}

static void test_duplicates(void **state)
{
    /* A known field given twice is refused at any level; unknown fields are ignored. */
    decode_err(HELLO_HEAD ",\"agent_id\":\"a2\"," NUMA0 "}", PW_ERR_PROTO, "hello: duplicate field agent_id");
    decode_err("{\"v\":1,\"type\":\"error\",\"type\":\"error\",\"code\":\"c\"}", PW_ERR_PROTO, "duplicate field type");
    decode_err(HELLO_HEAD "," NUMA0 "," NUMA0 "}", PW_ERR_PROTO, "duplicate field numa");
    decode_err(HELLO_HEAD ",\"numa\":[{\"id\":0,\"id\":1}]}", PW_ERR_PROTO, "hello.numa[0]: duplicate field id");
    decode_err(HELLO_HEAD "," NUMA0 ",\"labels\":{\"k\":\"1\",\"k\":\"2\"}}", PW_ERR_PROTO, "duplicate labels key \"k\"");
    decode_err(REPLY_HEAD ",\"want_inventory\":true,\"want_inventory\":false}", PW_ERR_PROTO, "duplicate field want_inventory");
    decode_err(REPORT_HEAD ",\"snapshots\":[],\"snapshots\":[\"a\"]}", PW_ERR_PROTO, "report: duplicate field snapshots");
    decode_err(HELLO_HEAD "," NUMA0 ",\"draining\":true,\"draining\":true}", PW_ERR_PROTO, "hello: duplicate field draining");

    struct pw_msg m;
    decode_ok("{\"v\":1,\"type\":\"error\",\"code\":\"c\",\"extra\":1,\"extra\":{\"a\":[]}}", &m);
    assert_string_equal(m.u.error.code, "c");
    assert_string_equal(m.u.error.message, "");
    pw_msg_fini(&m);
    /* Duplicates within ids of a list are the protocol's business, not the codec's. */
    decode_ok(REPORT_HEAD ",\"events\":[" EV0 "," EV0 "]}", &m);
    assert_int_equal(m.u.report.nevents, 2);
    pw_msg_fini(&m);
}

static void test_errors_leave_msg_empty(void **state)
{
    /* Fail deep inside the last array after earlier arrays were allocated: nothing leaks (the
     * test runs under ASan/valgrind) and m is zeroed. */
    decode_err(HELLO_HEAD ",\"labels\":{\"a\":\"b\"},\"numa\":[{\"id\":0},{\"id\":1}],\"vms\":[" VM0 ","
                          "{\"vm_id\":\"2\",\"function\":\"f\",\"state\":\"running\",\"vcpus\":0.5}]}",
               PW_ERR_PROTO, "hello.vms[1]: vcpus 0.5 is not an integer");
    decode_err(REPORT_HEAD ",\"numa\":[{\"id\":0}],\"events\":[" EV0 "],\"vms\":[" VM0 "],\"load\":\"x\"}",
               PW_ERR_PROTO, "load");
    decode_err(REPLY_HEAD ",\"cmds\":[" CMD0 "," CMD0 ",7]}", PW_ERR_PROTO, "reply.cmds[2]");
    decode_err(REPORT_HEAD ",\"numa\":[{\"id\":0}],\"vms\":[" VM0 "],\"snapshots\":[\"a\",\"b\",\"c d\"]}",
               PW_ERR_PROTO, "report: snapshots[2]");
    decode_err(HELLO_HEAD "," NUMA0 ",\"snapshots\":[\"a\",\"b\"],\"draining\":0}", PW_ERR_PROTO, "draining");

    /* fini is safe on zeroed and on already finished messages. */
    struct pw_msg m;
    memset(&m, 0, sizeof(m));
    pw_msg_fini(&m);
    make_report(&m, 2, 2);
    pw_msg_fini(&m);
    assert_int_equal(m.type, PW_MSG_REPORT);
    assert_null(m.u.report.events);
    assert_int_equal(m.u.report.nevents, 0);
    pw_msg_fini(&m);
}

static void test_enum_strings(void **state)
{
    assert_string_equal(pw_avm_state_str(PW_AVM_RESTORING), "restoring");
    assert_string_equal(pw_avm_state_str(PW_AVM_FAILED), "failed");
    assert_string_equal(pw_avm_state_str(PW_AVM__COUNT), "unknown");
    for (int s = 0; s < PW_AVM__COUNT; s++)
        assert_int_equal(pw_avm_state_parse(pw_avm_state_str((enum pw_avm_state)s)), s);
    assert_int_equal(pw_avm_state_parse("idle"), -1);
    assert_int_equal(pw_avm_state_parse(NULL), -1);
    assert_string_equal(pw_cmd_type_str(PW_CMD_UNLEASE), "unlease");
    assert_string_equal(pw_cmd_type_str((enum pw_cmd_type)-1), "unknown");
    assert_string_equal(pw_msg_type_str(PW_MSG_REPORT), "report");
    assert_string_equal(pw_msg_type_str(PW_MSG__COUNT), "unknown");

    struct pw_msg m;
    memset(&m, 0xff, sizeof(m));
    pw_msg_init(&m, PW_MSG_REPLY);
    assert_int_equal(m.type, PW_MSG_REPLY);
    assert_null(m.u.reply.cmds);
    assert_int_equal(m.u.reply.ncmds, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_hello),
        cmocka_unit_test(test_roundtrip_report),
        cmocka_unit_test(test_roundtrip_reply),
        cmocka_unit_test(test_roundtrip_error),
        cmocka_unit_test(test_roundtrip_minimal),
        cmocka_unit_test(test_roundtrip_max_counts),
        cmocka_unit_test(test_json_shape),
        cmocka_unit_test(test_decode_optional_present),
        cmocka_unit_test(test_snapshots_and_draining),
        cmocka_unit_test(test_big_ids),
        cmocka_unit_test(test_count_bounds),
        cmocka_unit_test(test_hello_needs_numa),
        cmocka_unit_test(test_string_bounds),
        cmocka_unit_test(test_message_size),
        cmocka_unit_test(test_malformed_json),
        cmocka_unit_test(test_version),
        cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_missing_required),
        cmocka_unit_test(test_invalid_names),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_duplicates),
        cmocka_unit_test(test_errors_leave_msg_empty),
        cmocka_unit_test(test_enum_strings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
