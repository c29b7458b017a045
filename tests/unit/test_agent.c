/* test_agent.c — the agent against a fake scheduler: a real NNG rep0 socket on an ipc:// path in
 * a temp dir, speaking the wire protocol through pw_proto_encode/decode. The agent runs in its
 * own thread (pw_agent_run); the test thread is the scheduler. Every wait is bounded. */
#include "pw/agent.h"
#include "pw/error.h"
#include "pw/proto.h"
#include "pw/util.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define FIXTURES PW_SOURCE_DIR "/tests/fixtures/topology"
#define WAIT_MS 5000 /* upper bound for any single expectation */

struct fake {
    char dir[PATH_MAX];
    char url[PATH_MAX + 16];
    nng_socket rep;
    struct pw_agent *agent;
    pthread_t thread;
    int running;
};

static void *agent_thread(void *arg)
{
    struct fake *f = arg;
    pw_agent_run(f->agent);
    return NULL;
}

/* fake_start listens, then starts an agent on fixture (a name under tests/fixtures/topology,
 * or an absolute path) with cfg tweaks applied by tweak. */
static void fake_start(struct fake *f, const char *fixture,
                       void (*tweak)(struct pw_agent_config *c))
{
    memset(f, 0, sizeof(*f));
    const char *base = getenv("TMPDIR");
    snprintf(f->dir, sizeof(f->dir), "%s/pw-agent-XXXXXX",
             base != NULL && base[0] != '\0' ? base : "/tmp");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->url, sizeof(f->url), "ipc://%s/sched.ipc", f->dir);
    assert_int_equal(nng_rep0_open(&f->rep), 0);
    assert_int_equal(nng_socket_set_size(f->rep, NNG_OPT_RECVMAXSZ, PW_PROTO_MAX_MSG), 0);
    assert_int_equal(nng_listen(f->rep, f->url, NULL, 0), 0);

    struct pw_agent_config c;
    char err[256];
    pw_agent_config_init(&c);
    assert_int_equal(pw_agent_config_set(&c, "id", "host-1", err, sizeof(err)), PW_OK);
    assert_int_equal(pw_agent_config_set(&c, "scheduler", f->url, err, sizeof(err)), PW_OK);
    char root[PATH_MAX];
    if (fixture[0] == '/')
        pw_strlcpy(root, fixture, sizeof(root));
    else
        snprintf(root, sizeof(root), "%s/%s", FIXTURES, fixture);
    assert_int_equal(pw_agent_config_set(&c, "topology_root", root, err, sizeof(err)), PW_OK);
    assert_int_equal(pw_agent_config_set(&c, "label", "cloud=aws", err, sizeof(err)), PW_OK);
    assert_int_equal(pw_agent_config_set(&c, "label", "zone=eu-west-1a", err, sizeof(err)),
                     PW_OK);
    c.sim_restore_ms = 100;
    c.sim_stop_max_ms = 5;
    c.handle_signals = 0;
    c.error_backoff_ms = 200;
    c.log_level = PW_LOG_WARN;
    if (tweak != NULL)
        tweak(&c);
    pw_log_set_level(c.log_level);
    f->agent = pw_agent_new(&c, err, sizeof(err));
    if (f->agent == NULL)
        fail_msg("pw_agent_new: %s", err);
    assert_int_equal(pthread_create(&f->thread, NULL, agent_thread, f), 0);
    f->running = 1;
}

static void fake_stop(struct fake *f)
{
    if (f->running) {
        pw_agent_stop(f->agent);
        pthread_join(f->thread, NULL);
        f->running = 0;
    }
    pw_agent_free(f->agent);
    nng_close(f->rep);
    char path[PATH_MAX + 16];
    snprintf(path, sizeof(path), "%s/sched.ipc", f->dir);
    unlink(path);
    rmdir(f->dir);
}

/* recv_req waits up to timeout_ms for the agent's next request. Returns 0 or NNG_ETIMEDOUT. */
static int recv_req(struct fake *f, int timeout_ms, struct pw_msg *m)
{
    nng_socket_set_ms(f->rep, NNG_OPT_RECVTIMEO, timeout_ms);
    nng_msg *msg;
    int rv = nng_recvmsg(f->rep, &msg, 0);
    if (rv != 0)
        return rv;
    char err[256] = "";
    int prv = pw_proto_decode(nng_msg_body(msg), nng_msg_len(msg), m, err, sizeof(err));
    if (prv != PW_OK)
        fail_msg("agent sent an undecodable message (%s): %.*s", err, (int)nng_msg_len(msg),
                 (char *)nng_msg_body(msg));
    nng_msg_free(msg);
    return 0;
}

static void send_msg(struct fake *f, const struct pw_msg *m)
{
    struct pw_buf b;
    pw_buf_init(&b, PW_PROTO_MAX_MSG);
    assert_int_equal(pw_proto_encode(m, &b), PW_OK);
    assert_int_equal(nng_send(f->rep, b.data, b.len, 0), 0);
    pw_buf_fini(&b);
}

static void send_error(struct fake *f, const char *code)
{
    struct pw_msg m;
    pw_msg_init(&m, PW_MSG_ERROR);
    pw_strlcpy(m.u.error.code, code, sizeof(m.u.error.code));
    pw_strlcpy(m.u.error.message, "test", sizeof(m.u.error.message));
    send_msg(f, &m);
}

/* A reply under construction: up to 8 commands. */
struct reply {
    struct pw_msg_reply r;
    struct pw_cmd cmds[8];
};

static void reply_init(struct reply *rp, uint64_t epoch, uint64_t event_ack)
{
    memset(rp, 0, sizeof(*rp));
    rp->r.epoch = epoch;
    rp->r.event_ack = event_ack;
    rp->r.heartbeat_ms = 5000; /* agent's request timeout becomes 11 s: far beyond any wait */
    rp->r.cmds = rp->cmds;
}

static struct pw_cmd *add_cmd(struct reply *rp, uint64_t id, enum pw_cmd_type type,
                              uint64_t vm_id)
{
    assert_true(rp->r.ncmds < PW_ARRAY_LEN(rp->cmds));
    struct pw_cmd *c = &rp->cmds[rp->r.ncmds++];
    memset(c, 0, sizeof(*c));
    c->id = id;
    c->type = type;
    c->vm_id = vm_id;
    c->numa_node = 0;
    if (type == PW_CMD_PREWARM) {
        pw_strlcpy(c->function, "fn-a", sizeof(c->function));
        pw_strlcpy(c->image, "fn-a:v1", sizeof(c->image));
        c->memory_mb = 512;
        c->vcpus = 1;
    }
    return c;
}

static void send_reply(struct fake *f, const struct reply *rp)
{
    struct pw_msg m;
    m.type = PW_MSG_REPLY;
    m.u.reply = rp->r; /* borrowed arrays: never pw_msg_fini'd */
    send_msg(f, &m);
}

typedef int (*req_pred)(const struct pw_msg *m, const void *arg);

/* exchange answers the pending request with rp, then keeps answering every further request
 * with the same reply (as a scheduler repeats unacknowledged commands) until one satisfies
 * pred; that one is returned in *out, unanswered. */
static void exchange(struct fake *f, const struct reply *rp, req_pred pred, const void *arg,
                     struct pw_msg *out)
{
    int64_t deadline = pw_now_mono_ms() + WAIT_MS;
    send_reply(f, rp);
    for (;;) {
        int64_t left = deadline - pw_now_mono_ms();
        if (left <= 0 || recv_req(f, (int)left, out) != 0)
            fail_msg("exchange: no matching request within %d ms", WAIT_MS);
        if (pred(out, arg))
            return;
        pw_msg_fini(out);
        send_reply(f, rp);
    }
}

/* hold_until receives requests without answering any (the long poll is held) until one
 * satisfies pred. */
