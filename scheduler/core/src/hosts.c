/* hosts.c — agent sessions in the core: hello, report, liveness and the command outbox.
 *
 * The agent is the truth for what runs on its host. hello carries its full inventory, which
 * the core reconciles against its own view (adopting VMs it does not know, forgetting ones the
 * agent no longer has). Reports carry events (sequenced, applied once) and acknowledge
 * commands (the outbox keeps every command until acknowledged, so a lost reply only delays). */
#include "core_internal.h"

#include "pw/error.h"

#include <stdlib.h>
#include <string.h>

static int host_eq(const struct pw_hnode *n, const void *key)
{
    return strcmp(pw_container_of(n, struct host, hnode)->id, key) == 0;
}

struct host *pw_core_host_get(const struct pw_core *c, const char *id)
{
    struct pw_hnode *n = pw_htab_find(&c->hosts, pw_hash_str(id), id, host_eq);
    return n ? pw_container_of(n, struct host, hnode) : NULL;
}

static struct host *host_new(struct pw_core *c, const char *id)
{
    struct host *h = pw_xcalloc(1, sizeof(*h));
    pw_strlcpy(h->id, id, sizeof(h->id));
    h->state = PW_HOST_DEAD;
    h->next_cmd_id = 1;
    h->core = c;
    h->ph = pw_placer_host_add(c->placer, h);
    pw_list_init(&h->vms);
    pw_htab_insert(&c->hosts, &h->hnode, pw_hash_str(h->id));
    pw_list_push_tail(&c->host_list, &h->link);
    return h;
}

void pw_core_host_free(struct host *h)
{
    free(h->numa);
    free(h->cmds);
    free(h);
}

void pw_core_expect_host(struct pw_core *c, const char *host_id)
{
    if (!pw_name_valid(host_id))
        return;
    struct host *h = pw_core_host_get(c, host_id);
    if (h == NULL)
        h = host_new(c, host_id);
    if (!h->expected && h->state != PW_HOST_ALIVE) {
        h->expected = 1;
        c->expected_pending++;
    }
}

void pw_core_host_remember_drain(struct pw_core *c, const char *host_id)
{
    if (!pw_name_valid(host_id))
        return;
    struct host *h = pw_core_host_get(c, host_id);
    if (h == NULL)
        h = host_new(c, host_id);
    h->draining = 1;
    if (!pw_list_linked(&h->drain_link))
        pw_list_push_tail(&c->draining, &h->drain_link);
    pw_core_host_sync_eligible(c, h);
}

static void host_set_state(struct pw_core *c, struct host *h, enum pw_host_state to, int64_t now)
{
    if (h->state == to)
        return;
    h->state = to;
    pw_core_host_sync_eligible(c, h);
    struct pw_action *a = pw_core_push_action(c, PW_ACT_STORE_HOST);
    pw_strlcpy(a->host, h->id, sizeof(a->host));
    a->u.host.alive = to == PW_HOST_ALIVE;
    a->u.host.at = now;
}

/* ---- outbox ---- */

static int cmd_urgent(enum pw_cmd_type t)
{
    return t == PW_CMD_PREWARM || t == PW_CMD_DESTROY || t == PW_CMD_SNAPSHOT;
}

static void outbox_remove_note(struct host *h, size_t i)
{
    memmove(&h->cmds[i], &h->cmds[i + 1], (h->ncmds - i - 1) * sizeof(*h->cmds));
    h->ncmds--;
    h->nnotes--;
}

