/* test_core.c — the pure core driven with a fake clock and simulated agents.
 *
 * The simulated agent here is a few lines of test code: it takes the commands the core queued
 * for it, turns PREWARM into a RUNNING event and DESTROY into GONE, and reports them back with
 * its command acknowledgement, as the real agent does over NNG. */
#include "pw/core.h"
#include "pw/error.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define MAX_ACTS 4096
#define MAX_AGENTS 4
#define MAX_PENDING 256

struct sim_agent {
    char id[PW_NAME_MAX];
    char boot[PW_NAME_MAX];
    uint64_t epoch, cmd_ack, event_seq;
    struct pw_agent_event events[MAX_PENDING]; /* unacknowledged */
    size_t nevents;
    struct pw_vm_info vms[MAX_PENDING];
    size_t nvms;
    uint32_t node_mem_mb;
    size_t nnodes;
    struct pw_label labels[4];
    size_t nlabels;
    int draining;
};

struct env {
    struct pw_core *c;
    int64_t now;
    struct pw_action acts[MAX_ACTS];
    size_t nacts;
    struct sim_agent agents[MAX_AGENTS];
    size_t nagents;
};

static void drain(struct env *e)
{
    struct pw_action a;
    while (pw_core_next_action(e->c, &a)) {
        assert_true(e->nacts < MAX_ACTS);
        e->acts[e->nacts++] = a;
    }
}

static void check(struct env *e)
{
    char err[256] = "";
    int rv = pw_core_check(e->c, err, sizeof(err));
    if (rv != PW_OK)
        fail_msg("core invariant violated: %s", err);
}

static struct env *env_new(uint64_t epoch, int64_t grace_ms)
{
    struct env *e = calloc(1, sizeof(*e));
    struct pw_core_config cfg;
    pw_core_config_default(&cfg);
    cfg.epoch = epoch;
    cfg.id_base = epoch << 40;
    cfg.heartbeat_ms = 1000;
    cfg.lease_ttl_ms = 30000;
    cfg.adopt_grace_ms = grace_ms;
    cfg.max_waiters_per_fn = 4;
    e->now = 1000000;
    e->c = pw_core_new(&cfg, e->now);
    return e;
}

static void env_free(struct env *e)
{
    check(e);
    pw_core_free(e->c);
    free(e);
}

static size_t count_acts(struct env *e, enum pw_act_type type, int cmd_type)
{
    size_t n = 0;
    for (size_t i = 0; i < e->nacts; i++)
        if (e->acts[i].type == type && (cmd_type < 0 || e->acts[i].u.cmd.type == (enum pw_cmd_type)cmd_type))
            n++;
    return n;
}

static size_t count_metric(struct env *e, enum pw_metric_id id)
{
    size_t n = 0;
    for (size_t i = 0; i < e->nacts; i++)
        if (e->acts[i].type == PW_ACT_METRIC && e->acts[i].u.metric.id == id)
            n += e->acts[i].u.metric.count;
    return n;
}

static const struct pw_action *find_answer(struct env *e, uint64_t req_id)
{
    for (size_t i = 0; i < e->nacts; i++)
        if (e->acts[i].type == PW_ACT_ACQUIRE_ANSWER && e->acts[i].u.answer.req_id == req_id)
            return &e->acts[i];
    return NULL;
}

static struct sim_agent *agent(struct env *e, const char *id)
{
    for (size_t i = 0; i < e->nagents; i++)
        if (strcmp(e->agents[i].id, id) == 0)
            return &e->agents[i];
    return NULL;
}

static void fill_numa(struct sim_agent *a, struct pw_numa_node *numa)
{
    for (size_t i = 0; i < a->nnodes; i++) {
        memset(&numa[i], 0, sizeof(numa[i]));
        numa[i].id = (int32_t)i;
        snprintf(numa[i].cpulist, sizeof(numa[i].cpulist), "%zu-%zu", i * 4, i * 4 + 3);
        numa[i].ncpus = 4;
        numa[i].mem_total_mb = a->node_mem_mb;
        numa[i].mem_free_mb = a->node_mem_mb;
        numa[i].vcpu_total = 64;
        numa[i].vcpu_free = 64;
    }
}

/* hello from agent id (created on first use) with its current inventory. */
static int do_hello(struct env *e, const char *id, size_t nnodes, uint32_t node_mem_mb)
{
    struct sim_agent *a = agent(e, id);
    if (a == NULL) {
        a = &e->agents[e->nagents++];
        memset(a, 0, sizeof(*a));
        pw_strlcpy(a->id, id, sizeof(a->id));
        snprintf(a->boot, sizeof(a->boot), "boot-%s-1", id);
        a->nnodes = nnodes;
        a->node_mem_mb = node_mem_mb;
    }
    struct pw_numa_node numa[8];
    fill_numa(a, numa);
    struct pw_msg_hello h;
    memset(&h, 0, sizeof(h));
    pw_strlcpy(h.agent_id, a->id, sizeof(h.agent_id));
    pw_strlcpy(h.boot_id, a->boot, sizeof(h.boot_id));
    pw_strlcpy(h.driver, "sim", sizeof(h.driver));
    h.epoch = a->epoch;
    h.cmd_ack = a->cmd_ack;
    h.event_seq = a->event_seq;
    h.numa = numa;
    h.nnuma = a->nnodes;
    h.vms = a->vms;
    h.nvms = a->nvms;
    h.labels = a->labels;
    h.nlabels = a->nlabels;
    h.draining = a->draining;
    struct pw_msg reply;
    memset(&reply, 0, sizeof(reply));
    int rv = pw_core_agent_hello(e->c, e->now, &h, &reply);
    if (rv == PW_OK) {
        assert_int_equal(reply.type, PW_MSG_REPLY);
        a->nevents = 0; /* folded into the inventory */
        if (reply.u.reply.epoch > a->epoch) {
            a->epoch = reply.u.reply.epoch;
            a->cmd_ack = 0;
        }
    }
    pw_msg_fini(&reply);
    drain(e);
    check(e);
    return rv;
}

static void add_event(struct sim_agent *a, uint64_t vm_id, enum pw_avm_state st, const char *fn)
{
    assert_true(a->nevents < MAX_PENDING);
    struct pw_agent_event *ev = &a->events[a->nevents++];
    memset(ev, 0, sizeof(*ev));
    ev->seq = ++a->event_seq;
    ev->vm_id = vm_id;
    ev->state = st;
    pw_strlcpy(ev->function, fn, sizeof(ev->function));
    ev->restore_ms = 42;
    snprintf(ev->address, sizeof(ev->address), "10.0.0.1:%u", (unsigned)(vm_id & 0xffff));
}

static struct pw_vm_info *inv_find(struct sim_agent *a, uint64_t vm_id)
{
    for (size_t i = 0; i < a->nvms; i++)
        if (a->vms[i].vm_id == vm_id)
            return &a->vms[i];
    return NULL;
}

static void inv_remove(struct sim_agent *a, uint64_t vm_id)
{
    for (size_t i = 0; i < a->nvms; i++)
        if (a->vms[i].vm_id == vm_id) {
            a->vms[i] = a->vms[--a->nvms];
            return;
        }
}

/* report sends pending events; returns the reply (caller frees) with commands. */
static struct pw_msg report(struct env *e, struct sim_agent *a)
{
    struct pw_msg_report r;
    memset(&r, 0, sizeof(r));
    pw_strlcpy(r.agent_id, a->id, sizeof(r.agent_id));
    pw_strlcpy(r.boot_id, a->boot, sizeof(r.boot_id));
    r.epoch = a->epoch;
    r.cmd_ack = a->cmd_ack;
    r.events = a->events;
    r.nevents = a->nevents;
    r.draining = a->draining;
    struct pw_msg reply;
    memset(&reply, 0, sizeof(reply));
    assert_int_equal(pw_core_agent_report(e->c, e->now, &r, &reply), PW_OK);
    if (reply.type == PW_MSG_REPLY) {
        /* Drop acknowledged events. */
        size_t k = 0;
        for (size_t i = 0; i < a->nevents; i++)
            if (a->events[i].seq > reply.u.reply.event_ack)
                a->events[k++] = a->events[i];
        a->nevents = k;
    }
    drain(e);
    check(e);
    return reply;
}

/* exec_cmds runs the reply's new commands like an agent: PREWARM starts a restore (RUNNING at
 * once when run_now), DESTROY removes the VM. */
static void exec_cmds(struct sim_agent *a, const struct pw_msg *reply, int run_now)
{
    if (reply->type != PW_MSG_REPLY)
        return;
    const struct pw_msg_reply *r = &reply->u.reply;
    if (r->epoch > a->epoch) {
        a->epoch = r->epoch;
        a->cmd_ack = 0;
    }
    for (size_t i = 0; i < r->ncmds; i++) {
        const struct pw_cmd *cmd = &r->cmds[i];
        if (cmd->id <= a->cmd_ack)
            continue; /* dedupe */
        a->cmd_ack = cmd->id;
        if (cmd->type == PW_CMD_PREWARM) {
            struct pw_vm_info *vi = &a->vms[a->nvms++];
            memset(vi, 0, sizeof(*vi));
            vi->vm_id = cmd->vm_id;
            pw_strlcpy(vi->function, cmd->function, sizeof(vi->function));
            vi->state = run_now ? PW_AVM_RUNNING : PW_AVM_RESTORING;
            vi->numa_node = cmd->numa_node;
            vi->memory_mb = cmd->memory_mb;
            vi->vcpus = cmd->vcpus;
            if (run_now)
                add_event(a, cmd->vm_id, PW_AVM_RUNNING, cmd->function);
        } else if (cmd->type == PW_CMD_DESTROY) {
            inv_remove(a, cmd->vm_id);
            add_event(a, cmd->vm_id, PW_AVM_GONE, cmd->function);
        } else if (cmd->type == PW_CMD_LEASE) {
            struct pw_vm_info *vi = inv_find(a, cmd->vm_id);
            if (vi != NULL) {
                vi->lease_id = cmd->lease_id;
                vi->lease_left_ms = cmd->lease_ttl_ms;
            }
        } else if (cmd->type == PW_CMD_UNLEASE) {
            struct pw_vm_info *vi = inv_find(a, cmd->vm_id);
            if (vi != NULL)
                vi->lease_id = 0;
        }
    }
}

/* sync: report/execute rounds until the agent has nothing left to say. */
static void sync_agent(struct env *e, const char *id, int run_now)
{
    struct sim_agent *a = agent(e, id);
    for (int round = 0; round < 8; round++) {
        struct pw_msg reply = report(e, a);
        exec_cmds(a, &reply, run_now);
        pw_msg_fini(&reply);
        if (a->nevents == 0)
            break;
    }
}

static void sync_all(struct env *e)
{
    for (int i = 0; i < 3; i++)
        for (size_t k = 0; k < e->nagents; k++)
            sync_agent(e, e->agents[k].id, 1);
}