static void hold_until(struct fake *f, int timeout_ms, req_pred pred, const void *arg,
                       struct pw_msg *out)
{
    int64_t deadline = pw_now_mono_ms() + timeout_ms;
    for (;;) {
        int64_t left = deadline - pw_now_mono_ms();
        if (left <= 0 || recv_req(f, (int)left, out) != 0)
            fail_msg("hold_until: no matching request within %d ms", timeout_ms);
        if (pred(out, arg))
            return;
        pw_msg_fini(out);
    }
}

/* ---- predicates ---- */

static int is_report(const struct pw_msg *m, const void *arg)
{
    (void)arg;
    return m->type == PW_MSG_REPORT;
}

static int is_hello(const struct pw_msg *m, const void *arg)
{
    (void)arg;
    return m->type == PW_MSG_HELLO;
}

static int cmd_ack_is(const struct pw_msg *m, const void *arg)
{
    return m->type == PW_MSG_REPORT && m->u.report.cmd_ack == *(const uint64_t *)arg;
}

static int has_inventory(const struct pw_msg *m, const void *arg)
{
    (void)arg;
    return m->type == PW_MSG_REPORT && m->u.report.has_inventory;
}

static int no_events(const struct pw_msg *m, const void *arg)
{
    (void)arg;
    return m->type == PW_MSG_REPORT && m->u.report.nevents == 0;
}

struct want_ev {
    uint64_t vm_id;
    enum pw_avm_state state;
};

static const struct pw_agent_event *find_event(const struct pw_msg *m, uint64_t vm_id,
                                               enum pw_avm_state state)
{
    if (m->type != PW_MSG_REPORT)
        return NULL;
    for (size_t i = 0; i < m->u.report.nevents; i++)
        if (m->u.report.events[i].vm_id == vm_id && m->u.report.events[i].state == state)
            return &m->u.report.events[i];
    return NULL;
}

static int has_event(const struct pw_msg *m, const void *arg)
{
    const struct want_ev *w = arg;
    return find_event(m, w->vm_id, w->state) != NULL;
}

/* A set of events that must all be in one report. */
struct want_evs {
    size_t n;
    struct want_ev ev[4];
};

static int has_events(const struct pw_msg *m, const void *arg)
{
    const struct want_evs *w = arg;
    for (size_t i = 0; i < w->n; i++)
        if (find_event(m, w->ev[i].vm_id, w->ev[i].state) == NULL)
            return 0;
    return 1;
}

static int draining_is(const struct pw_msg *m, const void *arg)
{
    return m->type == PW_MSG_REPORT && m->u.report.draining == *(const int *)arg;
}

static const struct pw_vm_info *find_vm(const struct pw_vm_info *vms, size_t n, uint64_t vm_id)
{
    for (size_t i = 0; i < n; i++)
        if (vms[i].vm_id == vm_id)
            return &vms[i];
    return NULL;
}

/* start_session receives the hello and returns it in *hello. */
static void start_session(struct fake *f, struct pw_msg *hello)
{
    assert_int_equal(recv_req(f, WAIT_MS, hello), 0);
    assert_int_equal(hello->type, PW_MSG_HELLO);
}

/* ---- tests ---- */

static void test_hello_content(void **state)
{
    (void)state;
    struct fake f;
    struct pw_msg m;
    fake_start(&f, "2node", NULL);
    start_session(&f, &m);
    const struct pw_msg_hello *h = &m.u.hello;
    assert_string_equal(h->agent_id, "host-1");
    assert_int_equal(strlen(h->boot_id), 16);
    assert_int_equal(strspn(h->boot_id, "0123456789abcdef"), 16);
    assert_string_equal(h->driver, "sim");
    assert_string_equal(h->version, PW_VERSION_STRING);
    assert_int_equal(h->epoch, 0);
    assert_int_equal(h->cmd_ack, 0);
    assert_int_equal(h->nlabels, 2);
    assert_string_equal(h->labels[0].key, "cloud");
    assert_string_equal(h->labels[0].value, "aws");
    assert_string_equal(h->labels[1].key, "zone");
    assert_string_equal(h->labels[1].value, "eu-west-1a");
    assert_int_equal(h->nnuma, 2);
    assert_string_equal(h->numa[0].cpulist, "0-3");
    assert_string_equal(h->numa[1].cpulist, "4-7");
    assert_int_equal(h->numa[1].id, 1);
    assert_int_equal(h->numa[1].ncpus, 4);
    assert_int_equal(h->numa[1].mem_total_mb, 16384);
    assert_int_equal(h->numa[1].mem_free_mb, 15872);
    assert_int_equal(h->numa[1].vcpu_total, 4);
    assert_int_equal(h->numa[1].vcpu_free, 4);
    assert_int_equal(h->nvms, 0);
    pw_msg_fini(&m);

    /* The first report follows the reply at once, with the load from the fixture. */
    struct reply rp;
    reply_init(&rp, 1, 0);
    exchange(&f, &rp, is_report, NULL, &m);
    assert_int_equal(m.u.report.seq, 1);
    assert_int_equal(m.u.report.epoch, 1);
    assert_int_equal(m.u.report.cmd_ack, 0);
    assert_true(m.u.report.load > 1.49 && m.u.report.load < 1.51);
    assert_int_equal(m.u.report.nnuma, 2);
    assert_int_equal(m.u.report.nevents, 0);
    assert_int_equal(m.u.report.has_inventory, 0);
    pw_msg_fini(&m);
    fake_stop(&f);
}

/* A prewarm's RUNNING event must cut the long poll short: the report the fake holds is
 * cancelled and a new one with the event arrives well before the heartbeat (5 s). Then the
 * event repeats until acknowledged. */
static void test_prewarm_running_early(void **state)
{
    (void)state;
    struct fake f;
    struct pw_msg m;
    fake_start(&f, "1node", NULL);
    start_session(&f, &m);
    pw_msg_fini(&m);

    struct reply rp;
    reply_init(&rp, 1, 0);
    add_cmd(&rp, 1, PW_CMD_PREWARM, 42);
    int64_t t0 = pw_now_mono_ms();
    uint64_t ack = 1;
    exchange(&f, &rp, cmd_ack_is, &ack, &m);
    assert_int_equal(m.u.report.nnuma, 1);
    assert_int_equal(m.u.report.numa[0].mem_free_mb, 7168 - 512);
    assert_int_equal(m.u.report.numa[0].vcpu_free, 3);
    pw_msg_fini(&m);

    /* Hold that report; the next request must come by itself, carrying RUNNING. */
    struct want_ev w = {42, PW_AVM_RUNNING};
    hold_until(&f, 2000, has_event, &w, &m);
    int64_t took = pw_now_mono_ms() - t0;
    const struct pw_agent_event *ev = find_event(&m, 42, PW_AVM_RUNNING);
    print_message("RUNNING reported %lld ms after the prewarm (restore 100 ms)\n",
                  (long long)took);
    assert_true(took >= 90);
    assert_true(took < 1500);
    assert_true(ev->restore_ms >= 90 && ev->restore_ms < 1500);
    assert_string_equal(ev->function, "fn-a");
    assert_int_equal(ev->numa_node, 0);
    assert_true(strncmp(ev->address, "127.0.0.1:", 10) == 0);
    uint64_t seq = ev->seq;
    pw_msg_fini(&m);

    /* Not acknowledged: repeated in the next report. */
    reply_init(&rp, 1, 0);
    exchange(&f, &rp, is_report, NULL, &m);
    ev = find_event(&m, 42, PW_AVM_RUNNING);
    assert_non_null(ev);
    assert_int_equal(ev->seq, seq);
    pw_msg_fini(&m);

    /* Acknowledged: gone from the next report. */
    reply_init(&rp, 1, seq);
    exchange(&f, &rp, is_report, NULL, &m);
    assert_int_equal(m.u.report.nevents, 0);
    pw_msg_fini(&m);
    fake_stop(&f);
}

static void slow_restore(struct pw_agent_config *c) { c->sim_restore_ms = 60000; }