int pw_core_host_cmd(struct pw_core *c, struct host *h, const struct pw_cmd *cmd)
{
    if (h->state != PW_HOST_ALIVE)
        return 0;
    int urgent = cmd_urgent(cmd->type);
    if (!urgent) {
        if (!c->cfg.lease_notes)
            return 1;
        /* Lease notes only matter in their latest form: drop an older note for the same VM.
         * They are best-effort and bounded apart from commands, so a busy host's notes never
         * crowd out a restore. */
        struct vm *v = pw_core_vm_find(c, cmd->vm_id);
        if (v != NULL) {
            /* The VM remembers its note's id; ids ascend in the outbox, so a binary search
             * finds it (or finds it acked already). */
            size_t lo = 0, hi = h->ncmds;
            while (v->note_cmd != 0 && lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                if (h->cmds[mid].id < v->note_cmd)
                    lo = mid + 1;
                else
                    hi = mid;
            }
            if (v->note_cmd != 0 && lo < h->ncmds && h->cmds[lo].id == v->note_cmd &&
                h->cmds[lo].vm_id == cmd->vm_id && !cmd_urgent(h->cmds[lo].type))
                outbox_remove_note(h, lo);
            v->note_cmd = 0;
        } else {
            for (size_t i = 0; i < h->ncmds; i++) {
                if (h->cmds[i].vm_id == cmd->vm_id && !cmd_urgent(h->cmds[i].type)) {
                    outbox_remove_note(h, i);
                    break;
                }
            }
        }
        if (h->nnotes >= c->cfg.max_cmds_per_host / 4 + 1)
            return 0;
        if (v != NULL)
            v->note_cmd = h->next_cmd_id; /* the id the note gets below */
    } else if (h->ncmds - h->nnotes >= c->cfg.max_cmds_per_host) {
        return 0;
    }
    if (h->ncmds == h->capcmds) {
        h->capcmds = h->capcmds ? h->capcmds * 2 : 16;
        h->cmds = pw_xrealloc(h->cmds, h->capcmds * sizeof(*h->cmds));
    }
    struct pw_cmd *slot = &h->cmds[h->ncmds++];
    *slot = *cmd;
    slot->id = h->next_cmd_id++;
    if (!urgent) {
        h->nnotes++;
        return 1;
    }
    h->urgent = 1;
    struct pw_action *a = pw_core_push_action(c, PW_ACT_AGENT_CMD);
    pw_strlcpy(a->host, h->id, sizeof(a->host));
    pw_strlcpy(a->function, cmd->function, sizeof(a->function));
    a->u.cmd = *slot;
    return 1;
}

static void outbox_ack(struct host *h, uint64_t ack)
{
    size_t k = 0, cmds = 0;
    while (k < h->ncmds && h->cmds[k].id <= ack) {
        if (!cmd_urgent(h->cmds[k].type))
            h->nnotes--;
        else
            cmds++;
        k++;
    }
    if (k > 0) {
        memmove(h->cmds, h->cmds + k, (h->ncmds - k) * sizeof(*h->cmds));
        h->ncmds -= k;
    }
    if (cmds > 0)
        pw_placer_touch(h->core->placer); /* the outbox may have room again (host_ok) */
    h->urgent = 0;
    for (size_t i = 0; i < h->ncmds; i++)
        if (cmd_urgent(h->cmds[i].type))
            h->urgent = 1;
}

static void fill_reply(const struct pw_core *c, const struct host *h, struct pw_msg *reply)
{
    pw_msg_init(reply, PW_MSG_REPLY);
    struct pw_msg_reply *r = &reply->u.reply;
    r->epoch = c->cfg.epoch;
    r->event_ack = h->event_applied;
    r->heartbeat_ms = (int32_t)c->cfg.heartbeat_ms;
    if (h->ncmds > 0) {
        size_t n = h->ncmds < PW_PROTO_MAX_CMDS ? h->ncmds : PW_PROTO_MAX_CMDS;
        r->cmds = pw_xmalloc(n * sizeof(*r->cmds));
        memcpy(r->cmds, h->cmds, n * sizeof(*r->cmds));
        r->ncmds = n;
    }
}

static void fill_error(struct pw_msg *reply, const char *code, const char *message)
{
    pw_msg_init(reply, PW_MSG_ERROR);
    pw_strlcpy(reply->u.error.code, code, sizeof(reply->u.error.code));
    pw_strlcpy(reply->u.error.message, message, sizeof(reply->u.error.message));
}