/* finish_restores turns every RESTORING VM of agent a into RUNNING and reports it. */
static void finish_restores(struct env *e, const char *id)
{
    struct sim_agent *a = agent(e, id);
    for (size_t i = 0; i < a->nvms; i++) {
        if (a->vms[i].state == PW_AVM_RESTORING) {
            a->vms[i].state = PW_AVM_RUNNING;
            add_event(a, a->vms[i].vm_id, PW_AVM_RUNNING, a->vms[i].function);
        }
    }
    sync_agent(e, id, 1);
}

static void put_fn(struct env *e, const char *name, enum pw_policy_kind kind, uint32_t min, uint32_t max,
                   int64_t keepalive_ms, uint32_t mem)
{
    struct pw_function_spec s;
    memset(&s, 0, sizeof(s));
    pw_strlcpy(s.name, name, sizeof(s.name));
    pw_strlcpy(s.image, "img", sizeof(s.image));
    s.memory_mb = mem;
    s.vcpus = 1;
    s.pool.kind = kind;
    s.pool.min = min;
    s.pool.max = max;
    s.pool.keepalive_ms = keepalive_ms;
    s.pool.quantile = 0.99;
    assert_int_equal(pw_core_function_put(e->c, e->now, &s), PW_OK);
    drain(e);
    check(e);
}

static struct pw_pool_view pool(struct env *e, const char *fn)
{
    struct pw_pool_view v;
    assert_int_equal(pw_core_pool_view(e->c, fn, &v), PW_OK);
    return v;
}

static void tick(struct env *e, int64_t advance)
{
    e->now += advance;
    pw_core_tick(e->c, e->now);
    drain(e);
    check(e);
}

/* Keep every agent alive across a long advance: report each heartbeat. */
static void advance_alive(struct env *e, int64_t ms)
{
    while (ms > 0) {
        int64_t step = ms < 500 ? ms : 500;
        e->now += step;
        ms -= step;
        for (size_t k = 0; k < e->nagents; k++) {
            struct pw_msg r = report(e, &e->agents[k]);
            exec_cmds(&e->agents[k], &r, 1);
            pw_msg_fini(&r);
        }
        pw_core_tick(e->c, e->now);
        drain(e);
        check(e);
    }
    sync_all(e);
}

/* hello_labeled says hello from a new agent with a zone and a price. */
static void hello_labeled(struct env *e, const char *id, uint32_t node_mem_mb, const char *zone, const char *cost)
{
    struct sim_agent *a = &e->agents[e->nagents++];
    memset(a, 0, sizeof(*a));
    pw_strlcpy(a->id, id, sizeof(a->id));
    snprintf(a->boot, sizeof(a->boot), "boot-%s-1", id);
    a->nnodes = 1;
    a->node_mem_mb = node_mem_mb;
    pw_strlcpy(a->labels[0].key, PW_LABEL_ZONE, sizeof(a->labels[0].key));
    pw_strlcpy(a->labels[0].value, zone, sizeof(a->labels[0].value));
    pw_strlcpy(a->labels[1].key, PW_LABEL_COST, sizeof(a->labels[1].key));
    pw_strlcpy(a->labels[1].value, cost, sizeof(a->labels[1].value));
    a->nlabels = 2;
    assert_int_equal(do_hello(e, id, 1, node_mem_mb), PW_OK);
}

static uint32_t host_vms(struct env *e, const char *id)
{
    struct pw_host_view *v = malloc(sizeof(*v));
    assert_int_equal(pw_core_host_find(e->c, id, v), PW_OK);
    uint32_t n = v->vms;
    free(v);
    return n;
}

/* spread_spec fills a fixed pool of `min` VMs of 512 MiB with spread limits. */
static void spread_spec(struct pw_function_spec *s, uint32_t min, double host_share, double zone_share)
{
    memset(s, 0, sizeof(*s));
    pw_strlcpy(s->name, "f", sizeof(s->name));
    s->memory_mb = 512;
    s->vcpus = 1;
    pw_pool_policy_default(&s->pool);
    s->pool.min = min;
    s->placement.max_host_share = host_share;
    s->placement.max_zone_share = zone_share;
}

/* ---- tests ---- */

static void test_spec_validation(void **state)
{
    (void)state;
    struct pw_function_spec s;
    memset(&s, 0, sizeof(s));
    pw_strlcpy(s.name, "fn-1", sizeof(s.name));
    s.memory_mb = 128;
    s.vcpus = 1;
    pw_pool_policy_default(&s.pool);
    char err[128];
    assert_int_equal(pw_function_spec_validate(&s, err, sizeof(err)), PW_OK);
    s.pool.min = 5;
    s.pool.max = 4;
    assert_int_equal(pw_function_spec_validate(&s, err, sizeof(err)), PW_ERR_INVAL);
    assert_non_null(strstr(err, "min"));
    s.pool.min = 0;
    s.pool.max = 0;
    assert_int_equal(pw_function_spec_validate(&s, err, sizeof(err)), PW_ERR_INVAL);
    s.pool.max = PW_POOL_HARD_MAX + 1;
    assert_int_equal(pw_function_spec_validate(&s, err, sizeof(err)), PW_ERR_INVAL);
    s.pool.max = 10;
    s.memory_mb = 0;
    assert_int_equal(pw_function_spec_validate(&s, err, sizeof(err)), PW_ERR_INVAL);
    s.memory_mb = 128;
    pw_strlcpy(s.name, "-bad", sizeof(s.name));
    assert_int_equal(pw_function_spec_validate(&s, err, sizeof(err)), PW_ERR_INVAL);
    pw_strlcpy(s.name, "bad/name", sizeof(s.name));
    assert_int_equal(pw_function_spec_validate(&s, err, sizeof(err)), PW_ERR_INVAL);
    pw_strlcpy(s.name, "ok", sizeof(s.name));
    s.pool.keepalive_ms = -1;
    assert_int_equal(pw_function_spec_validate(&s, err, sizeof(err)), PW_ERR_INVAL);
    assert_int_equal(pw_policy_parse("fixed"), PW_POLICY_FIXED);
    assert_int_equal(pw_policy_parse("keepalive"), PW_POLICY_KEEPALIVE);
    assert_int_equal(pw_policy_parse("nope"), -1);
}

/* fixed min=3: three restores, then three idle VMs (restoring -> idle). */
static void test_fixed_pool_fills(void **state)
{
    (void)state;
    struct env *e = env_new(1, 0);
    do_hello(e, "h1", 2, 4096);
    put_fn(e, "f", PW_POLICY_FIXED, 3, 10, 60000, 256);
    assert_int_equal(count_acts(e, PW_ACT_AGENT_CMD, PW_CMD_PREWARM), 3);
    struct pw_pool_view v = pool(e, "f");
    assert_int_equal(v.restoring, 3);
    assert_int_equal(v.idle, 0);
    assert_true(pw_core_agent_has_cmds(e->c, "h1"));
    sync_agent(e, "h1", 0);
    struct pw_msg r = report(e, agent(e, "h1")); /* carries the acknowledgement */
    assert_int_equal(r.u.reply.ncmds, 0);
    pw_msg_fini(&r);
    assert_false(pw_core_agent_has_cmds(e->c, "h1"));
    finish_restores(e, "h1");
    v = pool(e, "f");
    assert_int_equal(v.restoring, 0);
    assert_int_equal(v.idle, 3);
    assert_int_equal(v.target_idle, 3);
    assert_int_equal(count_metric(e, PW_METRIC_RESTORE_DONE), 3);
    assert_int_equal(count_metric(e, PW_METRIC_COLD_START), 0);
    env_free(e);
}

/* idle -> leased -> idle, warm, and the fixed pool replaces the leased VM. */
static void test_acquire_warm_release(void **state)
{
    (void)state;
    struct env *e = env_new(1, 0);
    do_hello(e, "h1", 1, 4096);
    put_fn(e, "f", PW_POLICY_FIXED, 2, 10, 60000, 128);
    sync_all(e);
    assert_int_equal(pool(e, "f").idle, 2);
    e->nacts = 0;
    assert_int_equal(pw_core_acquire(e->c, e->now, "f", 7, e->now + 5000), PW_OK);
    drain(e);
    const struct pw_action *a = find_answer(e, 7);
    assert_non_null(a);
    assert_int_equal(a->u.answer.err, PW_OK);
    assert_int_equal(a->u.answer.lease.cold, 0);
    assert_int_equal(a->u.answer.lease.wait_ms, 0);
    assert_string_equal(a->u.answer.lease.host, "h1");
    assert_true(a->u.answer.lease.address[0] != '\0');
    assert_int_equal(a->u.answer.lease.expires_at, e->now + 30000);
    assert_int_equal(count_acts(e, PW_ACT_STORE_INVOCATION, -1), 1);
    assert_int_equal(count_metric(e, PW_METRIC_ACQUIRE_WARM), 1);
    uint64_t lease = a->u.answer.lease.lease_id;
    struct pw_pool_view v = pool(e, "f");
    assert_int_equal(v.leased, 1);
    assert_int_equal(v.idle, 1);
    assert_int_equal(v.restoring, 1); /* refill toward min idle */
    sync_all(e);
    assert_int_equal(pool(e, "f").idle, 2);
    assert_int_equal(pw_core_release(e->c, e->now, lease, 12, PW_RELEASE_OK), PW_OK);
    drain(e);
    v = pool(e, "f");
    assert_int_equal(v.leased, 0);
    assert_int_equal(v.idle, 3);
    assert_int_equal(v.warm, 1);
    /* A lease ends once. */
    assert_int_equal(pw_core_release(e->c, e->now, lease, 12, PW_RELEASE_OK), PW_ERR_NOTFOUND);
    assert_int_equal(pw_core_release(e->c, e->now, 0xdead, 12, PW_RELEASE_OK), PW_ERR_NOTFOUND);
    env_free(e);
}

/* Most recently idled VM is handed out first. */
static void test_acquire_takes_most_recent(void **state)
{
    (void)state;
    struct env *e = env_new(1, 0);
    do_hello(e, "h1", 1, 4096);
    put_fn(e, "f", PW_POLICY_KEEPALIVE, 0, 10, 60000, 128);
    uint64_t leases[2], vms[2];
    for (int i = 0; i < 2; i++) {
        assert_int_equal(pw_core_acquire(e->c, e->now, "f", 100 + i, e->now + 5000), PW_OK);
        drain(e);
    }
    sync_all(e);
    for (int i = 0; i < 2; i++) {
        const struct pw_action *a = find_answer(e, 100 + i);
        assert_non_null(a);
        leases[i] = a->u.answer.lease.lease_id;
        vms[i] = a->u.answer.lease.vm_id;
    }
    tick(e, 10);
    assert_int_equal(pw_core_release(e->c, e->now, leases[0], 5, PW_RELEASE_OK), PW_OK);
    tick(e, 10);
    assert_int_equal(pw_core_release(e->c, e->now, leases[1], 5, PW_RELEASE_OK), PW_OK);
    drain(e);
    assert_int_equal(pw_core_acquire(e->c, e->now, "f", 200, e->now + 5000), PW_OK);
    drain(e);
    const struct pw_action *a = find_answer(e, 200);
    assert_non_null(a);
    assert_int_equal(a->u.answer.lease.vm_id, vms[1]);
    env_free(e);
}