/* Commands run once per (epoch, id); a lower epoch is refused; a higher epoch resets the
 * command ids. */
static void test_dedupe_and_epochs(void **state)
{
    (void)state;
    struct fake f;
    struct pw_msg m;
    fake_start(&f, "1node", slow_restore);
    start_session(&f, &m);
    pw_msg_fini(&m);

    struct reply rp;
    reply_init(&rp, 5, 0);
    add_cmd(&rp, 1, PW_CMD_PREWARM, 1);
    uint64_t ack = 1;
    exchange(&f, &rp, cmd_ack_is, &ack, &m);
    assert_int_equal(m.u.report.epoch, 5);
    pw_msg_fini(&m);

    /* The same command again, and a different one under the same id: neither runs. */
    reply_init(&rp, 5, 0);
    add_cmd(&rp, 1, PW_CMD_PREWARM, 1);
    rp.r.want_inventory = 1;
    exchange(&f, &rp, has_inventory, NULL, &m);
    assert_int_equal(m.u.report.cmd_ack, 1);
    assert_int_equal(m.u.report.nvms, 1);
    assert_int_equal(m.u.report.nevents, 0);
    pw_msg_fini(&m);
    reply_init(&rp, 5, 0);
    add_cmd(&rp, 1, PW_CMD_PREWARM, 2);
    rp.r.want_inventory = 1;
    exchange(&f, &rp, has_inventory, NULL, &m);
    assert_int_equal(m.u.report.cmd_ack, 1);
    assert_int_equal(m.u.report.nvms, 1);
    assert_int_equal(m.u.report.vms[0].vm_id, 1);
    assert_int_equal(m.u.report.vms[0].state, PW_AVM_RESTORING);
    pw_msg_fini(&m);

    /* A deposed leader (epoch 4) is refused entirely, inventory request included. */
    reply_init(&rp, 4, 0);
    add_cmd(&rp, 2, PW_CMD_PREWARM, 3);
    rp.r.want_inventory = 1;
    send_reply(&f, &rp);
    assert_int_equal(recv_req(&f, WAIT_MS, &m), 0);
    assert_int_equal(m.type, PW_MSG_REPORT);
    assert_int_equal(m.u.report.epoch, 5);
    assert_int_equal(m.u.report.cmd_ack, 1);
    assert_int_equal(m.u.report.has_inventory, 0);
    pw_msg_fini(&m);
    reply_init(&rp, 5, 0);
    rp.r.want_inventory = 1;
    exchange(&f, &rp, has_inventory, NULL, &m);
    assert_int_equal(m.u.report.nvms, 1);
    assert_null(find_vm(m.u.report.vms, m.u.report.nvms, 3));
    pw_msg_fini(&m);

    /* A new leader (epoch 6) starts its ids again at 1. */
    reply_init(&rp, 6, 0);
    add_cmd(&rp, 1, PW_CMD_PREWARM, 4);
    rp.r.want_inventory = 1;
    exchange(&f, &rp, has_inventory, NULL, &m);
    assert_int_equal(m.u.report.epoch, 6);
    assert_int_equal(m.u.report.cmd_ack, 1);
    assert_int_equal(m.u.report.nvms, 2);
    assert_non_null(find_vm(m.u.report.vms, m.u.report.nvms, 1));
    assert_non_null(find_vm(m.u.report.vms, m.u.report.nvms, 4));
    pw_msg_fini(&m);
    fake_stop(&f);
}

static int gone_7_and_99(const struct pw_msg *m, const void *arg)
{
    (void)arg;
    return find_event(m, 7, PW_AVM_GONE) != NULL && find_event(m, 99, PW_AVM_GONE) != NULL;
}

/* Lease bookkeeping, DESTROY -> GONE, and DESTROY of an unknown VM -> GONE anyway. */
static void test_lease_and_destroy(void **state)
{
    (void)state;
    struct fake f;
    struct pw_msg m;
    fake_start(&f, "1node", NULL);
    start_session(&f, &m);
    pw_msg_fini(&m);

    struct reply rp;
    reply_init(&rp, 1, 0);
    add_cmd(&rp, 1, PW_CMD_PREWARM, 7);
    struct want_ev w = {7, PW_AVM_RUNNING};
    exchange(&f, &rp, has_event, &w, &m);
    uint64_t seq = find_event(&m, 7, PW_AVM_RUNNING)->seq;
    pw_msg_fini(&m);

    reply_init(&rp, 1, seq);
    struct pw_cmd *c = add_cmd(&rp, 2, PW_CMD_LEASE, 7);
    c->lease_id = 0xabc;
    c->lease_ttl_ms = 30000;
    rp.r.want_inventory = 1;
    exchange(&f, &rp, has_inventory, NULL, &m);
    const struct pw_vm_info *vm = find_vm(m.u.report.vms, m.u.report.nvms, 7);
    assert_non_null(vm);
    assert_int_equal(vm->state, PW_AVM_RUNNING);
    assert_int_equal(vm->lease_id, 0xabc);
    assert_true(vm->lease_left_ms > 25000 && vm->lease_left_ms <= 30000);
    assert_true(strncmp(vm->address, "127.0.0.1:", 10) == 0);
    pw_msg_fini(&m);

    reply_init(&rp, 1, seq);
    add_cmd(&rp, 3, PW_CMD_UNLEASE, 7);
    rp.r.want_inventory = 1;
    exchange(&f, &rp, has_inventory, NULL, &m);
    vm = find_vm(m.u.report.vms, m.u.report.nvms, 7);
    assert_non_null(vm);
    assert_int_equal(vm->lease_id, 0);
    pw_msg_fini(&m);

    reply_init(&rp, 1, seq);
    add_cmd(&rp, 4, PW_CMD_DESTROY, 7);
    add_cmd(&rp, 5, PW_CMD_DESTROY, 99);
    exchange(&f, &rp, gone_7_and_99, NULL, &m);
    assert_int_equal(m.u.report.cmd_ack, 5);
    assert_int_equal(m.u.report.numa[0].mem_free_mb, 7168);
    uint64_t last = 0;
    for (size_t i = 0; i < m.u.report.nevents; i++)
        last = PW_MAX(last, m.u.report.events[i].seq);
    pw_msg_fini(&m);

    reply_init(&rp, 1, last);
    rp.r.want_inventory = 1;
    exchange(&f, &rp, has_inventory, NULL, &m);
    assert_int_equal(m.u.report.nvms, 0);
    assert_int_equal(m.u.report.nevents, 0);
    pw_msg_fini(&m);
    fake_stop(&f);
}

/* "rehello" makes the agent say hello again, with the running VM in its inventory; any other
 * error backs off before the next report. */
static void test_rehello_and_errors(void **state)
{
    (void)state;
    struct fake f;
    struct pw_msg m;
    fake_start(&f, "2node", NULL);
    start_session(&f, &m);
    pw_msg_fini(&m);

    struct reply rp;
    reply_init(&rp, 3, 0);
    struct pw_cmd *c = add_cmd(&rp, 1, PW_CMD_PREWARM, 5);
    c->numa_node = 1;
    c->memory_mb = 1024;
    struct want_ev w = {5, PW_AVM_RUNNING};
    exchange(&f, &rp, has_event, &w, &m);
    pw_msg_fini(&m);

    int64_t t0 = pw_now_mono_ms();
    send_error(&f, "busy");
    assert_int_equal(recv_req(&f, WAIT_MS, &m), 0);
    assert_int_equal(m.type, PW_MSG_REPORT);
    assert_true(pw_now_mono_ms() - t0 >= 150); /* error_backoff_ms = 200 */
    pw_msg_fini(&m);

    send_error(&f, "rehello");
    hold_until(&f, WAIT_MS, is_hello, NULL, &m);
    const struct pw_msg_hello *h = &m.u.hello;
    assert_int_equal(h->epoch, 3);
    assert_int_equal(h->cmd_ack, 1);
    assert_int_equal(h->event_seq, 1);
    assert_int_equal(h->nvms, 1);
    assert_int_equal(h->vms[0].vm_id, 5);
    assert_int_equal(h->vms[0].state, PW_AVM_RUNNING);
    assert_int_equal(h->vms[0].numa_node, 1);
    assert_int_equal(h->vms[0].memory_mb, 1024);
    assert_string_equal(h->vms[0].function, "fn-a");
    assert_true(strncmp(h->vms[0].address, "127.0.0.1:", 10) == 0);
    assert_int_equal(h->numa[1].mem_free_mb, 15872 - 1024);
    assert_int_equal(h->numa[0].mem_free_mb, 15360);
    pw_msg_fini(&m);

    reply_init(&rp, 3, 1);
    exchange(&f, &rp, no_events, NULL, &m);
    assert_int_equal(m.u.report.cmd_ack, 1);
    pw_msg_fini(&m);
    fake_stop(&f);
}