int pw_core_agent_reply(struct pw_core *c, const char *host_id, struct pw_msg *reply)
{
    struct host *h = pw_core_host_get(c, host_id);
    if (h == NULL || h->state != PW_HOST_ALIVE)
        return PW_ERR_NOTFOUND;
    fill_reply(c, h, reply);
    return PW_OK;
}

int pw_core_agent_has_cmds(const struct pw_core *c, const char *host_id)
{
    const struct host *h = pw_core_host_get(c, host_id);
    return h != NULL && h->state == PW_HOST_ALIVE && h->urgent;
}

/* ---- death ---- */

static void host_die(struct pw_core *c, struct host *h, int64_t now)
{
    if (h->state == PW_HOST_DEAD)
        return;
    /* Its VMs leave the pools now: no lease is handed out on them, and their capacity is
     * replaced elsewhere by the reconcile that follows. */
    struct pw_list *it, *tmp;
    pw_list_foreach_safe(it, tmp, &h->vms)
    {
        struct vm *v = pw_container_of(it, struct vm, host_link);
        pw_core_metric(c, PW_METRIC_VM_LOST, v->fn, 0);
        pw_core_vm_set_state(c, v, PW_VM_GONE, now);
    }
    h->ncmds = 0;
    h->nnotes = 0;
    pw_placer_touch(c->placer);
    h->urgent = 0;
    /* Every lease that exists now has an id at most next_id; those on this host just ended. */
    h->revoked_below = c->next_id + 1;
    pw_core_metric(c, PW_METRIC_AGENT_DEAD, NULL, 0);
    host_set_state(c, h, PW_HOST_DEAD, now);
    pw_core_reconcile_all(c, now);
}

void pw_core_agent_lost(struct pw_core *c, int64_t now, const char *host_id)
{
    struct host *h = pw_core_host_get(c, host_id);
    if (h != NULL)
        host_die(c, h, now);
}

void pw_core_host_check_liveness(struct pw_core *c, int64_t now)
{
    int64_t limit = c->cfg.heartbeat_ms * c->cfg.dead_after_beats;
    struct pw_list *it, *tmp;
    pw_list_foreach_safe(it, tmp, &c->host_list)
    {
        struct host *h = pw_container_of(it, struct host, link);
        if (h->state == PW_HOST_ALIVE && now - h->last_seen > limit)
            host_die(c, h, now);
    }
}

/* ---- inventory ---- */

/* numa_index maps a node id to its index on h, or h->nnuma when unknown. */
static size_t numa_index(const struct host *h, int32_t id)
{
    for (size_t i = 0; i < h->nnuma; i++)
        if (h->numa[i].info.id == id)
            return i;
    return h->nnuma;
}

static void queue_destroy_unknown(struct pw_core *c, struct host *h, uint64_t vm_id, const char *fn)
{
    struct pw_cmd cmd;
    memset(&cmd, 0, sizeof(cmd));
    cmd.type = PW_CMD_DESTROY;
    cmd.vm_id = vm_id;
    pw_strlcpy(cmd.function, fn, sizeof(cmd.function));
    pw_core_host_cmd(c, h, &cmd);
}