/* no idle VM: a restore is placed at once and the request answered when it is ready. */
static void test_acquire_cold(void **state)
{
    (void)state;
    struct env *e = env_new(1, 0);
    do_hello(e, "h1", 2, 4096);
    put_fn(e, "f", PW_POLICY_FIXED, 0, 10, 60000, 256);
    assert_int_equal(count_acts(e, PW_ACT_AGENT_CMD, PW_CMD_PREWARM), 0);
    e->nacts = 0;
    assert_int_equal(pw_core_acquire(e->c, e->now, "f", 1, e->now + 5000), PW_OK);
    drain(e);
    assert_null(find_answer(e, 1));
    assert_int_equal(count_acts(e, PW_ACT_AGENT_CMD, PW_CMD_PREWARM), 1);
    assert_int_equal(count_metric(e, PW_METRIC_COLD_START), 1);
    assert_int_equal(pool(e, "f").waiters, 1);
    assert_int_equal(pool(e, "f").restoring, 1);
    sync_agent(e, "h1", 0);
    e->now += 200;
    finish_restores(e, "h1");
    const struct pw_action *a = find_answer(e, 1);
    assert_non_null(a);
    assert_int_equal(a->u.answer.err, PW_OK);
    assert_int_equal(a->u.answer.lease.cold, 1);
    assert_int_equal(a->u.answer.lease.wait_ms, 200);
    struct pw_pool_view v = pool(e, "f");
    assert_int_equal(v.waiters, 0);
    assert_int_equal(v.leased, 1);
    assert_int_equal(v.cold, 1);
    env_free(e);
}

/* no capacity anywhere: the parked acquire times out at its deadline. */
static void test_acquire_timeout(void **state)
{
    (void)state;
    struct env *e = env_new(1, 0);
    put_fn(e, "f", PW_POLICY_FIXED, 0, 10, 60000, 256);
    assert_int_equal(pw_core_acquire(e->c, e->now, "f", 9, e->now + 1000), PW_OK);
    drain(e);
    assert_int_equal(count_metric(e, PW_METRIC_NO_CAPACITY), 1);
    assert_true(pw_core_next_deadline(e->c) <= e->now + 1000);
    tick(e, 999);
    assert_null(find_answer(e, 9));
    tick(e, 1);
    const struct pw_action *a = find_answer(e, 9);
    assert_non_null(a);
    assert_int_equal(a->u.answer.err, PW_ERR_TIMEOUT);
    assert_int_equal(pool(e, "f").timeouts, 1);
    assert_int_equal(pool(e, "f").waiters, 0);
    env_free(e);
}

static void test_acquire_errors(void **state)
{
    (void)state;
    struct env *e = env_new(1, 0);
    assert_int_equal(pw_core_acquire(e->c, e->now, "nope", 1, e->now + 1000), PW_ERR_NOTFOUND);
    put_fn(e, "f", PW_POLICY_FIXED, 0, 10, 60000, 256);
    for (uint64_t i = 0; i < 4; i++)
        assert_int_equal(pw_core_acquire(e->c, e->now, "f", 10 + i, e->now + 1000), PW_OK);
    assert_int_equal(pw_core_acquire(e->c, e->now, "f", 20, e->now + 1000), PW_ERR_LIMIT);
    assert_int_equal(pw_core_acquire(e->c, e->now, "f", 10, e->now + 1000), PW_ERR_EXISTS);
    pw_core_acquire_cancel(e->c, e->now, 10);
    assert_int_equal(pool(e, "f").waiters, 3);
    drain(e);
    e->nacts = 0;
    tick(e, 1000);
    assert_null(find_answer(e, 10)); /* cancelled: no answer */
    assert_non_null(find_answer(e, 11));
    env_free(e);
}

/* leased -> stopping on lease expiry; the late release is refused. */
static void test_lease_expiry(void **state)
{
    (void)state;
    struct env *e = env_new(1, 0);
    do_hello(e, "h1", 1, 4096);
    put_fn(e, "f", PW_POLICY_FIXED, 1, 10, 60000, 128);
    sync_all(e);
    assert_int_equal(pw_core_acquire(e->c, e->now, "f", 1, e->now + 1000), PW_OK);
    drain(e);
    uint64_t lease = find_answer(e, 1)->u.answer.lease.lease_id;
    uint64_t vm = find_answer(e, 1)->u.answer.lease.vm_id;
    sync_all(e);
    e->nacts = 0;
    advance_alive(e, 29000);
    assert_int_equal(pool(e, "f").leased, 1);
    advance_alive(e, 1500);
    assert_int_equal(count_metric(e, PW_METRIC_LEASE_EXPIRED), 1);
    assert_int_equal(pool(e, "f").leased, 0);
    struct pw_vm_view vv;
    for (size_t i = 0; pw_core_vm_at(e->c, i, &vv); i++)
        assert_true(vv.vm_id != vm); /* destroyed and gone after the agent confirmed */
    assert_int_equal(pw_core_release(e->c, e->now, lease, 1, PW_RELEASE_OK), PW_ERR_NOTFOUND);
    env_free(e);
}

/* release with an error outcome recycles the VM (leased -> stopping -> gone). */
static void test_release_error_recycles(void **state)
{
    (void)state;
    struct env *e = env_new(1, 0);
    do_hello(e, "h1", 1, 4096);
    put_fn(e, "f", PW_POLICY_FIXED, 1, 10, 60000, 128);
    sync_all(e);
    assert_int_equal(pw_core_acquire(e->c, e->now, "f", 1, e->now + 1000), PW_OK);
    drain(e);
    const struct pw_action *a = find_answer(e, 1);
    uint64_t lease = a->u.answer.lease.lease_id;
    e->nacts = 0;
    assert_int_equal(pw_core_release(e->c, e->now, lease, 3, PW_RELEASE_ERROR), PW_OK);
    drain(e);
    assert_int_equal(count_acts(e, PW_ACT_AGENT_CMD, PW_CMD_DESTROY), 1);
    assert_int_equal(pool(e, "f").stopping, 1);
    sync_all(e);
    struct pw_pool_view v = pool(e, "f");
    assert_int_equal(v.stopping, 0);
    assert_int_equal(v.idle, 1);
    env_free(e);
}

/* An agent silent for 3 heartbeats is dead: its VMs leave the pools, leases on them end, and the
 * pool is refilled on the other host. */
static void test_agent_death(void **state)
{
    (void)state;
    struct env *e = env_new(1, 0);
    do_hello(e, "h1", 1, 4096);
    put_fn(e, "f", PW_POLICY_FIXED, 2, 10, 60000, 128);
    sync_all(e);
    assert_int_equal(pool(e, "f").idle, 2);
    assert_int_equal(pw_core_acquire(e->c, e->now, "f", 1, e->now + 1000), PW_OK);
    drain(e);
    uint64_t lease = find_answer(e, 1)->u.answer.lease.lease_id;
    sync_all(e);
    do_hello(e, "h2", 1, 4096);
    e->nacts = 0;
    /* h2 keeps reporting, h1 is silent. */
    struct sim_agent *h2 = agent(e, "h2");
    for (int i = 0; i < 6; i++) {
        e->now += 500;
        struct pw_msg r = report(e, h2);
        exec_cmds(h2, &r, 1);
        pw_msg_fini(&r);
        pw_core_tick(e->c, e->now);
        drain(e);
        check(e);
    }
    struct pw_host_view hv;
    assert_int_equal(pw_core_host_find(e->c, "h1", &hv), PW_OK);
    assert_int_equal(hv.state, PW_HOST_ALIVE); /* 3000 ms is not yet more than 3 beats */
    tick(e, 1);
    assert_int_equal(pw_core_host_find(e->c, "h1", &hv), PW_OK);
    assert_int_equal(hv.state, PW_HOST_DEAD);
    assert_int_equal(hv.vms, 0);
    assert_int_equal(count_metric(e, PW_METRIC_AGENT_DEAD), 1);
    int stored_dead = 0;
    for (size_t i = 0; i < e->nacts; i++)
        if (e->acts[i].type == PW_ACT_STORE_HOST && strcmp(e->acts[i].host, "h1") == 0 && !e->acts[i].u.host.alive)
            stored_dead = 1;
    assert_true(stored_dead);
    struct pw_vm_view vv;
    for (size_t i = 0; pw_core_vm_at(e->c, i, &vv); i++)
        assert_string_equal(vv.host, "h2");
    assert_int_equal(pw_core_release(e->c, e->now, lease, 1, PW_RELEASE_OK), PW_ERR_NOTFOUND);
    sync_agent(e, "h2", 1);
    assert_int_equal(pool(e, "f").idle, 2);
    /* A report from the dead session is told to say hello again. */
    struct pw_msg r = report(e, agent(e, "h1"));
    assert_int_equal(r.type, PW_MSG_ERROR);
    assert_string_equal(r.u.error.code, "rehello");
    pw_msg_fini(&r);
    env_free(e);
}

/* fixed: idle VMs above min expire after keepalive; lowering min lets them go. */
static void test_keepalive_expiry_fixed(void **state)
{
    (void)state;
    struct env *e = env_new(1, 0);
    do_hello(e, "h1", 1, 8192);
    put_fn(e, "f", PW_POLICY_FIXED, 2, 10, 5000, 128);
    sync_all(e);
    uint64_t leases[4];
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pw_core_acquire(e->c, e->now, "f", 50 + i, e->now + 5000), PW_OK);
        drain(e);
        sync_all(e);
    }
    for (int i = 0; i < 4; i++) {
        const struct pw_action *a = find_answer(e, 50 + i);
        assert_non_null(a);
        leases[i] = a->u.answer.lease.lease_id;
    }
    for (int i = 0; i < 4; i++)
        assert_int_equal(pw_core_release(e->c, e->now, leases[i], 1, PW_RELEASE_OK), PW_OK);
    drain(e);
    uint32_t idle = pool(e, "f").idle;
    assert_true(idle >= 4);
    advance_alive(e, 4000);
    assert_int_equal(pool(e, "f").idle, idle);
    advance_alive(e, 1500);
    assert_int_equal(pool(e, "f").idle, 2);
    assert_true(count_metric(e, PW_METRIC_VM_EXPIRED) >= 2);
    /* min lowered: VMs idle for less than keep-alive stay until it passes (the released one
     * and the refill placed when it was leased); ones idle for longer go at once. */
    assert_int_equal(pw_core_acquire(e->c, e->now, "f", 60, e->now + 5000), PW_OK);
    drain(e);
    uint64_t l60 = find_answer(e, 60)->u.answer.lease.lease_id;
    sync_all(e);
    assert_int_equal(pw_core_release(e->c, e->now, l60, 1, PW_RELEASE_OK), PW_OK);
    drain(e);
    advance_alive(e, 1000);
    assert_int_equal(pool(e, "f").idle, 2); /* the long-idle one above min has gone */
    put_fn(e, "f", PW_POLICY_FIXED, 0, 10, 5000, 128);
    assert_int_equal(pool(e, "f").idle, 2);
    advance_alive(e, 3000);
    assert_int_equal(pool(e, "f").idle, 2);
    advance_alive(e, 1500);
    assert_int_equal(pool(e, "f").idle, 0);
    assert_int_equal(pool(e, "f").stopping, 0);
    env_free(e);
}