static int acked_5(const struct pw_msg *m, const void *arg)
{
    (void)arg;
    return m->type == PW_MSG_REPORT && m->u.report.cmd_ack == 5;
}

/* Memory (and vCPU) accounting per NUMA node: what does not fit fails with a clear reason. */
static void test_memory_accounting(void **state)
{
    (void)state;
    struct fake f;
    struct pw_msg m;
    fake_start(&f, "1node", slow_restore);
    start_session(&f, &m);
    pw_msg_fini(&m);

    /* Node 0 offers 7168 MB (MemFree) and 4 vCPUs. */
    struct reply rp;
    reply_init(&rp, 1, 0);
    add_cmd(&rp, 1, PW_CMD_PREWARM, 10)->memory_mb = 8000;
    add_cmd(&rp, 2, PW_CMD_PREWARM, 11)->memory_mb = 4096;
    add_cmd(&rp, 3, PW_CMD_PREWARM, 12)->memory_mb = 4096;
    add_cmd(&rp, 4, PW_CMD_PREWARM, 13)->vcpus = 64;
    add_cmd(&rp, 5, PW_CMD_PREWARM, 14)->numa_node = 3;
    exchange(&f, &rp, acked_5, NULL, &m);
    const struct pw_agent_event *ev;
    ev = find_event(&m, 10, PW_AVM_FAILED);
    assert_non_null(ev);
    assert_non_null(strstr(ev->error, "no memory on node 0"));
    assert_null(find_event(&m, 11, PW_AVM_FAILED));
    ev = find_event(&m, 12, PW_AVM_FAILED);
    assert_non_null(ev);
    assert_non_null(strstr(ev->error, "no memory on node 0"));
    ev = find_event(&m, 13, PW_AVM_FAILED);
    assert_non_null(ev);
    assert_non_null(strstr(ev->error, "no vCPUs on node 0"));
    ev = find_event(&m, 14, PW_AVM_FAILED);
    assert_non_null(ev);
    assert_non_null(strstr(ev->error, "no NUMA node 3"));
    assert_int_equal(m.u.report.numa[0].mem_free_mb, 7168 - 4096);
    assert_int_equal(m.u.report.numa[0].vcpu_free, 3);
    pw_msg_fini(&m);
    fake_stop(&f);
}

static void tiny_outbox(struct pw_agent_config *c) { c->outbox_max = 3; }

static int acked_6(const struct pw_msg *m, const void *arg)
{
    (void)arg;
    return m->type == PW_MSG_REPORT && m->u.report.cmd_ack == 6;
}

/* The outbox is bounded: the oldest events go, and the inventory comes instead. */
static void test_outbox_bound(void **state)
{
    (void)state;
    struct fake f;
    struct pw_msg m;
    fake_start(&f, "1node", tiny_outbox);
    start_session(&f, &m);
    pw_msg_fini(&m);
    struct reply rp;
    reply_init(&rp, 1, 0);
    for (uint64_t i = 1; i <= 6; i++)
        add_cmd(&rp, i, PW_CMD_DESTROY, 100 + i);
    exchange(&f, &rp, acked_6, NULL, &m);
    assert_int_equal(m.u.report.nevents, 3);
    assert_int_equal(m.u.report.events[0].vm_id, 104);
    assert_int_equal(m.u.report.events[2].vm_id, 106);
    assert_int_equal(m.u.report.has_inventory, 1);
    pw_msg_fini(&m);
    fake_stop(&f);
}

/* Stopping before the scheduler ever answers is clean and quick. */
static void test_stop_unanswered(void **state)
{
    (void)state;
    struct fake f;
    struct pw_msg m;
    fake_start(&f, "4node", NULL);
    start_session(&f, &m);
    assert_int_equal(m.u.hello.nnuma, 4);
    pw_msg_fini(&m);
    int64_t t0 = pw_now_mono_ms();
    fake_stop(&f);
    assert_true(pw_now_mono_ms() - t0 < 2000);
}

/* Config sources: file, then environment on top; every value validated the same way. */
static void test_config_sources(void **state)
{
    (void)state;
    char dir[PATH_MAX], path[PATH_MAX + 16], err[256] = "";
    const char *base = getenv("TMPDIR");
    snprintf(dir, sizeof(dir), "%s/pw-agentcfg-XXXXXX",
             base != NULL && base[0] != '\0' ? base : "/tmp");
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/agent.json", dir);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs("{\"id\": \"host-9\", \"scheduler\": \"tcp://10.0.0.5:7070\", "
          "\"labels\": {\"cloud\": \"gcp\", \"cost\": \"0.12\"}, \"sim_restore_ms\": 150, "
          "\"sim_jitter_ms\": \"2s\", \"sim_fail_rate\": 0.25, \"vcpu_overcommit\": 2, "
          "\"log_level\": \"debug\"}",
          fp);
    fclose(fp);

    struct pw_agent_config c;
    pw_agent_config_init(&c);
    assert_int_equal(pw_agent_config_load_file(&c, path, err, sizeof(err)), PW_OK);
    assert_string_equal(c.id, "host-9");
    assert_string_equal(c.scheduler_url, "tcp://10.0.0.5:7070");
    assert_int_equal(c.nlabels, 2);
    assert_string_equal(c.labels[1].key, "cost");
    assert_int_equal(c.sim_restore_ms, 150);
    assert_int_equal(c.sim_jitter_ms, 2000);
    assert_true(c.sim_fail_rate > 0.24 && c.sim_fail_rate < 0.26);
    assert_true(c.vcpu_overcommit > 1.99 && c.vcpu_overcommit < 2.01);
    assert_int_equal(c.log_level, PW_LOG_DEBUG);

    /* The environment wins over the file. */
    setenv("PREWARM_SCHEDULER", "ipc:///tmp/other.ipc", 1);
    assert_int_equal(pw_agent_config_load_env(&c, err, sizeof(err)), PW_OK);
    assert_string_equal(c.scheduler_url, "ipc:///tmp/other.ipc");
    setenv("PREWARM_DRIVER", "qemu-not-yet", 1);
    assert_int_equal(pw_agent_config_load_env(&c, err, sizeof(err)), PW_ERR_INVAL);
    assert_non_null(strstr(err, "PREWARM_DRIVER"));
    unsetenv("PREWARM_SCHEDULER");
    unsetenv("PREWARM_DRIVER");

    /* Bad values are refused with a reason, the config left as it was. */
    static const char *const bad[][2] = {
        {"id", "bad id"},           {"id", ""},
        {"scheduler", "localhost"}, {"label", "novalue"},
        {"label", "-x=1"},          {"sim_fail_rate", "1.5"},
        {"sim_restore_ms", "-5"},   {"vcpu_overcommit", "0"},
        {"log_level", "loud"},      {"sim_seed", "-1"},
        {"nonsense", "1"},          {"driver", "xen"},
    };
    for (size_t i = 0; i < PW_ARRAY_LEN(bad); i++) {
        err[0] = '\0';
        if (pw_agent_config_set(&c, bad[i][0], bad[i][1], err, sizeof(err)) != PW_ERR_INVAL)
            fail_msg("%s=%s accepted", bad[i][0], bad[i][1]);
        assert_true(err[0] != '\0');
    }
    assert_string_equal(c.id, "host-9");

    /* A broken file changes nothing. */
    fp = fopen(path, "w");
    assert_non_null(fp);
    fputs("{\"id\": \"host-10\", \"sim_fail_rate\": 7}", fp);
    fclose(fp);
    assert_int_equal(pw_agent_config_load_file(&c, path, err, sizeof(err)), PW_ERR_INVAL);
    assert_string_equal(c.id, "host-9");
    fp = fopen(path, "w");
    assert_non_null(fp);
    fputs("{not json", fp);
    fclose(fp);
    assert_int_equal(pw_agent_config_load_file(&c, path, err, sizeof(err)), PW_ERR_PARSE);
    unlink(path);
    rmdir(dir);
}