/* adopt takes a VM the agent runs into the core's view: the agent is the truth. */
static void adopt(struct pw_core *c, struct host *h, const struct pw_vm_info *vi, int64_t now)
{
    struct fn *f = pw_core_fn_find(c, vi->function);
    if (f == NULL || vi->state == PW_AVM_FAILED) {
        queue_destroy_unknown(c, h, vi->vm_id, vi->function);
        return;
    }
    enum pw_vm_state st;
    switch (vi->state) {
    case PW_AVM_RESTORING: st = PW_VM_RESTORING; break;
    case PW_AVM_RUNNING: st = PW_VM_IDLE; break;
    case PW_AVM_STOPPING: st = PW_VM_STOPPING; break;
    default: return;
    }
    /* A lease that ended when this host was declared dead stays ended: its holder was told
     * (release answers 404) and may already be gone. */
    int lease_alive = vi->state == PW_AVM_RUNNING && vi->lease_id != 0 && vi->lease_left_ms > 0 &&
                      vi->lease_id >= h->revoked_below;
    struct vm *v = pw_core_vm_new(c, now, vi->vm_id, f, h, numa_index(h, vi->numa_node), st,
                                  vi->memory_mb ? vi->memory_mb : f->spec.memory_mb,
                                  vi->vcpus ? vi->vcpus : f->spec.vcpus);
    pw_strlcpy(v->address, vi->address, sizeof(v->address));
    if (lease_alive) {
        /* The agent was told of this lease before a restart: honour it, so the gateway's
         * release still works and no one else gets the VM meanwhile. */
        pw_core_vm_set_state(c, v, PW_VM_LEASED, now);
        pw_core_lease_new(c, v, vi->lease_id, now, now + vi->lease_left_ms);
    }
    /* Keep fresh ids above adopted ones from the same epoch range. */
    if ((vi->vm_id >> 40) == (c->next_id >> 40) && vi->vm_id > c->next_id)
        c->next_id = vi->vm_id;
    if (vi->lease_id > c->next_id && (vi->lease_id >> 40) == (c->next_id >> 40))
        c->next_id = vi->lease_id;
}

static void sync_inventory(struct pw_core *c, struct host *h, const struct pw_vm_info *vms, size_t nvms, int64_t now)
{
    /* Mark: which of our VMs on h does the agent still have? */
    uint8_t *seen = nvms ? pw_xcalloc(nvms, 1) : NULL;
    struct pw_list *it, *tmp;
    pw_list_foreach_safe(it, tmp, &h->vms)
    {
        struct vm *v = pw_container_of(it, struct vm, host_link);
        const struct pw_vm_info *vi = NULL;
        for (size_t i = 0; i < nvms; i++) {
            if (vms[i].vm_id == v->id) {
                vi = &vms[i];
                seen[i] = 1;
                break;
            }
        }
        if (vi == NULL || vi->state == PW_AVM_GONE) {
            /* A restore we asked for may not have reached the agent yet; the outbox still
             * holds it, so keep the VM. Anything else the agent no longer has is gone. */
            int pending = 0;
            for (size_t k = 0; k < h->ncmds; k++)
                if (h->cmds[k].vm_id == v->id && h->cmds[k].type == PW_CMD_PREWARM)
                    pending = 1;
            if (!(pending && v->state == PW_VM_RESTORING)) {
                if (v->state != PW_VM_STOPPING)
                    pw_core_metric(c, PW_METRIC_VM_LOST, v->fn, 0);
                pw_core_vm_set_state(c, v, PW_VM_GONE, now);
            }
            continue;
        }
        if (vi->state == PW_AVM_RUNNING && v->state == PW_VM_RESTORING)
            pw_core_vm_ready(c, v, now, vi->address);
        else if (vi->state == PW_AVM_FAILED && v->state == PW_VM_RESTORING) {
            pw_core_restore_failed(c, v->fn, now);
            pw_core_vm_set_state(c, v, PW_VM_FAILED, now);
        }
    }
    for (size_t i = 0; i < nvms; i++) {
        if (seen[i] || vms[i].state == PW_AVM_GONE)
            continue;
        if (pw_core_vm_find(c, vms[i].vm_id) != NULL)
            continue; /* claimed by another host: the agents disagree; leave it to them */
        adopt(c, h, &vms[i], now);
    }
    free(seen);
    /* Failed VMs are cleaned up on the agent. */
    pw_list_foreach_safe(it, tmp, &h->vms)
    {
        struct vm *v = pw_container_of(it, struct vm, host_link);
        if (v->state == PW_VM_FAILED)
            pw_core_vm_destroy(c, v, now);
    }
}

/* ---- hello ---- */