/* keepalive: no prewarm; a VM stays warm keepalive after use, then goes. */
static void test_keepalive_policy(void **state)
{
    (void)state;
    struct env *e = env_new(1, 0);
    do_hello(e, "h1", 1, 4096);
    put_fn(e, "f", PW_POLICY_KEEPALIVE, 0, 10, 3000, 128);
    assert_int_equal(count_acts(e, PW_ACT_AGENT_CMD, PW_CMD_PREWARM), 0);
    assert_int_equal(pw_core_acquire(e->c, e->now, "f", 1, e->now + 5000), PW_OK);
    drain(e);
    sync_all(e);
    uint64_t lease = find_answer(e, 1)->u.answer.lease.lease_id;
    assert_int_equal(pw_core_release(e->c, e->now, lease, 1, PW_RELEASE_OK), PW_OK);
    drain(e);
    assert_int_equal(pool(e, "f").idle, 1);
    assert_int_equal(pool(e, "f").restoring, 0);
    advance_alive(e, 2500);
    assert_int_equal(pool(e, "f").idle, 1);
    advance_alive(e, 1000);
    assert_int_equal(pool(e, "f").idle, 0);
    /* keepalive with min keeps a floor of VMs in total. */
    put_fn(e, "f", PW_POLICY_KEEPALIVE, 1, 10, 3000, 128);
    sync_all(e);
    assert_int_equal(pool(e, "f").idle, 1);
    advance_alive(e, 5000);
    assert_int_equal(pool(e, "f").idle, 1);
    env_free(e);
}

/* max caps the pool; min is honoured up to max; lowering max destroys idle VMs above it. */
static void test_min_max_clamping(void **state)
{
    (void)state;
    struct env *e = env_new(1, 0);
    do_hello(e, "h1", 1, 8192);
    put_fn(e, "f", PW_POLICY_FIXED, 0, 2, 60000, 128);
    for (uint64_t i = 1; i <= 3; i++)
        assert_int_equal(pw_core_acquire(e->c, e->now, "f", i, e->now + 10000), PW_OK);
    drain(e);
    assert_int_equal(count_acts(e, PW_ACT_AGENT_CMD, PW_CMD_PREWARM), 2);
    sync_all(e);
    assert_non_null(find_answer(e, 1));
    assert_non_null(find_answer(e, 2));
    assert_null(find_answer(e, 3));
    struct pw_pool_view v = pool(e, "f");
    assert_int_equal(v.leased, 2);
    assert_int_equal(v.waiters, 1);
    /* A release hands the VM straight to the parked request. */
    assert_int_equal(pw_core_release(e->c, e->now, find_answer(e, 1)->u.answer.lease.lease_id, 1, PW_RELEASE_OK),
                     PW_OK);
    drain(e);
    assert_non_null(find_answer(e, 3));
    assert_int_equal(pool(e, "f").waiters, 0);
    assert_int_equal(pw_core_release(e->c, e->now, find_answer(e, 2)->u.answer.lease.lease_id, 1, PW_RELEASE_OK),
                     PW_OK);
    assert_int_equal(pw_core_release(e->c, e->now, find_answer(e, 3)->u.answer.lease.lease_id, 1, PW_RELEASE_OK),
                     PW_OK);
    drain(e);
    assert_int_equal(pool(e, "f").idle, 2);
    /* min above the current count but capped by max. */
    put_fn(e, "f", PW_POLICY_FIXED, 2, 2, 60000, 128);
    assert_int_equal(pool(e, "f").restoring, 0);
    put_fn(e, "f", PW_POLICY_FIXED, 5, 5, 60000, 128);
    assert_int_equal(pool(e, "f").restoring, 3);
    sync_all(e);
    assert_int_equal(pool(e, "f").idle, 5);
    /* max lowered below what runs: idle VMs above it are destroyed at once. */
    put_fn(e, "f", PW_POLICY_FIXED, 1, 2, 60000, 128);
    assert_int_equal(pool(e, "f").idle, 2);
    assert_int_equal(pool(e, "f").stopping, 3);
    sync_all(e);
    assert_int_equal(pool(e, "f").stopping, 0);
    env_free(e);
}

/* restoring -> failed -> stopping -> gone, and a replacement is placed. */
static void test_restore_failure(void **state)
{
    (void)state;
    struct env *e = env_new(1, 0);
    do_hello(e, "h1", 1, 4096);
    put_fn(e, "f", PW_POLICY_FIXED, 1, 10, 60000, 128);
    struct sim_agent *a = agent(e, "h1");
    struct pw_msg r = report(e, a);
    exec_cmds(a, &r, 0);
    pw_msg_fini(&r);
    assert_int_equal(a->nvms, 1);
    uint64_t vm = a->vms[0].vm_id;
    a->vms[0].state = PW_AVM_FAILED;
    add_event(a, vm, PW_AVM_FAILED, "f");
    e->nacts = 0;
    r = report(e, a);
    assert_int_equal(count_metric(e, PW_METRIC_RESTORE_FAILED), 1);
    assert_int_equal(count_acts(e, PW_ACT_AGENT_CMD, PW_CMD_DESTROY), 1);
    assert_int_equal(count_acts(e, PW_ACT_AGENT_CMD, PW_CMD_PREWARM), 1); /* replacement */
    struct pw_pool_view v = pool(e, "f");
    assert_int_equal(v.stopping, 1);
    assert_int_equal(v.restoring, 1);
    exec_cmds(a, &r, 1);
    pw_msg_fini(&r);
    sync_all(e);
    v = pool(e, "f");
    assert_int_equal(v.stopping, 0);
    assert_int_equal(v.failed, 0);
    assert_int_equal(v.idle, 1);
    env_free(e);
}

/* idle -> gone and leased -> gone without our asking (agent says GONE): counted, replaced, and
 * the lease on it ends. restoring -> gone too. */
static void test_vm_lost(void **state)
{
    (void)state;
    struct env *e = env_new(1, 0);
    do_hello(e, "h1", 1, 4096);
    put_fn(e, "f", PW_POLICY_FIXED, 2, 10, 60000, 128);
    sync_all(e);
    assert_int_equal(pw_core_acquire(e->c, e->now, "f", 1, e->now + 1000), PW_OK);
    drain(e);
    const struct pw_action *ans = find_answer(e, 1);
    uint64_t leased_vm = ans->u.answer.lease.vm_id, lease = ans->u.answer.lease.lease_id;
    sync_all(e);
    struct sim_agent *a = agent(e, "h1");
    uint64_t idle_vm = 0;
    for (size_t i = 0; i < a->nvms; i++)
        if (a->vms[i].vm_id != leased_vm)
            idle_vm = a->vms[i].vm_id;
    e->nacts = 0;
    inv_remove(a, leased_vm);
    inv_remove(a, idle_vm);
    add_event(a, leased_vm, PW_AVM_GONE, "f");
    add_event(a, idle_vm, PW_AVM_GONE, "f");
    struct pw_msg r = report(e, a);
    pw_msg_fini(&r);
    assert_int_equal(count_metric(e, PW_METRIC_VM_LOST), 2);
    assert_int_equal(pw_core_release(e->c, e->now, lease, 1, PW_RELEASE_OK), PW_ERR_NOTFOUND);
    struct pw_pool_view v = pool(e, "f");
    assert_int_equal(v.leased, 0);
    assert_int_equal(v.idle + v.restoring, 2);
    /* restoring -> gone */
    r = report(e, a);
    exec_cmds(a, &r, 0);
    pw_msg_fini(&r);
    uint64_t restoring_vm = 0;
    for (size_t i = 0; i < a->nvms; i++)
        if (a->vms[i].state == PW_AVM_RESTORING)
            restoring_vm = a->vms[i].vm_id;
    assert_true(restoring_vm != 0);
    inv_remove(a, restoring_vm);
    add_event(a, restoring_vm, PW_AVM_GONE, "f");
    sync_all(e);
    finish_restores(e, "h1");
    assert_int_equal(pool(e, "f").idle, 2);
    env_free(e);
}

/* Commands repeat until acknowledged; the same command is executed once by a deduping agent;
 * events repeated in a later report are applied once, and reordered ones in seq order. */
static void test_outbox_and_events_idempotent(void **state)
{
    (void)state;
    struct env *e = env_new(1, 0);
    do_hello(e, "h1", 1, 4096);
    put_fn(e, "f", PW_POLICY_FIXED, 2, 10, 60000, 128);
    struct sim_agent *a = agent(e, "h1");
    struct pw_msg r1;
    assert_int_equal(pw_core_agent_reply(e->c, "h1", &r1), PW_OK);
    assert_int_equal(r1.u.reply.ncmds, 3); /* the golden snapshot, then two restores */
    assert_int_equal(r1.u.reply.cmds[0].type, PW_CMD_SNAPSHOT);
    struct pw_msg r2 = report(e, a); /* no ack yet: same commands again */
    assert_int_equal(r2.u.reply.ncmds, 3);
    assert_true(r1.u.reply.cmds[0].id == r2.u.reply.cmds[0].id);
    exec_cmds(a, &r1, 1);
    exec_cmds(a, &r2, 1); /* duplicate delivery: deduped */
    assert_int_equal(a->nvms, 2);
    pw_msg_fini(&r1);
    pw_msg_fini(&r2);
    /* Reverse the events: the core applies them by seq. */
    assert_int_equal(a->nevents, 2);
    struct pw_agent_event tmp = a->events[0];
    a->events[0] = a->events[1];
    a->events[1] = tmp;
    struct pw_msg r3 = report(e, a);
    assert_int_equal(r3.u.reply.ncmds, 0);
    assert_int_equal(r3.u.reply.event_ack, 2);
    pw_msg_fini(&r3);
    assert_int_equal(pool(e, "f").idle, 2);
    /* The same events again (a duplicated report): nothing changes. */
    a->nevents = 2;
    a->events[0].seq = 1;
    a->events[1].seq = 2;
    e->nacts = 0;
    struct pw_msg r4 = report(e, a);
    pw_msg_fini(&r4);
    assert_int_equal(count_metric(e, PW_METRIC_RESTORE_DONE), 0);
    assert_int_equal(pool(e, "f").idle, 2);
    env_free(e);
}

/* A scheduler restart: functions come back from the store, agents re-hello with their
 * inventory, and their VMs are adopted (idle, and leased with the lease the agent was told of);
 * during the grace no duplicate VMs are created. */