/* ---- labels, snapshots, draining ---- */

/* write_file replaces path's content with text. */
static void write_file(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

/* draining, sim_process, sim_snapshots and the cost label, from every source; bad values are
 * refused with a reason and change nothing. */
static void test_config_new_keys(void **state)
{
    (void)state;
    struct pw_agent_config c;
    char err[256] = "";
    pw_agent_config_init(&c);
    assert_int_equal(c.draining, 0);
    assert_int_equal(c.sim_process, 0);
    assert_int_equal(c.nsim_snapshots, 0);

    assert_int_equal(pw_agent_config_set(&c, "draining", "yes", err, sizeof(err)), PW_OK);
    assert_int_equal(c.draining, 1);
    assert_int_equal(pw_agent_config_set(&c, "draining", "off", err, sizeof(err)), PW_OK);
    assert_int_equal(c.draining, 0);
    assert_int_equal(pw_agent_config_set(&c, "sim_process", "1", err, sizeof(err)), PW_OK);
    assert_int_equal(c.sim_process, 1);
    assert_int_equal(pw_agent_config_set(&c, "sim_snapshots", "b, a,b", err, sizeof(err)), PW_OK);
    assert_int_equal(c.nsim_snapshots, 2);
    assert_string_equal(c.sim_snapshots[0], "a");
    assert_string_equal(c.sim_snapshots[1], "b");
    assert_int_equal(pw_agent_config_set(&c, "label", "cost_per_gib_hour=0.0125", err, sizeof(err)),
                     PW_OK);

    char many[PW_AGENT_SIM_SNAPSHOTS_MAX * 8 + 16] = "";
    for (int i = 0; i <= PW_AGENT_SIM_SNAPSHOTS_MAX; i++)
        snprintf(many + strlen(many), sizeof(many) - strlen(many), "%sf%d", i ? "," : "", i);
    static const char long_name[] =
        "x1234567890123456789012345678901234567890123456789012345678901234";
    const char *const bad[][3] = {
        {"draining", "maybe", "draining \"maybe\": expected true or false"},
        {"sim_process", "", "sim_process"},
        {"sim_snapshots", "a,,b", "empty name at offset 2"},
        {"sim_snapshots", "a,", "empty name"},
        {"sim_snapshots", ",a", "empty name at offset 0"},
        {"sim_snapshots", "a b", "\"a b\" is not a function name"},
        {"sim_snapshots", "ok,-x", "\"-x\" is not a function name"},
        {"sim_snapshots", long_name, "longer than 63 bytes"},
        {"sim_snapshots", many, "more than 256 names"},
        {"label", "cost_per_gib_hour=cheap", "expected a decimal number >= 0"},
        {"label", "cost_per_gib_hour=-0.5", "expected a decimal number >= 0"},
        {"label", "cost_per_gib_hour=0x10", "expected a decimal number"},
        {"label", "cost_per_gib_hour=", "expected a decimal number"},
        {"label", "cost_per_gib_hour=inf", "expected a decimal number"},
    };
    for (size_t i = 0; i < PW_ARRAY_LEN(bad); i++) {
        err[0] = '\0';
        if (pw_agent_config_set(&c, bad[i][0], bad[i][1], err, sizeof(err)) != PW_ERR_INVAL)
            fail_msg("%s=%s accepted", bad[i][0], bad[i][1]);
        if (strstr(err, bad[i][2]) == NULL)
            fail_msg("%s=%.20s: reason \"%s\" lacks \"%s\"", bad[i][0], bad[i][1], err,
                     bad[i][2]);
    }
    assert_int_equal(c.nsim_snapshots, 2);
    assert_int_equal(c.draining, 0);
    assert_int_equal(pw_agent_config_set(&c, "sim_snapshots", " ", err, sizeof(err)), PW_OK);
    assert_int_equal(c.nsim_snapshots, 0);

    /* The config file: JSON booleans, and the list as an array or as a string. */
    char dir[PATH_MAX], path[PATH_MAX + 16];
    const char *base = getenv("TMPDIR");
    snprintf(dir, sizeof(dir), "%s/pw-agentcfg-XXXXXX",
             base != NULL && base[0] != '\0' ? base : "/tmp");
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/agent.json", dir);
    write_file(path, "{\"draining\": true, \"sim_process\": false, "
                     "\"sim_snapshots\": [\"thumb\", \"resize\"]}");
    assert_int_equal(pw_agent_config_load_file(&c, path, err, sizeof(err)), PW_OK);
    assert_int_equal(c.draining, 1);
    assert_int_equal(c.sim_process, 0);
    assert_int_equal(c.nsim_snapshots, 2);
    assert_string_equal(c.sim_snapshots[0], "resize");
    write_file(path, "{\"sim_snapshots\": \"one,two,three\"}");
    assert_int_equal(pw_agent_config_load_file(&c, path, err, sizeof(err)), PW_OK);
    assert_int_equal(c.nsim_snapshots, 3);
    write_file(path, "{\"sim_snapshots\": []}");
    assert_int_equal(pw_agent_config_load_file(&c, path, err, sizeof(err)), PW_OK);
    assert_int_equal(c.nsim_snapshots, 0);
    static const char *const bad_files[][2] = {
        {"{\"sim_snapshots\": [\"ok\", \"\"]}", "sim_snapshots[1]: expected a function name"},
        {"{\"sim_snapshots\": [\"a,b\"]}", "sim_snapshots[0]"},
        {"{\"sim_snapshots\": [3]}", "sim_snapshots[0]"},
        {"{\"sim_snapshots\": [\"bad name\"]}", "not a function name"},
        {"{\"draining\": \"nope\"}", "draining"},
        {"{\"draining\": null}", "expected a string, number or boolean"},
        {"{\"sim_snapshots\": [\"x\"], \"draining\": 2}", "draining \"2\""},
    };
    for (size_t i = 0; i < PW_ARRAY_LEN(bad_files); i++) {
        write_file(path, bad_files[i][0]);
        err[0] = '\0';
        assert_int_equal(pw_agent_config_load_file(&c, path, err, sizeof(err)), PW_ERR_INVAL);
        if (strstr(err, bad_files[i][1]) == NULL)
            fail_msg("%s: reason \"%s\" lacks \"%s\"", bad_files[i][0], err, bad_files[i][1]);
    }
    assert_int_equal(c.nsim_snapshots, 0); /* a refused file changes nothing */
    assert_int_equal(c.draining, 1);
    unlink(path);
    rmdir(dir);
}

static void seeded(struct pw_agent_config *c)
{
    char err[256];
    assert_int_equal(pw_agent_config_set(c, "sim_snapshots", "fn-c, fn-b,fn-c", err, sizeof(err)),
                     PW_OK);
    assert_int_equal(pw_agent_config_set(c, "draining", "true", err, sizeof(err)), PW_OK);
    assert_int_equal(pw_agent_config_set(c, "label", "region=eu-west-1", err, sizeof(err)), PW_OK);
    assert_int_equal(pw_agent_config_set(c, "label", "instance_type=m7i.large", err, sizeof(err)),
                     PW_OK);
    assert_int_equal(pw_agent_config_set(c, "label", "cost_per_gib_hour=0.0125", err, sizeof(err)),
                     PW_OK);
}

static const char *label_of(const struct pw_msg_hello *h, const char *key)
{
    for (size_t i = 0; i < h->nlabels; i++)
        if (strcmp(h->labels[i].key, key) == 0)
            return h->labels[i].value;
    return NULL;
}

/* hello carries the well-known labels, the whole snapshot list and draining; a report carries
 * draining always and the list only when it changed since the scheduler last saw it: a report
 * that got no reply does not count as seen. */
static void test_snapshots_and_draining(void **state)
{
    (void)state;
    struct fake f;
    struct pw_msg m;
    fake_start(&f, "1node", seeded);
    start_session(&f, &m);
    const struct pw_msg_hello *h = &m.u.hello;
    assert_string_equal(label_of(h, PW_LABEL_CLOUD), "aws");
    assert_string_equal(label_of(h, PW_LABEL_REGION), "eu-west-1");
    assert_string_equal(label_of(h, PW_LABEL_ZONE), "eu-west-1a");
    assert_string_equal(label_of(h, PW_LABEL_INSTANCE_TYPE), "m7i.large");
    assert_string_equal(label_of(h, PW_LABEL_COST), "0.0125");
    assert_int_equal(h->nsnapshots, 2);
    assert_string_equal(h->snapshots[0], "fn-b");
    assert_string_equal(h->snapshots[1], "fn-c");
    assert_int_equal(h->draining, 1);
    pw_msg_fini(&m);

    /* The hello's reply means the list was seen: the first report leaves it out. */
    struct reply rp;
    reply_init(&rp, 1, 0);
    exchange(&f, &rp, is_report, NULL, &m);
    assert_int_equal(m.u.report.has_snapshots, 0);
    assert_null(m.u.report.snapshots);
    assert_int_equal(m.u.report.draining, 1);
    pw_msg_fini(&m);

    /* The first prewarm of fn-a makes its golden snapshot: the next report lists all three. */
    add_cmd(&rp, 1, PW_CMD_PREWARM, 42);
    uint64_t ack = 1;
    exchange(&f, &rp, cmd_ack_is, &ack, &m);
    assert_int_equal(m.u.report.has_snapshots, 1);
    assert_int_equal(m.u.report.nsnapshots, 3);
    assert_string_equal(m.u.report.snapshots[0], "fn-a");
    assert_string_equal(m.u.report.snapshots[1], "fn-b");
    assert_string_equal(m.u.report.snapshots[2], "fn-c");
    pw_msg_fini(&m);

    /* That report is held, never answered; RUNNING cuts it short, and the new report still
     * carries the list, since nobody has seen it. */
    struct want_ev w = {42, PW_AVM_RUNNING};
    hold_until(&f, 2000, has_event, &w, &m);
    assert_int_equal(m.u.report.has_snapshots, 1);
    assert_int_equal(m.u.report.nsnapshots, 3);
    uint64_t seq = find_event(&m, 42, PW_AVM_RUNNING)->seq;
    pw_msg_fini(&m);

    /* Answered now: from here on the list stays out, also after a prewarm of a function that
     * already has its snapshot. */
    reply_init(&rp, 1, seq);
    add_cmd(&rp, 2, PW_CMD_PREWARM, 43);
    ack = 2;
    exchange(&f, &rp, cmd_ack_is, &ack, &m);
    assert_int_equal(m.u.report.has_snapshots, 0);
    assert_int_equal(m.u.report.draining, 1);
    pw_msg_fini(&m);

    /* A rehello carries the whole list again. */
    send_error(&f, "rehello");
    hold_until(&f, WAIT_MS, is_hello, NULL, &m);
    assert_int_equal(m.u.hello.nsnapshots, 3);
    assert_int_equal(m.u.hello.draining, 1);
    pw_msg_fini(&m);
    fake_stop(&f);
}

static void with_signals(struct pw_agent_config *c) { c->handle_signals = 1; }

/* SIGUSR1 toggles draining and pw_agent_set_draining sets it; either change cuts the held
 * report short (the heartbeat is 5 s, the request timeout 11 s). */
static void test_draining_toggle(void **state)
{
    (void)state;
    struct fake f;
    struct pw_msg m;
    fake_start(&f, "1node", with_signals);
    start_session(&f, &m);
    assert_int_equal(m.u.hello.draining, 0);
    assert_int_equal(m.u.hello.nsnapshots, 0);
    pw_msg_fini(&m);
    struct reply rp;
    reply_init(&rp, 1, 0);
    exchange(&f, &rp, is_report, NULL, &m);
    assert_int_equal(m.u.report.draining, 0);
    pw_msg_fini(&m);

    /* The report is held. */
    int64_t t0 = pw_now_mono_ms();
    assert_int_equal(kill(getpid(), SIGUSR1), 0);
    int want = 1;
    hold_until(&f, 2000, draining_is, &want, &m);
    print_message("draining reported %lld ms after SIGUSR1\n",
                  (long long)(pw_now_mono_ms() - t0));
    pw_msg_fini(&m);

    /* Every report carries it, not just the first. */
    reply_init(&rp, 1, 0);
    exchange(&f, &rp, is_report, NULL, &m);
    assert_int_equal(m.u.report.draining, 1);
    pw_msg_fini(&m);

    pw_agent_set_draining(f.agent, 1); /* no change: the held report stays held */
    pw_agent_set_draining(f.agent, 0);
    want = 0;
    hold_until(&f, 2000, draining_is, &want, &m);
    pw_msg_fini(&m);
    assert_int_equal(kill(getpid(), SIGUSR1), 0);
    want = 1;
    hold_until(&f, 2000, draining_is, &want, &m);
    pw_msg_fini(&m);
    fake_stop(&f);
}

/* ---- NUMA binding of sim placeholder processes ---- */

static char topo_dir[PATH_MAX];

static void put_file(const char *dir, const char *rel, const char *text)
{
    char path[PATH_MAX * 2];
    snprintf(path, sizeof(path), "%s/%s", dir, rel);
    for (char *p = path + strlen(dir) + 1; (p = strchr(p, '/')) != NULL; p++) {
        *p = '\0';
        mkdir(path, 0700);
        *p = '/';
    }
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

/* make_topology writes a one-node tree whose node 0 has the CPUs in cpulist. */
static void make_topology(const char *cpulist)
{
    const char *base = getenv("TMPDIR");
    snprintf(topo_dir, sizeof(topo_dir), "%s/pw-agent-topo-XXXXXX",
             base != NULL && base[0] != '\0' ? base : "/tmp");
    assert_non_null(mkdtemp(topo_dir));
    put_file(topo_dir, "sys/devices/system/node/node0/cpulist", cpulist);
    put_file(topo_dir, "sys/devices/system/node/node0/meminfo",
             "Node 0 MemTotal: 8388608 kB\nNode 0 MemFree: 7340032 kB\n");
    put_file(topo_dir, "proc/loadavg", "0.10 0.10 0.10 1/100 1\n");
}

static void remove_topology(void)
{
    static const char *const files[] = {
        "sys/devices/system/node/node0/cpulist", "sys/devices/system/node/node0/meminfo",
        "proc/loadavg", "sys/devices/system/node/node0", "sys/devices/system/node",
        "sys/devices/system", "sys/devices", "sys", "proc", "",
    };
    char path[PATH_MAX * 2];
    for (size_t i = 0; i < PW_ARRAY_LEN(files); i++) {
        snprintf(path, sizeof(path), "%s/%s", topo_dir, files[i]);
        remove(path);
    }
}

static void sim_process(struct pw_agent_config *c)
{
    c->sim_process = 1;
    c->sim_restore_ms = 50;
    c->vcpu_overcommit = 8; /* several VMs on a one-CPU node */
}

/* find_child returns the pid of this process's child called comm (zombies included), or 0. */
static pid_t find_child(const char *comm)
{
    DIR *d = opendir("/proc");
    assert_non_null(d);
    pid_t found = 0;
    struct dirent *de;
    while (found == 0 && (de = readdir(d)) != NULL) {
        if (de->d_name[0] < '1' || de->d_name[0] > '9')
            continue;
        char path[300], buf[1024];
        snprintf(path, sizeof(path), "/proc/%s/stat", de->d_name);
        FILE *fp = fopen(path, "r");
        if (fp == NULL)
            continue;
        size_t n = fread(buf, 1, sizeof(buf) - 1, fp);
        fclose(fp);
        buf[n] = '\0';
        char *l = strchr(buf, '('), *r = strrchr(buf, ')');
        char st;
        int ppid;
        if (l == NULL || r == NULL || sscanf(r + 1, " %c %d", &st, &ppid) != 2)
            continue;
        *r = '\0';
        if (ppid == getpid() && strcmp(l + 1, comm) == 0)
            found = (pid_t)atoi(de->d_name);
    }
    closedir(d);
    return found;
}

static void proc_field(pid_t pid, const char *key, char *out, size_t outlen)
{
    char path[64], line[4096];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *fp = fopen(path, "r");
    if (fp == NULL)
        fail_msg("cannot open %s: %s", path, strerror(errno));
    out[0] = '\0';
    size_t klen = strlen(key);
    while (fgets(line, sizeof(line), fp) != NULL)
        if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
            pw_strlcpy(out, line + klen + 1 + strspn(line + klen + 1, " \t"), outlen);
            out[strcspn(out, "\n")] = '\0';
        }
    fclose(fp);
}

/* bind_policies counts pid's mappings with memory policy bind:0 and with any other. */
static void bind_policies(pid_t pid, int *bound, int *other)
{
    char path[64], line[8192], addr[64], policy[128];
    snprintf(path, sizeof(path), "/proc/%d/numa_maps", (int)pid);
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    *bound = *other = 0;
    while (fgets(line, sizeof(line), fp) != NULL)
        if (sscanf(line, "%63s %127s", addr, policy) == 2)
            (*(strcmp(policy, "bind:0") == 0 ? bound : other))++;
    fclose(fp);
}

/* assert_reaped: the process is gone and was reaped by the agent (not a zombie, not ours to
 * reap any more). */
static void assert_reaped(pid_t pid, const char *comm)
{
    assert_int_equal(find_child(comm), 0);
    int st;
    errno = 0;
    assert_int_equal(waitpid(pid, &st, WNOHANG), -1);
    assert_int_equal(errno, ECHILD);
}

/* Each sim VM gets a placeholder process bound to its node: the node the scheduler chose (vm
 * 42) or the one the sim picked (vm 43). The kernel shows the binding; destroy and stop kill
 * and reap the processes. The topology is this machine's node 0 cut down to one CPU, so that a
 * binding differs from no binding. */
static void test_sim_process_bound(void **state)
{
    (void)state;
    cpu_set_t allowed;
    assert_int_equal(sched_getaffinity(0, sizeof(allowed), &allowed), 0);
    int cpu = CPU_SETSIZE - 1;
    while (cpu > 0 && !CPU_ISSET(cpu, &allowed))
        cpu--;
    if (CPU_COUNT(&allowed) == 1)
        print_message("only one CPU here: the CPU binding cannot differ from none; the memory "
                      "policy is still checked\n");
    char cpus[32];
    snprintf(cpus, sizeof(cpus), "%d\n", cpu);
    make_topology(cpus);
    cpus[strcspn(cpus, "\n")] = '\0';

    struct fake f;
    struct pw_msg m;
    fake_start(&f, topo_dir, sim_process);
    start_session(&f, &m);
    pw_msg_fini(&m);
    struct reply rp;
    reply_init(&rp, 1, 0);
    add_cmd(&rp, 1, PW_CMD_PREWARM, 42);
    add_cmd(&rp, 2, PW_CMD_PREWARM, 43)->numa_node = -1;
    struct want_evs w = {2, {{42, PW_AVM_RUNNING}, {43, PW_AVM_RUNNING}}};
    exchange(&f, &rp, has_events, &w, &m);
    uint64_t last = 0;
    for (size_t i = 0; i < m.u.report.nevents; i++)
        last = PW_MAX(last, m.u.report.events[i].seq);
    pw_msg_fini(&m);

    pid_t p42 = find_child("pw-sim-42"), p43 = find_child("pw-sim-43");
    assert_true(p42 > 0 && p43 > 0);
    pid_t both[2] = {p42, p43};
    for (int i = 0; i < 2; i++) {
        char got[256];
        int bound, other;
        proc_field(both[i], "Cpus_allowed_list", got, sizeof(got));
        assert_string_equal(got, cpus);
        proc_field(both[i], "State", got, sizeof(got));
        assert_true(got[0] == 'S'); /* pause()d, not a zombie */
        bind_policies(both[i], &bound, &other);
        assert_true(bound > 0);
        assert_int_equal(other, 0);
    }

    /* Destroy 42: by the time GONE is reported its process is gone and reaped. */
    reply_init(&rp, 1, last);
    add_cmd(&rp, 3, PW_CMD_DESTROY, 42);
    struct want_ev gone = {42, PW_AVM_GONE};
    exchange(&f, &rp, has_event, &gone, &m);
    pw_msg_fini(&m);
    assert_reaped(p42, "pw-sim-42");
    assert_true(find_child("pw-sim-43") == p43);

    /* Stopping the agent kills and reaps the rest. */
    fake_stop(&f);
    assert_reaped(p43, "pw-sim-43");
    remove_topology();
}

/* A topology node whose CPUs this machine does not have cannot be bound: the placeholder runs
 * unbound (and is still reaped), the VM still runs. */
static void test_sim_process_unbound(void **state)
{
    (void)state;
    cpu_set_t allowed;
    assert_int_equal(sched_getaffinity(0, sizeof(allowed), &allowed), 0);
    int far = 1000;
    while (far < CPU_SETSIZE - 1 && CPU_ISSET(far, &allowed))
        far++;
    char cpus[32], allowed_text[1024] = "";
    snprintf(cpus, sizeof(cpus), "%d\n", far);
    make_topology(cpus);
    /* This process's own CPUs as the kernel prints them, for comparison. */
    proc_field(getpid(), "Cpus_allowed_list", allowed_text, sizeof(allowed_text));

    struct fake f;
    struct pw_msg m;
    fake_start(&f, topo_dir, sim_process);
    start_session(&f, &m);
    pw_msg_fini(&m);
    struct reply rp;
    reply_init(&rp, 1, 0);
    add_cmd(&rp, 1, PW_CMD_PREWARM, 7);
    struct want_ev w = {7, PW_AVM_RUNNING};
    exchange(&f, &rp, has_event, &w, &m);
    pw_msg_fini(&m);
    pid_t p = find_child("pw-sim-7");
    assert_true(p > 0);
    char got[1024];
    int bound, other;
    proc_field(p, "Cpus_allowed_list", got, sizeof(got));
    assert_string_equal(got, allowed_text);
    bind_policies(p, &bound, &other);
    assert_int_equal(bound, 0);
    assert_true(other > 0);
    fake_stop(&f);
    assert_reaped(p, "pw-sim-7");
    remove_topology();
}

/* ---- the qemu driver: adoption and its label (needs qemu-system-x86_64, no guest image) ---- */

static char qemu_run[64], qemu_mem[64];
static const char *qemu_label; /* a configured accelerator label, or NULL */

static void qemu_driver(struct pw_agent_config *c)
{
    char err[256];
    assert_int_equal(pw_agent_config_set(c, "driver", "qemu", err, sizeof(err)), PW_OK);
    assert_int_equal(pw_agent_config_set(c, "qemu_accel", "tcg", err, sizeof(err)), PW_OK);
    assert_int_equal(pw_agent_config_set(c, "qemu_run_dir", qemu_run, err, sizeof(err)), PW_OK);
    assert_int_equal(pw_agent_config_set(c, "qemu_mem_dir", qemu_mem, err, sizeof(err)), PW_OK);
    if (qemu_label != NULL)
        assert_int_equal(pw_agent_config_set(c, "label", qemu_label, err, sizeof(err)), PW_OK);
}

static int qemu_in_path(void)
{
    const char *path = getenv("PATH");
    char buf[PATH_MAX];
    while (path != NULL && *path != '\0') {
        size_t n = strcspn(path, ":");
        snprintf(buf, sizeof(buf), "%.*s/qemu-system-x86_64", (int)n, path);
        if (n > 0 && access(buf, X_OK) == 0)
            return 1;
        path += n + (path[n] == ':');
    }
    return 0;
}

static unsigned long long start_time_of(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    assert_non_null(fgets(buf, sizeof(buf), fp));
    fclose(fp);
    char *p = strrchr(buf, ')') + 2;
    for (int field = 3; field < 22; field++)
        p = strchr(p, ' ') + 1;
    return strtoull(p, NULL, 10);
}

static void write_vm_json(uint64_t id, pid_t pid, unsigned long long start)
{
    char path[160], dir[96];
    snprintf(dir, sizeof(dir), "%s/%016llx", qemu_run, (unsigned long long)id);
    snprintf(path, sizeof(path), "%s/vm.json", dir);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fprintf(fp,
            "{\"format\":1,\"vm_id\":\"%016llx\",\"kind\":\"restored\",\"function\":\"fn-a\","
            "\"pid\":%d,\"start_time\":%llu,\"port\":4321,\"mac\":\"52:54:00:00:00:77\","
            "\"instance\":\"i-77\",\"qmp\":\"%s/qmp.sock\",\"console\":\"%s/console.sock\","
            "\"snapshot\":\"\",\"owned\":[],\"created_ms\":1,\"numa_node\":1,"
            "\"memory_mb\":256,\"vcpus\":2}",
            (unsigned long long)id, (int)pid, start, dir, dir);
    fclose(fp);
}

/* fake_vm starts a QEMU without a machine (-machine none runs at once) that looks like a VM
 * an earlier agent restored: its marker, its QMP socket and its vm.json. */
static pid_t fake_vm(uint64_t id)
{
    char dir[96], qmp[160], name[32];
    snprintf(dir, sizeof(dir), "%s/%016llx", qemu_run, (unsigned long long)id);
    assert_int_equal(mkdir(dir, 0755), 0);
    snprintf(qmp, sizeof(qmp), "unix:%s/qmp.sock,server=on,wait=off", dir);
    snprintf(name, sizeof(name), "prewarm-%016llx", (unsigned long long)id);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        setsid();
        int null = open("/dev/null", O_RDWR);
        dup2(null, 0);
        dup2(null, 1);
        dup2(null, 2);
        execlp("qemu-system-x86_64", "qemu-system-x86_64", "-name", name, "-machine", "none",
               "-nodefaults", "-no-user-config", "-display", "none", "-qmp", qmp, (char *)NULL);
        _exit(127);
    }
    char sock[128];
    snprintf(sock, sizeof(sock), "%s/qmp.sock", dir);
    int64_t deadline = pw_now_mono_ms() + WAIT_MS;
    while (access(sock, F_OK) != 0 && pw_now_mono_ms() < deadline)
        usleep(5000);
    assert_int_equal(access(sock, F_OK), 0);
    write_vm_json(id, pid, start_time_of(pid));
    return pid;
}