static void set_snapshots(struct pw_core *c, struct host *h, char (*names)[PW_NAME_MAX], size_t n)
{
    if (n > PW_PROTO_MAX_SNAPSHOTS)
        n = PW_PROTO_MAX_SNAPSHOTS;
    uint64_t *hashes = n ? pw_xmalloc(n * sizeof(*hashes)) : NULL;
    for (size_t i = 0; i < n; i++)
        hashes[i] = pw_hash_str(names[i]);
    pw_placer_host_set_snapshots(c->placer, h->ph, hashes, n);
    free(hashes);
}

static int check_numa(const struct pw_numa_node *numa, size_t nnuma)
{
    if (nnuma == 0 || nnuma > PW_PROTO_MAX_NUMA)
        return 0;
    for (size_t i = 0; i < nnuma; i++) {
        if (numa[i].vcpu_total < 0 || numa[i].id < 0)
            return 0;
        for (size_t j = 0; j < i; j++)
            if (numa[i].id == numa[j].id)
                return 0;
    }
    return 1;
}

int pw_core_agent_hello(struct pw_core *c, int64_t now, const struct pw_msg_hello *hm, struct pw_msg *reply)
{
    if (!pw_name_valid(hm->agent_id) || !check_numa(hm->numa, hm->nnuma)) {
        pw_core_metric(c, PW_METRIC_AGENT_PROTO_ERROR, NULL, 0);
        fill_error(reply, "bad_hello", "hello needs a valid agent_id and 1..64 distinct NUMA nodes");
        return PW_ERR_PROTO;
    }
    struct host *h = pw_core_host_get(c, hm->agent_id);
    if (h == NULL)
        h = host_new(c, hm->agent_id);
    int same_session = h->state == PW_HOST_ALIVE && strcmp(h->boot_id, hm->boot_id) == 0;

    /* Topology: keep the VMs' node indexes valid by remapping them by node id. */
    struct numa *numa = pw_xcalloc(hm->nnuma, sizeof(*numa));
    for (size_t i = 0; i < hm->nnuma; i++)
        numa[i].info = hm->numa[i];
    pw_placer_host_set_topology(c->placer, h->ph, hm->numa, hm->nnuma);
    struct pw_list *it;
    pw_list_foreach(it, &h->vms)
    {
        struct vm *v = pw_container_of(it, struct vm, host_link);
        int32_t id = v->numa_idx < h->nnuma ? h->numa[v->numa_idx].info.id : -1;
        size_t k = hm->nnuma;
        for (size_t i = 0; i < hm->nnuma; i++)
            if (numa[i].info.id == id)
                k = i;
        v->numa_idx = k;
        pw_placer_node_use(c->placer, h->ph, k, v->memory_mb, v->vcpus, 1);
    }
    free(h->numa);
    h->numa = numa;
    h->nnuma = hm->nnuma;

    pw_strlcpy(h->boot_id, hm->boot_id, sizeof(h->boot_id));
    pw_strlcpy(h->driver, hm->driver, sizeof(h->driver));
    h->nlabels = hm->nlabels < PW_PROTO_MAX_LABELS ? hm->nlabels : PW_PROTO_MAX_LABELS;
    if (h->nlabels > 0)
        memcpy(h->labels, hm->labels, h->nlabels * sizeof(*h->labels));
    pw_placer_host_set_labels(c->placer, h->ph, h->labels, h->nlabels);
    set_snapshots(c, h, hm->snapshots, hm->nsnapshots);
    h->last_seen = now;

    /* A new session: commands the agent never acknowledged are void (inventory reconcile below
     * decides what is still needed). Command ids continue above what the agent has seen in our
     * epoch, so its dedupe never drops a new command. */
    if (!same_session) {
        h->ncmds = 0;
        h->nnotes = 0;
        pw_placer_touch(c->placer);
        h->urgent = 0;
    }
    if (hm->epoch == c->cfg.epoch && hm->cmd_ack >= h->next_cmd_id)
        h->next_cmd_id = hm->cmd_ack + 1;
    h->event_applied = hm->event_seq;
    if (h->expected) {
        h->expected = 0;
        c->expected_pending--;
    }
    host_set_state(c, h, PW_HOST_ALIVE, now);
    sync_inventory(c, h, hm->vms, hm->nvms, now);
    h->agent_draining = hm->draining != 0;
    pw_core_host_update_drain(c, h, now);
    pw_core_reconcile_all(c, now);
    fill_reply(c, h, reply);
    return PW_OK;
}