static void test_restart_adoption(void **state)
{
    (void)state;
    struct env *e = env_new(1, 0);
    do_hello(e, "h1", 2, 4096);
    put_fn(e, "f", PW_POLICY_FIXED, 3, 10, 60000, 256);
    sync_all(e);
    assert_int_equal(pw_core_acquire(e->c, e->now, "f", 1, e->now + 1000), PW_OK);
    drain(e);
    uint64_t lease = find_answer(e, 1)->u.answer.lease.lease_id;
    sync_all(e); /* the agent learns of the lease, and the pool refills */
    struct sim_agent saved = *agent(e, "h1");
    assert_int_equal(saved.nvms, 4);
    pw_core_free(e->c);

    /* New process: epoch 2, the store says h1 was alive. */
    struct pw_core_config cfg;
    pw_core_config_default(&cfg);
    cfg.epoch = 2;
    cfg.id_base = 2ULL << 40;
    cfg.adopt_grace_ms = 3000;
    cfg.lease_ttl_ms = 30000;
    e->now += 500;
    e->c = pw_core_new(&cfg, e->now);
    e->nacts = 0;
    pw_core_expect_host(e->c, "h1");
    put_fn(e, "f", PW_POLICY_FIXED, 3, 10, 60000, 256);
    assert_int_equal(count_acts(e, PW_ACT_AGENT_CMD, PW_CMD_PREWARM), 0); /* grace */
    struct pw_core_stats st;
    pw_core_stats(e->c, &st);
    assert_int_equal(st.in_grace, 1);
    /* The agent's report is unknown to the new process: it is asked to say hello. */
    struct pw_msg r = report(e, agent(e, "h1"));
    assert_int_equal(r.type, PW_MSG_ERROR);
    assert_string_equal(r.u.error.code, "rehello");
    pw_msg_fini(&r);
    do_hello(e, "h1", 2, 4096);
    pw_core_stats(e->c, &st);
    assert_int_equal(st.in_grace, 0);
    struct pw_pool_view v = pool(e, "f");
    assert_int_equal(v.idle, 3);
    assert_int_equal(v.leased, 1);
    assert_int_equal(v.restoring, 0);
    assert_int_equal(count_acts(e, PW_ACT_AGENT_CMD, PW_CMD_PREWARM), 0);
    /* Same VM ids as before. */
    struct pw_vm_view vv;
    size_t n = 0;
    for (size_t i = 0; pw_core_vm_at(e->c, i, &vv); i++, n++) {
        int found = 0;
        for (size_t k = 0; k < saved.nvms; k++)
            found |= saved.vms[k].vm_id == vv.vm_id;
        assert_true(found);
    }
    assert_int_equal(n, 4);
    /* The gateway's release of the old lease still works. */
    assert_int_equal(pw_core_release(e->c, e->now, lease, 5, PW_RELEASE_OK), PW_OK);
    drain(e);
    assert_int_equal(pool(e, "f").idle, 4);
    /* New commands use the new epoch; the agent adopts it and resets its ack. */
    sync_all(e);
    assert_int_equal(agent(e, "h1")->epoch, 2);
    env_free(e);
}

/* grace ends by time when an expected host never comes back. */
static void test_grace_timeout(void **state)
{
    (void)state;
    struct env *e = env_new(1, 3000);
    pw_core_expect_host(e->c, "gone-host");
    do_hello(e, "h1", 1, 4096);
    put_fn(e, "f", PW_POLICY_FIXED, 2, 10, 60000, 128);
    assert_int_equal(count_acts(e, PW_ACT_AGENT_CMD, PW_CMD_PREWARM), 0);
    /* A parked acquire is served even in grace. */
    assert_int_equal(pw_core_acquire(e->c, e->now, "f", 1, e->now + 10000), PW_OK);
    drain(e);
    assert_int_equal(count_acts(e, PW_ACT_AGENT_CMD, PW_CMD_PREWARM), 1);
    advance_alive(e, 3500);
    assert_non_null(find_answer(e, 1));
    assert_int_equal(pool(e, "f").idle, 2);
    env_free(e);
}

/* A VM never straddles NUMA nodes: 3 GiB does not fit two 2 GiB nodes. */
static void test_placement_single_node(void **state)
{
    (void)state;
    struct env *e = env_new(1, 0);
    do_hello(e, "h1", 2, 2048);
    put_fn(e, "big", PW_POLICY_FIXED, 1, 10, 60000, 3072);
    assert_int_equal(count_acts(e, PW_ACT_AGENT_CMD, PW_CMD_PREWARM), 0);
    assert_true(count_metric(e, PW_METRIC_NO_CAPACITY) >= 1);
    /* Four 1 GiB VMs fit, two per node; the fifth does not. */
    put_fn(e, "small", PW_POLICY_FIXED, 5, 10, 60000, 1024);
    assert_int_equal(count_acts(e, PW_ACT_AGENT_CMD, PW_CMD_PREWARM), 4);
    struct pw_host_view hv;
    assert_int_equal(pw_core_host_find(e->c, "h1", &hv), PW_OK);
    assert_int_equal(hv.numa[0].mem_free_mb, 0);
    assert_int_equal(hv.numa[1].mem_free_mb, 0);
    env_free(e);
}

/* Spread: a pool's VMs go to the host with fewest of them. */
static void test_placement_spread(void **state)
{
    (void)state;
    struct env *e = env_new(1, 0);
    do_hello(e, "h1", 1, 8192);
    do_hello(e, "h2", 1, 8192);
    put_fn(e, "f", PW_POLICY_FIXED, 4, 10, 60000, 256);
    struct pw_host_view a, b;
    pw_core_host_find(e->c, "h1", &a);
    pw_core_host_find(e->c, "h2", &b);
    assert_int_equal(a.vms, 2);
    assert_int_equal(b.vms, 2);
    env_free(e);
}

/* Deleting a function: parked acquires fail, idle and restoring VMs are destroyed, a leased one
 * when released. */
static void test_function_delete(void **state)
{
    (void)state;
    struct env *e = env_new(1, 0);
    do_hello(e, "h1", 1, 4096);
    put_fn(e, "f", PW_POLICY_FIXED, 1, 1, 60000, 128);
    sync_all(e);
    assert_int_equal(pw_core_acquire(e->c, e->now, "f", 1, e->now + 1000), PW_OK);
    assert_int_equal(pw_core_acquire(e->c, e->now, "f", 2, e->now + 1000), PW_OK); /* parks: max 1 */
    drain(e);
    uint64_t lease = find_answer(e, 1)->u.answer.lease.lease_id;
    e->nacts = 0;
    assert_int_equal(pw_core_function_delete(e->c, e->now, "f"), PW_OK);
    drain(e);
    const struct pw_action *a = find_answer(e, 2);
    assert_non_null(a);
    assert_int_equal(a->u.answer.err, PW_ERR_NOTFOUND);
    assert_int_equal(pw_core_function_delete(e->c, e->now, "f"), PW_ERR_NOTFOUND);
    struct pw_function_spec s;
    assert_int_equal(pw_core_function_get(e->c, "f", &s), PW_ERR_NOTFOUND);
    check(e);
    assert_int_equal(pw_core_release(e->c, e->now, lease, 1, PW_RELEASE_OK), PW_OK);
    drain(e);
    assert_int_equal(count_acts(e, PW_ACT_AGENT_CMD, PW_CMD_DESTROY), 1);
    sync_all(e);
    struct pw_vm_view vv;
    assert_int_equal(pw_core_vm_at(e->c, 0, &vv), 0);
    env_free(e);
}

/* Bad hellos are refused and change nothing. */
static void test_bad_hello(void **state)
{
    (void)state;
    struct env *e = env_new(1, 0);
    struct pw_msg_hello h;
    memset(&h, 0, sizeof(h));
    pw_strlcpy(h.agent_id, "bad id", sizeof(h.agent_id));
    struct pw_numa_node numa[2];
    memset(numa, 0, sizeof(numa));
    h.numa = numa;
    h.nnuma = 1;
    struct pw_msg reply;
    assert_int_equal(pw_core_agent_hello(e->c, e->now, &h, &reply), PW_ERR_PROTO);
    assert_int_equal(reply.type, PW_MSG_ERROR);
    pw_msg_fini(&reply);
    pw_strlcpy(h.agent_id, "ok", sizeof(h.agent_id));
    h.nnuma = 0;
    assert_int_equal(pw_core_agent_hello(e->c, e->now, &h, &reply), PW_ERR_PROTO);
    pw_msg_fini(&reply);
    h.nnuma = 2; /* duplicate node ids */
    assert_int_equal(pw_core_agent_hello(e->c, e->now, &h, &reply), PW_ERR_PROTO);
    pw_msg_fini(&reply);
    struct pw_core_stats st;
    pw_core_stats(e->c, &st);
    assert_int_equal(st.hosts_alive + st.hosts_dead, 0);
    env_free(e);
}

/* An agent restart (new boot id) with an empty inventory: its old VMs are forgotten. */
static void test_agent_restart(void **state)
{
    (void)state;
    struct env *e = env_new(1, 0);
    do_hello(e, "h1", 1, 4096);
    put_fn(e, "f", PW_POLICY_FIXED, 2, 10, 60000, 128);
    sync_all(e);
    struct sim_agent *a = agent(e, "h1");
    a->nvms = 0;
    a->nevents = 0;
    a->event_seq = 0;
    a->cmd_ack = 0;
    a->epoch = 0;
    pw_strlcpy(a->boot, "boot-h1-2", sizeof(a->boot));
    e->nacts = 0;
    do_hello(e, "h1", 1, 4096);
    assert_int_equal(count_metric(e, PW_METRIC_VM_LOST), 2);
    assert_int_equal(pool(e, "f").restoring, 2);
    sync_all(e);
    assert_int_equal(pool(e, "f").idle, 2);
    env_free(e);
}

/* restoring -> stopping: a function deleted while its VMs restore; the late RUNNING event of a
 * VM already being stopped changes nothing. failed -> gone: the agent dies with a failed VM. */
static void test_restoring_stopping_and_failed_gone(void **state)
{
    (void)state;
    struct env *e = env_new(1, 0);
    do_hello(e, "h1", 1, 4096);
    put_fn(e, "f", PW_POLICY_FIXED, 2, 10, 60000, 128);
    struct sim_agent *a = agent(e, "h1");
    struct pw_msg r = report(e, a);
    exec_cmds(a, &r, 0);
    pw_msg_fini(&r);
    assert_int_equal(pool(e, "f").restoring, 2);
    e->nacts = 0;
    assert_int_equal(pw_core_function_delete(e->c, e->now, "f"), PW_OK);
    drain(e);
    assert_int_equal(count_acts(e, PW_ACT_AGENT_CMD, PW_CMD_DESTROY), 2);
    struct pw_vm_view vv;
    size_t n = 0;
    for (size_t i = 0; pw_core_vm_at(e->c, i, &vv); i++, n++)
        assert_int_equal(vv.state, PW_VM_STOPPING);
    assert_int_equal(n, 2);
    /* The restores finish before the destroys reach the agent. */
    finish_restores(e, "h1");
    for (size_t i = 0; pw_core_vm_at(e->c, i, &vv); i++)
        assert_int_equal(vv.state, PW_VM_STOPPING);
    sync_all(e);
    assert_int_equal(pw_core_vm_at(e->c, 0, &vv), 0);

    /* failed -> gone: a VM fails, and its agent dies before the destroy is acknowledged. */
    put_fn(e, "g", PW_POLICY_FIXED, 1, 1, 60000, 128);
    r = report(e, a);
    exec_cmds(a, &r, 0);
    pw_msg_fini(&r);
    uint64_t vm = a->vms[a->nvms - 1].vm_id;
    add_event(a, vm, PW_AVM_FAILED, "g");
    r = report(e, a);
    pw_msg_fini(&r);
    assert_int_equal(pool(e, "g").stopping, 1);
    assert_int_equal(pool(e, "g").restoring, 1); /* replaced at once: max counts live VMs only */
    e->nacts = 0;
    tick(e, 3001);
    struct pw_host_view hv;
    pw_core_host_find(e->c, "h1", &hv);
    assert_int_equal(hv.state, PW_HOST_DEAD);
    assert_int_equal(pool(e, "g").stopping, 0);
    assert_int_equal(pool(e, "g").restoring, 0);
    assert_int_equal(pw_core_vm_at(e->c, 0, &vv), 0);
    env_free(e);
}