/* A QEMU left by an earlier agent is adopted: it is in the hello's inventory with its
 * function, node, shape and address, the host carries the driver's accelerator label, and a
 * destroy stops it. A record of a dead VM is cleaned up at start. A configured accelerator
 * label wins over the driver's. */
static void test_qemu_adopts(void **state)
{
    (void)state;
    if (!qemu_in_path()) {
        print_message("** SKIPPING test_qemu_adopts: no qemu-system-x86_64 in PATH\n");
        if (getenv("PREWARM_REQUIRE_QEMU") != NULL &&
            strcmp(getenv("PREWARM_REQUIRE_QEMU"), "1") == 0)
            fail_msg("PREWARM_REQUIRE_QEMU=1 and no qemu-system-x86_64");
        skip();
    }
    snprintf(qemu_run, sizeof(qemu_run), "/tmp/pwa-q-XXXXXX");
    snprintf(qemu_mem, sizeof(qemu_mem), "/dev/shm/pwa-q-XXXXXX");
    assert_non_null(mkdtemp(qemu_run));
    assert_non_null(mkdtemp(qemu_mem));
    pid_t vm = fake_vm(0x77);
    char dead[96];
    snprintf(dead, sizeof(dead), "%s/%016llx", qemu_run, 0x78ULL);
    assert_int_equal(mkdir(dead, 0755), 0);
    write_vm_json(0x78, 999999999, 1); /* no such process */

    struct fake f;
    struct pw_msg m;
    qemu_label = NULL;
    fake_start(&f, "2node", qemu_driver);
    start_session(&f, &m);
    const struct pw_msg_hello *h = &m.u.hello;
    assert_string_equal(h->driver, "qemu");
    assert_int_equal(h->nlabels, 3);
    assert_string_equal(h->labels[2].key, "accelerator");
    assert_string_equal(h->labels[2].value, "tcg");
    assert_int_equal(h->nvms, 1);
    assert_int_equal(h->vms[0].vm_id, 0x77);
    assert_string_equal(h->vms[0].function, "fn-a");
    assert_int_equal(h->vms[0].state, PW_AVM_RUNNING);
    assert_int_equal(h->vms[0].numa_node, 1);
    assert_int_equal(h->vms[0].memory_mb, 256);
    assert_int_equal(h->vms[0].vcpus, 2);
    assert_string_equal(h->vms[0].address, "127.0.0.1:4321");
    assert_int_equal(h->numa[1].vcpu_free, 2);
    assert_int_equal(access(dead, F_OK), -1); /* the dead VM's record is gone */
    pw_msg_fini(&m);

    struct reply rp;
    reply_init(&rp, 1, 0);
    add_cmd(&rp, 1, PW_CMD_DESTROY, 0x77);
    struct want_ev gone = {0x77, PW_AVM_GONE};
    exchange(&f, &rp, has_event, &gone, &m);
    pw_msg_fini(&m);
    /* Not the agent's child, but this process's: the agent found it gone and reaped it. */
    errno = 0;
    assert_int_equal(kill(vm, 0), -1);
    assert_int_equal(errno, ESRCH);
    fake_stop(&f);

    qemu_label = "accelerator=custom";
    fake_start(&f, "2node", qemu_driver);
    start_session(&f, &m);
    assert_int_equal(m.u.hello.nlabels, 3);
    assert_string_equal(m.u.hello.labels[2].key, "accelerator");
    assert_string_equal(m.u.hello.labels[2].value, "custom");
    assert_int_equal(m.u.hello.nvms, 0);
    pw_msg_fini(&m);
    fake_stop(&f);
    rmdir(qemu_mem);
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", qemu_run);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hello_content),
        cmocka_unit_test(test_prewarm_running_early),
        cmocka_unit_test(test_dedupe_and_epochs),
        cmocka_unit_test(test_lease_and_destroy),
        cmocka_unit_test(test_rehello_and_errors),
        cmocka_unit_test(test_memory_accounting),
        cmocka_unit_test(test_outbox_bound),
        cmocka_unit_test(test_stop_unanswered),
        cmocka_unit_test(test_config_sources),
        cmocka_unit_test(test_config_new_keys),
        cmocka_unit_test(test_snapshots_and_draining),
        cmocka_unit_test(test_draining_toggle),
        cmocka_unit_test(test_sim_process_bound),
        cmocka_unit_test(test_sim_process_unbound),
        cmocka_unit_test(test_qemu_adopts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