/* ---- report ---- */

static void apply_event(struct pw_core *c, struct host *h, const struct pw_agent_event *e, int64_t now)
{
    struct vm *v = pw_core_vm_find(c, e->vm_id);
    if (v != NULL && v->host != h)
        return; /* not this agent's VM in our view: ignore rather than trust */
    switch (e->state) {
    case PW_AVM_RUNNING:
        if (v == NULL) {
            struct pw_vm_info vi;
            memset(&vi, 0, sizeof(vi));
            vi.vm_id = e->vm_id;
            pw_strlcpy(vi.function, e->function, sizeof(vi.function));
            vi.state = PW_AVM_RUNNING;
            vi.numa_node = e->numa_node;
            pw_strlcpy(vi.address, e->address, sizeof(vi.address));
            adopt(c, h, &vi, now);
        } else if (v->state == PW_VM_RESTORING) {
            pw_core_metric(c, PW_METRIC_RESTORE_DONE, v->fn, e->restore_ms);
            pw_core_vm_ready(c, v, now, e->address);
            if (e->restore_ms > 0)
                pw_core_health_observe(c, h, (double)e->restore_ms, now);
        }
        break;
    case PW_AVM_FAILED:
        if (v == NULL) {
            queue_destroy_unknown(c, h, e->vm_id, e->function);
        } else if (v->state == PW_VM_RESTORING || v->state == PW_VM_IDLE || v->state == PW_VM_LEASED) {
            pw_core_metric(c, PW_METRIC_RESTORE_FAILED, v->fn, 0);
            struct fn *f = v->fn;
            if (v->state == PW_VM_RESTORING) {
                pw_core_restore_failed(c, f, now);
                pw_core_vm_set_state(c, v, PW_VM_FAILED, now);
                pw_core_vm_destroy(c, v, now);
                pw_core_health_observe(c, h, -1.0, now);
            } else {
                pw_core_vm_destroy(c, v, now);
            }
            pw_core_reconcile(c, f, now);
        }
        break;
    case PW_AVM_GONE:
        if (v != NULL) {
            struct fn *f = v->fn;
            int was_dying = f->deleted;
            if (v->state != PW_VM_STOPPING)
                pw_core_metric(c, PW_METRIC_VM_LOST, f, 0);
            pw_core_vm_set_state(c, v, PW_VM_GONE, now);
            if (!was_dying)
                pw_core_reconcile(c, f, now);
        }
        break;
    case PW_AVM_STOPPING:
        if (v != NULL && v->state != PW_VM_STOPPING && v->state != PW_VM_RESTORING)
            pw_core_vm_set_state(c, v, PW_VM_STOPPING, now);
        break;
    default:
        break;
    }
}