/* Lease lifecycle end to end in one place: granted (warm), released, granted (cold, after a
 * restore), expired; and a lease on a VM whose agent died ends with it. */
static void test_lease_lifecycle(void **state)
{
    (void)state;
    struct env *e = env_new(1, 0);
    do_hello(e, "h1", 1, 4096);
    put_fn(e, "f", PW_POLICY_KEEPALIVE, 0, 10, 60000, 128);
    struct pw_core_stats st;
    assert_int_equal(pw_core_acquire(e->c, e->now, "f", 1, e->now + 5000), PW_OK);
    drain(e);
    sync_all(e);
    const struct pw_action *a1 = find_answer(e, 1);
    assert_int_equal(a1->u.answer.lease.cold, 1);
    pw_core_stats(e->c, &st);
    assert_int_equal(st.leases, 1);
    assert_int_equal(pw_core_release(e->c, e->now, a1->u.answer.lease.lease_id, 1, PW_RELEASE_OK), PW_OK);
    assert_int_equal(pw_core_acquire(e->c, e->now, "f", 2, e->now + 5000), PW_OK);
    drain(e);
    const struct pw_action *a2 = find_answer(e, 2);
    assert_int_equal(a2->u.answer.lease.cold, 0);
    assert_int_equal(a2->u.answer.lease.vm_id, a1->u.answer.lease.vm_id);
    assert_true(a2->u.answer.lease.lease_id != a1->u.answer.lease.lease_id);
    pw_core_stats(e->c, &st);
    assert_int_equal(st.leases, 1);
    pw_core_agent_lost(e->c, e->now, "h1");
    drain(e);
    pw_core_stats(e->c, &st);
    assert_int_equal(st.leases, 0);
    assert_int_equal(pw_core_release(e->c, e->now, a2->u.answer.lease.lease_id, 1, PW_RELEASE_OK), PW_ERR_NOTFOUND);
    env_free(e);
}

/* Lease notes are best-effort and bounded apart from commands: a host busy with leases still
 * takes restores. */
static void test_notes_never_block_commands(void **state)
{
    (void)state;
    struct env *e = calloc(1, sizeof(*e));
    struct pw_core_config cfg;
    pw_core_config_default(&cfg);
    cfg.max_cmds_per_host = 8; /* notes: at most 3 */
    e->now = 1000;
    e->c = pw_core_new(&cfg, e->now);
    do_hello(e, "h1", 1, 1 << 20);
    put_fn(e, "f", PW_POLICY_FIXED, 6, 20, 60000, 128);
    sync_all(e);
    assert_int_equal(pool(e, "f").idle, 6);
    put_fn(e, "f", PW_POLICY_FIXED, 0, 20, 60000, 128);
    for (uint64_t i = 1; i <= 6; i++)
        assert_int_equal(pw_core_acquire(e->c, e->now, "f", i, e->now + 1000), PW_OK);
    drain(e);
    struct pw_msg r;
    assert_int_equal(pw_core_agent_reply(e->c, "h1", &r), PW_OK);
    size_t notes = 0;
    for (size_t i = 0; i < r.u.reply.ncmds; i++)
        notes += r.u.reply.cmds[i].type == PW_CMD_LEASE;
    pw_msg_fini(&r);
    assert_int_equal(notes, 3);
    e->nacts = 0;
    put_fn(e, "g", PW_POLICY_FIXED, 5, 20, 60000, 128);
    assert_int_equal(count_acts(e, PW_ACT_AGENT_CMD, PW_CMD_PREWARM), 5);
    env_free(e);
}

/* A policy engine's overlay: the floor restores VMs up to max, keepalive 0 lets VMs above the
 * floor go as soon as they idle, and clearing it returns to the pool's own policy. */
static void test_dynamic_overlay(void **state)
{
    (void)state;
    struct env *e = env_new(1, 0);
    do_hello(e, "h1", 2, 1 << 20);
    put_fn(e, "f", PW_POLICY_KEEPALIVE, 0, 6, 60000, 128);
    assert_int_equal(pw_core_set_dynamic(e->c, e->now, "nope", 1, 0), PW_ERR_NOTFOUND);
    assert_int_equal(pw_core_set_dynamic(e->c, e->now, "f", 3, 0), PW_OK);
    drain(e);
    assert_int_equal(pool(e, "f").restoring, 3);
    assert_int_equal(pool(e, "f").floor, 3);
    sync_all(e);
    assert_int_equal(pool(e, "f").idle, 3);
    /* Four acquires: three warm, one cold (a fourth VM). */
    for (uint64_t i = 1; i <= 4; i++)
        assert_int_equal(pw_core_acquire(e->c, e->now, "f", i, e->now + 5000), PW_OK);
    drain(e);
    sync_all(e);
    for (uint64_t i = 1; i <= 4; i++)
        assert_non_null(find_answer(e, i));
    assert_int_equal(find_answer(e, 4)->u.answer.lease.cold, 1);
    /* Released: keepalive 0 above the floor of 3, so one goes at once. */
    for (uint64_t i = 1; i <= 4; i++)
        assert_int_equal(pw_core_release(e->c, e->now, find_answer(e, i)->u.answer.lease.lease_id, 1, PW_RELEASE_OK),
                         PW_OK);
    drain(e);
    assert_int_equal(pool(e, "f").idle, 3);
    assert_int_equal(pool(e, "f").stopping, 1);
    /* The floor is clamped to max. */
    assert_int_equal(pw_core_set_dynamic(e->c, e->now, "f", 50, 0), PW_OK);
    drain(e);
    sync_all(e);
    assert_int_equal(pool(e, "f").idle, 6);
    assert_int_equal(pool(e, "f").floor, 6);
    /* Floor 0 with a grace: they go after the grace, not before. */
    assert_int_equal(pw_core_set_dynamic(e->c, e->now, "f", 0, 2000), PW_OK);
    drain(e);
    advance_alive(e, 1000);
    assert_int_equal(pool(e, "f").idle, 6);
    advance_alive(e, 1500);
    assert_int_equal(pool(e, "f").idle, 0);
    /* Cleared: the pool's own keepalive (60 s) again. */
    assert_int_equal(pw_core_clear_dynamic(e->c, e->now, "f"), PW_OK);
    assert_int_equal(pool(e, "f").dynamic, 0);
    env_free(e);
}

/* ---- placement and drain ---- */

static size_t prewarms_to(struct env *e, const char *host)
{
    size_t n = 0;
    for (size_t i = 0; i < e->nacts; i++)
        if (e->acts[i].type == PW_ACT_AGENT_CMD && e->acts[i].u.cmd.type == PW_CMD_PREWARM &&
            strcmp(e->acts[i].host, host) == 0)
            n++;
    return n;
}

/* Draining a host: replacements first, then the old VMs go; a lease on the draining host
 * finishes; no acquire is cold. */
static void test_drain_moves_idle_vms(void **state)
{
    (void)state;
    struct env *e = env_new(1, 0);
    hello_labeled(e, "a", 8192, "z1", "0.01");
    put_fn(e, "f", PW_POLICY_FIXED, 2, 10, 60000, 512);
    sync_all(e);
    assert_int_equal(host_vms(e, "a"), 2);
    hello_labeled(e, "b", 8192, "z2", "0.02");
    assert_int_equal(host_vms(e, "b"), 0); /* the pool was full */
    e->nacts = 0;
    assert_int_equal(pw_core_host_drain(e->c, e->now, "a", 1), PW_OK);
    drain(e);
    check(e);
    assert_int_equal(prewarms_to(e, "b"), 2);
    assert_int_equal(count_acts(e, PW_ACT_AGENT_CMD, PW_CMD_DESTROY), 0); /* not before replaced */
    struct pw_pool_view v = pool(e, "f");
    assert_int_equal(v.idle, 2);
    assert_int_equal(v.restoring, 2);
    assert_int_equal(v.outgoing, 2);
    struct pw_host_view *hv = malloc(sizeof(*hv));
    assert_int_equal(pw_core_host_find(e->c, "a", hv), PW_OK);
    assert_int_equal(hv->draining, 1);
    assert_string_equal(hv->zone, "z1");
    assert_true(hv->cost_per_gib_hour > 0.0099 && hv->cost_per_gib_hour < 0.0101);
    /* An acquire while moving is warm, on the old host. */
    assert_int_equal(pw_core_acquire(e->c, e->now, "f", 1, e->now + 5000), PW_OK);
    drain(e);
    const struct pw_action *ans = find_answer(e, 1);
    assert_non_null(ans);
    assert_int_equal(ans->u.answer.err, PW_OK);
    assert_int_equal(ans->u.answer.lease.cold, 0);
    assert_string_equal(ans->u.answer.lease.host, "a");
    uint64_t lease = ans->u.answer.lease.lease_id;
    /* The replacements come up: the idle old VM goes, the leased one stays. */
    sync_agent(e, "b", 1);
    sync_agent(e, "a", 1);
    assert_int_equal(host_vms(e, "a"), 1);
    assert_int_equal(count_metric(e, PW_METRIC_VM_MOVED), 1);
    /* Its lease ends: it goes too. */
    assert_int_equal(pw_core_release(e->c, e->now, lease, 10, PW_RELEASE_OK), PW_OK);
    drain(e);
    sync_all(e);
    assert_int_equal(host_vms(e, "a"), 0);
    assert_int_equal(host_vms(e, "b"), 2);
    v = pool(e, "f");
    assert_int_equal(v.idle, 2);
    assert_int_equal(v.outgoing, 0);
    assert_int_equal(count_metric(e, PW_METRIC_VM_MOVED), 2);
    assert_int_equal(count_metric(e, PW_METRIC_COLD_START), 0);
    /* Nothing new lands on a draining host, even when b is the only other choice and full. */
    put_fn(e, "g", PW_POLICY_FIXED, 1, 10, 60000, 512);
    sync_all(e);
    assert_int_equal(host_vms(e, "a"), 0);
    /* Undrain: a takes VMs again; unknown hosts are refused. */
    assert_int_equal(pw_core_host_drain(e->c, e->now, "a", 0), PW_OK);
    assert_int_equal(pw_core_host_drain(e->c, e->now, "nope", 1), PW_ERR_NOTFOUND);
    put_fn(e, "h", PW_POLICY_FIXED, 1, 10, 60000, 512);
    sync_all(e);
    assert_int_equal(host_vms(e, "a"), 1); /* cheaper */
    free(hv);
    env_free(e);
}

/* Restores under way on a draining host are cancelled and redone elsewhere. */
static void test_drain_cancels_restores(void **state)
{
    (void)state;
    struct env *e = env_new(1, 0);
    hello_labeled(e, "a", 8192, "z1", "0.01");
    put_fn(e, "f", PW_POLICY_FIXED, 2, 10, 60000, 512);
    sync_agent(e, "a", 0); /* restoring on a */
    hello_labeled(e, "b", 8192, "z2", "0.02");
    e->nacts = 0;
    assert_int_equal(pw_core_host_drain(e->c, e->now, "a", 1), PW_OK);
    drain(e);
    check(e);
    assert_int_equal(count_acts(e, PW_ACT_AGENT_CMD, PW_CMD_DESTROY), 2);
    assert_int_equal(prewarms_to(e, "b"), 2);
    sync_all(e);
    assert_int_equal(host_vms(e, "a"), 0);
    assert_int_equal(pool(e, "f").idle, 2);
    env_free(e);
}

/* The agent itself can say it drains (its own operator); the effect is the same. */
static void test_agent_reported_drain(void **state)
{
    (void)state;
    struct env *e = env_new(1, 0);
    hello_labeled(e, "a", 8192, "z1", "0.01");
    put_fn(e, "f", PW_POLICY_FIXED, 2, 10, 60000, 512);
    sync_all(e);
    hello_labeled(e, "b", 8192, "z2", "0.02");
    agent(e, "a")->draining = 1;
    e->nacts = 0;
    sync_agent(e, "a", 1);
    assert_int_equal(prewarms_to(e, "b"), 2);
    struct pw_host_view *hv = malloc(sizeof(*hv));
    assert_int_equal(pw_core_host_find(e->c, "a", hv), PW_OK);
    assert_int_equal(hv->agent_draining, 1);
    assert_int_equal(hv->draining, 0);
    sync_all(e);
    assert_int_equal(host_vms(e, "a"), 0);
    assert_int_equal(host_vms(e, "b"), 2);
    /* It stops draining: it is eligible again (and cheaper). */
    agent(e, "a")->draining = 0;
    sync_agent(e, "a", 1);
    put_fn(e, "g", PW_POLICY_FIXED, 1, 10, 60000, 512);
    sync_all(e);
    assert_int_equal(host_vms(e, "a"), 1);
    free(hv);
    env_free(e);
}

/* Constraints and spread through the core: only zone z2, at most half on one host. */
static void test_constraints_in_core(void **state)
{
    (void)state;
    struct env *e = env_new(1, 0);
    hello_labeled(e, "a", 8192, "z1", "0.01");
    hello_labeled(e, "b", 8192, "z2", "0.02");
    hello_labeled(e, "c", 8192, "z2", "0.02");
    struct pw_function_spec s;
    memset(&s, 0, sizeof(s));
    pw_strlcpy(s.name, "f", sizeof(s.name));
    s.memory_mb = 512;
    s.vcpus = 1;
    pw_pool_policy_default(&s.pool);
    s.pool.min = 4;
    pw_strlcpy(s.placement.zones[0], "z2", PW_NAME_MAX);
    s.placement.nzones = 1;
    s.placement.max_host_share = 0.5;
    assert_int_equal(pw_core_function_put(e->c, e->now, &s), PW_OK);
    drain(e);
    sync_all(e);
    assert_int_equal(host_vms(e, "a"), 0); /* cheapest, but not allowed */
    assert_int_equal(host_vms(e, "b"), 2);
    assert_int_equal(host_vms(e, "c"), 2);
    /* An invalid constraint is refused and changes nothing. */
    pw_strlcpy(s.placement.zones[0], "bad zone", PW_NAME_MAX);
    s.pool.min = 0;
    assert_int_equal(pw_core_function_put(e->c, e->now, &s), PW_ERR_INVAL);
    assert_int_equal(pool(e, "f").spec.pool.min, 4);
    env_free(e);
}

/* Lowering a pool reaps from the expensive host first. */
static void test_reap_expensive_first(void **state)
{
    (void)state;
    struct env *e = env_new(1, 0);
    hello_labeled(e, "cheap", 1024, "z1", "0.01"); /* room for two */
    hello_labeled(e, "dear", 8192, "z2", "0.03");
    put_fn(e, "f", PW_POLICY_FIXED, 4, 10, 0, 512);
    sync_all(e);
    assert_int_equal(host_vms(e, "cheap"), 2);
    assert_int_equal(host_vms(e, "dear"), 2);
    put_fn(e, "f", PW_POLICY_FIXED, 2, 10, 0, 512);
    sync_all(e);
    assert_int_equal(host_vms(e, "cheap"), 2);
    assert_int_equal(host_vms(e, "dear"), 0);
    env_free(e);
}

/* A drain persisted before a restart holds before the host says hello. */
static void test_remembered_drain(void **state)
{
    (void)state;
    struct env *e = env_new(1, 0);
    pw_core_host_remember_drain(e->c, "b");
    hello_labeled(e, "a", 8192, "z1", "0.02");
    hello_labeled(e, "b", 8192, "z2", "0.01");
    put_fn(e, "f", PW_POLICY_FIXED, 3, 10, 60000, 512);
    sync_all(e);
    assert_int_equal(host_vms(e, "a"), 3);
    assert_int_equal(host_vms(e, "b"), 0);
    env_free(e);
}

/* Spread limits hold for the pool as it will be after a drain, not as it is during it. */
static void test_drain_respects_spread(void **state)
{
    (void)state;
    struct env *e = env_new(1, 0);
    hello_labeled(e, "a", 8192, "z1", "0.01");
    hello_labeled(e, "b", 8192, "z2", "0.02");
    hello_labeled(e, "c", 8192, "z3", "0.03");
    struct pw_function_spec s;
    spread_spec(&s, 4, 0.5, 0);
    assert_int_equal(pw_core_function_put(e->c, e->now, &s), PW_OK);
    drain(e);
    sync_all(e);
    assert_int_equal(host_vms(e, "a"), 2);
    assert_int_equal(host_vms(e, "b"), 2);
    assert_int_equal(pw_core_host_drain(e->c, e->now, "a", 1), PW_OK);
    drain(e);
    sync_all(e);
    assert_int_equal(host_vms(e, "a"), 0);
    assert_int_equal(host_vms(e, "b"), 2); /* cheaper, but already at half */
    assert_int_equal(host_vms(e, "c"), 2);
    env_free(e);
}

/* A zone limit during a drain: the draining host's VMs do not count against its zone, so
 * they can move to another host of the same zone. */
static void test_drain_within_zone_limit(void **state)
{
    (void)state;
    struct env *e = env_new(1, 0);
    hello_labeled(e, "a", 8192, "z1", "0.01");
    hello_labeled(e, "b", 8192, "z2", "0.02");
    hello_labeled(e, "c", 8192, "z3", "0.02");
    hello_labeled(e, "d", 8192, "z1", "0.03");
    struct pw_function_spec s;
    spread_spec(&s, 6, 0, 0.33);
    assert_int_equal(pw_core_function_put(e->c, e->now, &s), PW_OK);
    drain(e);
    sync_all(e);
    assert_int_equal(host_vms(e, "a"), 2);
    assert_int_equal(host_vms(e, "b"), 2);
    assert_int_equal(host_vms(e, "c"), 2);
    assert_int_equal(pw_core_host_drain(e->c, e->now, "a", 1), PW_OK);
    drain(e);
    sync_all(e);
    assert_int_equal(host_vms(e, "a"), 0);
    assert_int_equal(host_vms(e, "d"), 2);
    env_free(e);
}

/* A new function (or a new image) gets its golden snapshot made at once, on one host. */
static void test_function_put_requests_snapshot(void **state)
{
    (void)state;
    struct env *e = env_new(1, 0);
    hello_labeled(e, "a", 8192, "z1", "0.02");
    hello_labeled(e, "b", 8192, "z2", "0.01");
    e->nacts = 0;
    put_fn(e, "f", PW_POLICY_FIXED, 0, 10, 60000, 512);
    assert_int_equal(count_acts(e, PW_ACT_AGENT_CMD, PW_CMD_SNAPSHOT), 1);
    for (size_t i = 0; i < e->nacts; i++)
        if (e->acts[i].type == PW_ACT_AGENT_CMD && e->acts[i].u.cmd.type == PW_CMD_SNAPSHOT) {
            assert_string_equal(e->acts[i].host, "b"); /* where its first VM would go */
            assert_string_equal(e->acts[i].u.cmd.function, "f");
            assert_string_equal(e->acts[i].u.cmd.image, "img");
            assert_int_equal(e->acts[i].u.cmd.memory_mb, 512);
        }
    /* The same spec again: no new snapshot; a new shape: one more. */
    e->nacts = 0;
    put_fn(e, "f", PW_POLICY_FIXED, 1, 10, 60000, 512);
    assert_int_equal(count_acts(e, PW_ACT_AGENT_CMD, PW_CMD_SNAPSHOT), 0);
    put_fn(e, "f", PW_POLICY_FIXED, 1, 10, 60000, 1024);
    assert_int_equal(count_acts(e, PW_ACT_AGENT_CMD, PW_CMD_SNAPSHOT), 1);
    sync_all(e);
    env_free(e);
}

/* Keep-alive expiry decides how many VMs go, placement which: a pool that grew past its spread
 * limit shrinks back within it even when the VM that expired is on the other host. */
static void test_expiry_keeps_spread(void **state)
{
    (void)state;
    for (int round = 0; round < 2; round++) {
        struct env *e = env_new(1, 0);
        hello_labeled(e, "a", 8192, "z1", "0.01");
        hello_labeled(e, "b", 8192, "z2", "0.01");
        struct pw_function_spec s;
        spread_spec(&s, 2, 0.5, 0);
        s.pool.keepalive_ms = 1000;
        assert_int_equal(pw_core_function_put(e->c, e->now, &s), PW_OK);
        drain(e);
        sync_all(e);
        assert_int_equal(host_vms(e, "a"), 1);
        assert_int_equal(host_vms(e, "b"), 1);
        /* Lease one (round 0) or both in turn (round 1): the pool refills to 2 idle. */
        uint64_t leases[2];
        int n = round + 1;
        for (int i = 0; i < n; i++) {
            assert_int_equal(pw_core_acquire(e->c, e->now, "f", 10 + (uint64_t)i, e->now + 5000), PW_OK);
            drain(e);
            const struct pw_action *ans = find_answer(e, 10 + (uint64_t)i);
            assert_non_null(ans);
            leases[i] = ans->u.answer.lease.lease_id;
            sync_all(e);
        }
        e->now += 500;
        for (int i = 0; i < n; i++)
            assert_int_equal(pw_core_release(e->c, e->now, leases[i], 10, PW_RELEASE_OK), PW_OK);
        drain(e);
        sync_all(e);
        assert_int_equal(host_vms(e, "a") + host_vms(e, "b"), 2 + (uint32_t)n);
        /* The oldest VMs expire; the pool goes back to 2, one per host. */
        advance_alive(e, 3000);
        assert_int_equal(pool(e, "f").idle, 2);
        assert_int_equal(host_vms(e, "a"), 1);
        assert_int_equal(host_vms(e, "b"), 1);
        env_free(e);
    }
}