int pw_core_agent_report(struct pw_core *c, int64_t now, const struct pw_msg_report *r, struct pw_msg *reply)
{
    struct host *h = pw_core_host_get(c, r->agent_id);
    if (h == NULL || h->state != PW_HOST_ALIVE || strcmp(h->boot_id, r->boot_id) != 0) {
        fill_error(reply, "rehello", "unknown agent session: send hello with the full inventory");
        return PW_OK;
    }
    h->last_seen = now;
    h->load = r->load;
    pw_placer_host_set_load(c->placer, h->ph, r->load);
    if (r->has_snapshots)
        set_snapshots(c, h, r->snapshots, r->nsnapshots);
    for (size_t i = 0; i < r->nnuma; i++) {
        size_t k = numa_index(h, r->numa[i].id);
        if (k < h->nnuma) {
            h->numa[k].info.mem_free_mb = r->numa[i].mem_free_mb;
            h->numa[k].info.vcpu_free = r->numa[i].vcpu_free;
        }
    }
    if (r->epoch == c->cfg.epoch)
        outbox_ack(h, r->cmd_ack);
    /* Events in seq order, each once. A report normally carries them sorted; a reordered one
     * is applied in order anyway by repeated passes over the small array. */
    uint64_t applied = h->event_applied;
    for (;;) {
        const struct pw_agent_event *next = NULL;
        for (size_t i = 0; i < r->nevents; i++)
            if (r->events[i].seq > applied && (next == NULL || r->events[i].seq < next->seq))
                next = &r->events[i];
        if (next == NULL)
            break;
        applied = next->seq;
        h->event_applied = applied;
        apply_event(c, h, next, now);
        if (h->state != PW_HOST_ALIVE)
            break;
    }
    if (r->has_inventory)
        sync_inventory(c, h, r->vms, r->nvms, now);
    if (h->state == PW_HOST_ALIVE && (r->draining != 0) != h->agent_draining) {
        h->agent_draining = r->draining != 0;
        pw_core_host_update_drain(c, h, now);
    }
    fill_reply(c, h, reply);
    return PW_OK;
}

static void host_view(const struct host *h, struct pw_host_view *out);

void pw_core_host_each(const struct pw_core *c, pw_core_host_cb cb, void *arg)
{
    struct pw_host_view *view = pw_xmalloc(sizeof(*view)); /* ~20 KB: not on the stack */
    const struct pw_list *it;
    pw_list_foreach(it, &c->host_list)
    {
        host_view(pw_container_of(it, struct host, link), view);
        cb(arg, view);
    }
    free(view);
}

int pw_core_host_find(const struct pw_core *c, const char *id, struct pw_host_view *out)
{
    const struct host *h = pw_core_host_get(c, id);
    if (h == NULL)
        return PW_ERR_NOTFOUND;
    host_view(h, out);
    return PW_OK;
}

static void host_view(const struct host *h, struct pw_host_view *out)
{
    memset(out, 0, sizeof(*out));
    pw_strlcpy(out->id, h->id, sizeof(out->id));
    out->state = h->state;
    pw_strlcpy(out->driver, h->driver, sizeof(out->driver));
    out->last_seen = h->last_seen;
    out->load = h->load;
    out->vms = h->nvms;
    out->nnuma = h->nnuma;
    for (size_t i = 0; i < h->nnuma; i++) {
        out->numa[i] = h->numa[i].info;
        uint64_t used = 0;
        int32_t vused = 0;
        pw_placer_node_used(h->ph, i, &used, &vused);
        out->numa[i].mem_free_mb = used < h->numa[i].info.mem_total_mb ? h->numa[i].info.mem_total_mb - used : 0;
        int32_t vfree = h->numa[i].info.vcpu_total - vused;
        out->numa[i].vcpu_free = vfree > 0 ? vfree : 0;
    }
    out->draining = h->draining;
    out->agent_draining = h->agent_draining;
    out->cordoned = h->health.cordoned;
    out->cordon_probation = h->health.probation;
    pw_strlcpy(out->cordon_reason, pw_core_cordon_reason_str(h->health.reason), sizeof(out->cordon_reason));
    out->cordoned_since = h->health.cordoned ? h->health.since : 0;
    struct pw_phost_info pi;
    pw_placer_host_info(h->ph, &pi);
    pw_strlcpy(out->cloud, pi.cloud, sizeof(out->cloud));
    pw_strlcpy(out->region, pi.region, sizeof(out->region));
    pw_strlcpy(out->zone, pi.zone, sizeof(out->zone));
    pw_strlcpy(out->instance_type, pi.instance_type, sizeof(out->instance_type));
    out->cost_per_gib_hour = pi.cost_per_gib_hour;
    out->nsnapshots = pi.nsnapshots;
    out->nlabels = h->nlabels;
    if (h->nlabels > 0)
        memcpy(out->labels, h->labels, h->nlabels * sizeof(*h->labels));
}