/* Restores that keep failing (a bad image) back off instead of looping; a success resets. */
/* A full host answers "no room" from memory until something frees room: every failed try
 * still counts (several at once as one action with a count), and once a VM is gone the next
 * placement finds its place. */
static void test_no_capacity_remembered(void **state)
{
    (void)state;
    struct env *e = env_new(1, 0);
    do_hello(e, "h1", 2, 2048);
    put_fn(e, "f", PW_POLICY_FIXED, 4, 10, 60000, 1024);
    sync_all(e);
    assert_int_equal(pool(e, "f").idle, 4);
    drain(e);
    size_t nocap = count_metric(e, PW_METRIC_NO_CAPACITY);
    size_t prewarms = count_acts(e, PW_ACT_AGENT_CMD, PW_CMD_PREWARM);
    assert_int_equal(prewarms, 4);
    /* One idle VM short of the pool's 4: one placement, no room. */
    assert_int_equal(pw_core_acquire(e->c, e->now, "f", 1, e->now + 1000), PW_OK);
    drain(e);
    assert_int_equal(count_metric(e, PW_METRIC_NO_CAPACITY), nocap + 1);
    /* Two short: two placements, both without room (the second from memory). */
    assert_int_equal(pw_core_acquire(e->c, e->now, "f", 2, e->now + 1000), PW_OK);
    drain(e);
    assert_int_equal(count_metric(e, PW_METRIC_NO_CAPACITY), nocap + 3);
    assert_int_equal(count_acts(e, PW_ACT_AGENT_CMD, PW_CMD_PREWARM), prewarms);
    /* A failed invocation's VM is destroyed; once the agent says it is gone, its memory is free
     * and the pool restores one VM in its place. */
    const struct pw_action *a = find_answer(e, 1);
    assert_non_null(a);
    assert_int_equal(pw_core_release(e->c, e->now, a->u.answer.lease.lease_id, 3, PW_RELEASE_ERROR), PW_OK);
    drain(e);
    sync_all(e);
    drain(e);
    assert_int_equal(count_acts(e, PW_ACT_AGENT_CMD, PW_CMD_PREWARM), prewarms + 1);
    env_free(e);
}

static void test_restore_failure_backoff(void **state)
{
    (void)state;
    struct env *e = env_new(1, 0);
    do_hello(e, "h1", 1, 8192);
    put_fn(e, "f", PW_POLICY_FIXED, 1, 10, 60000, 256);
    struct sim_agent *a = agent(e, "h1");
    size_t prewarms = 0;
    /* Fail every restore for 2 s of reports every 20 ms. */
    for (int step = 0; step < 100; step++) {
        struct pw_msg r = report(e, a);
        if (r.type == PW_MSG_REPLY)
            for (size_t i = 0; i < r.u.reply.ncmds; i++) {
                const struct pw_cmd *cmd = &r.u.reply.cmds[i];
                if (cmd->id <= a->cmd_ack)
                    continue;
                a->cmd_ack = cmd->id;
                if (cmd->type == PW_CMD_PREWARM) {
                    prewarms++;
                    add_event(a, cmd->vm_id, PW_AVM_FAILED, cmd->function);
                } else if (cmd->type == PW_CMD_DESTROY) {
                    add_event(a, cmd->vm_id, PW_AVM_GONE, cmd->function);
                }
            }
        pw_msg_fini(&r);
        e->now += 20;
        pw_core_tick(e->c, e->now);
        drain(e);
        check(e);
    }
    /* A retry at once, then waits of 100, 200, 400, 800 ms fit in 2 s: about 6 attempts, not
     * 100. */
    print_message("restores attempted in 2 s of failures: %zu\n", prewarms);
    assert_true(prewarms >= 3 && prewarms <= 7);
    assert_true(pool(e, "f").restore_failures >= 3);
    /* The image is fixed: once the backoff passes, the next restore succeeds and resets it. */
    advance_alive(e, 4000);
    assert_int_equal(pool(e, "f").idle, 1);
    assert_int_equal(pool(e, "f").restore_failures, 0);
    env_free(e);
}

/* fail_restoring reports every restoring VM of agent id as failed. */
static void fail_restoring(struct env *e, const char *id)
{
    struct sim_agent *a = agent(e, id);
    for (size_t i = 0; i < a->nvms; i++)
        if (a->vms[i].state == PW_AVM_RESTORING) {
            a->vms[i].state = PW_AVM_FAILED;
            add_event(a, a->vms[i].vm_id, PW_AVM_FAILED, a->vms[i].function);
        }
    sync_agent(e, id, 0);
}

static struct pw_host_view *host_view(struct env *e, const char *id)
{
    static struct pw_host_view v;
    assert_int_equal(pw_core_host_find(e->c, id, &v), PW_OK);
    return &v;
}

/* Self-healing (health.c): a host whose restores all fail while the fleet's succeed is
 * cordoned, its pool refilled elsewhere; after the cordon time it is on probation, and good
 * restores there uncordon it. A failure everywhere cordons nobody. */
static void test_cordon_failing_host(void **state)
{
    (void)state;
    struct env *e = env_new(1, 0);
    /* The fleet: three hosts with a restore history (2 x 2 GiB each, 256 MiB left over). */
    hello_labeled(e, "h1", 4352, "z", "0.02");
    hello_labeled(e, "h2", 4352, "z", "0.02");
    hello_labeled(e, "h3", 4352, "z", "0.02");
    put_fn(e, "f", PW_POLICY_FIXED, 6, 6, 0, 2048);
    sync_all(e);
    assert_int_equal(pool(e, "f").idle, 6);
    /* A cheaper host whose restores fail: placement prefers it. */
    hello_labeled(e, "bad", 4096, "z", "0.001");
    e->nacts = 0;
    put_fn(e, "g", PW_POLICY_FIXED, 3, 3, 0, 256);
    for (int round = 0; round < 20 && !host_view(e, "bad")->cordoned; round++) {
        sync_agent(e, "bad", 0);
        fail_restoring(e, "bad");
        tick(e, 400); /* past the function's restore backoff */
    }
    struct pw_host_view *v = host_view(e, "bad");
    assert_true(v->cordoned);
    assert_false(v->cordon_probation);
    assert_string_equal(v->cordon_reason, "restore_failures");
    assert_int_equal(count_metric(e, PW_METRIC_HOST_CORDONED), 1);
    /* Refilled on the fleet; nothing new goes to the cordoned host (a restore placed there
     * before the cordon still ends as it ends: here it fails too). */
    fail_restoring(e, "bad");
    advance_alive(e, 2000);
    assert_int_equal(pool(e, "g").idle, 3);
    assert_int_equal(host_vms(e, "bad"), 0);
    /* After the cordon time (30 s): probation; restores there succeed now and uncordon it. */
    advance_alive(e, 31000);
    v = host_view(e, "bad");
    assert_true(v->cordoned && v->cordon_probation);
    e->nacts = 0;
    put_fn(e, "g", PW_POLICY_FIXED, 7, 7, 0, 256);
    advance_alive(e, 1000);
    assert_true(host_vms(e, "bad") >= 3);
    assert_false(host_view(e, "bad")->cordoned);
    assert_int_equal(count_metric(e, PW_METRIC_HOST_UNCORDONED), 1);
    env_free(e);
}

/* When every host's restores fail, the image or the function is at fault: nobody is
 * cordoned. */
static void test_no_cordon_when_all_fail(void **state)
{
    (void)state;
    struct env *e = env_new(1, 0);
    hello_labeled(e, "h1", 8192, "z", "0.02");
    hello_labeled(e, "h2", 8192, "z", "0.02");
    hello_labeled(e, "h3", 8192, "z", "0.02");
    put_fn(e, "f", PW_POLICY_FIXED, 6, 6, 0, 2048);
    for (int round = 0; round < 12; round++) {
        for (size_t k = 0; k < e->nagents; k++) {
            sync_agent(e, e->agents[k].id, 0);
            fail_restoring(e, e->agents[k].id);
        }
        tick(e, 400);
    }
    assert_int_equal(count_metric(e, PW_METRIC_RESTORE_FAILED) > 6, 1);
    assert_int_equal(count_metric(e, PW_METRIC_HOST_CORDONED), 0);
    for (size_t k = 0; k < e->nagents; k++)
        assert_false(host_view(e, e->agents[k].id)->cordoned);
    env_free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_validation),
        cmocka_unit_test(test_fixed_pool_fills),
        cmocka_unit_test(test_acquire_warm_release),
        cmocka_unit_test(test_acquire_takes_most_recent),
        cmocka_unit_test(test_acquire_cold),
        cmocka_unit_test(test_acquire_timeout),
        cmocka_unit_test(test_acquire_errors),
        cmocka_unit_test(test_lease_expiry),
        cmocka_unit_test(test_release_error_recycles),
        cmocka_unit_test(test_agent_death),
        cmocka_unit_test(test_keepalive_expiry_fixed),
        cmocka_unit_test(test_keepalive_policy),
        cmocka_unit_test(test_min_max_clamping),
        cmocka_unit_test(test_restore_failure),
        cmocka_unit_test(test_vm_lost),
        cmocka_unit_test(test_outbox_and_events_idempotent),
        cmocka_unit_test(test_restart_adoption),
        cmocka_unit_test(test_grace_timeout),
        cmocka_unit_test(test_placement_single_node),
        cmocka_unit_test(test_placement_spread),
        cmocka_unit_test(test_function_delete),
        cmocka_unit_test(test_bad_hello),
        cmocka_unit_test(test_agent_restart),
        cmocka_unit_test(test_restoring_stopping_and_failed_gone),
        cmocka_unit_test(test_lease_lifecycle),
        cmocka_unit_test(test_notes_never_block_commands),
        cmocka_unit_test(test_dynamic_overlay),
        cmocka_unit_test(test_drain_moves_idle_vms),
        cmocka_unit_test(test_drain_cancels_restores),
        cmocka_unit_test(test_agent_reported_drain),
        cmocka_unit_test(test_constraints_in_core),
        cmocka_unit_test(test_reap_expensive_first),
        cmocka_unit_test(test_remembered_drain),
        cmocka_unit_test(test_drain_respects_spread),
        cmocka_unit_test(test_drain_within_zone_limit),
        cmocka_unit_test(test_function_put_requests_snapshot),
        cmocka_unit_test(test_expiry_keeps_spread),
        cmocka_unit_test(test_restore_failure_backoff),
        cmocka_unit_test(test_cordon_failing_host),
        cmocka_unit_test(test_no_cordon_when_all_fail),
        cmocka_unit_test(test_no_capacity_remembered),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
