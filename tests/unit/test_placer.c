/* test_placer.c — the placer on hand-made clusters: nodes are never split, constraints and
 * spread limits hold, cheaper hosts win when they have room, best fit packs at least as well
 * as first fit, the index agrees with a full scan, and reaping prefers the worst places. */
#include "pw/error.h"
#include "pw/placer.h"

#include <inttypes.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define MAXH 512

struct cluster {
    struct pw_placer *p;
    struct pw_phost *h[MAXH];
    size_t n;
    int owner_ok[MAXH];
};

static int owner_ok(void *owner) { return *(int *)owner; }

static void cl_init(struct cluster *c, const struct pw_placer_config *cfg)
{
    memset(c, 0, sizeof(*c));
    c->p = pw_placer_new(cfg, owner_ok);
}

static void cl_check(struct cluster *c)
{
    char err[256] = "";
    if (pw_placer_check(c->p, err, sizeof(err)) != PW_OK)
        fail_msg("placer invariant violated: %s", err);
}

static void cl_fini(struct cluster *c)
{
    cl_check(c);
    pw_placer_free(c->p);
}

/* add_host adds a host with nnodes nodes of mem_mb and vcpus each and the given labels. */
static size_t add_host(struct cluster *c, size_t nnodes, uint64_t mem_mb, int32_t vcpus, const char *cloud,
                       const char *region, const char *zone, const char *cost)
{
    assert_true(c->n < MAXH);
    size_t i = c->n++;
    c->owner_ok[i] = 1;
    c->h[i] = pw_placer_host_add(c->p, &c->owner_ok[i]);
    struct pw_label l[4];
    size_t nl = 0;
    const char *keys[] = {PW_LABEL_CLOUD, PW_LABEL_REGION, PW_LABEL_ZONE, PW_LABEL_COST};
    const char *vals[] = {cloud, region, zone, cost};
    for (size_t k = 0; k < 4; k++) {
        if (vals[k] == NULL)
            continue;
        pw_strlcpy(l[nl].key, keys[k], sizeof(l[nl].key));
        pw_strlcpy(l[nl].value, vals[k], sizeof(l[nl].value));
        nl++;
    }
    pw_placer_host_set_labels(c->p, c->h[i], l, nl);
    struct pw_numa_node nodes[8];
    memset(nodes, 0, sizeof(nodes));
    for (size_t k = 0; k < nnodes; k++) {
        nodes[k].id = (int32_t)k;
        nodes[k].ncpus = 8;
        nodes[k].mem_total_mb = mem_mb;
        nodes[k].vcpu_total = vcpus;
    }
    pw_placer_host_set_topology(c->p, c->h[i], nodes, nnodes);
    pw_placer_host_set_eligible(c->p, c->h[i], 1);
    return i;
}

static size_t host_index(struct cluster *c, const struct pw_phost *h)
{
    for (size_t i = 0; i < c->n; i++)
        if (c->h[i] == h)
            return i;
    fail_msg("unknown host");
    return 0;
}

static void req_init(struct pw_place_req *r, const void *fn, uint32_t mem, uint32_t vcpus, uint32_t total,
                     const struct pw_placement_spec *spec)
{
    memset(r, 0, sizeof(*r));
    r->fn = fn;
    r->fn_hash = (uint64_t)(uintptr_t)fn * 2654435761u;
    r->memory_mb = mem;
    r->vcpus = vcpus;
    r->fn_total = total;
    r->spec = spec;
}

/* commit records a placement as the core does. */
static void commit(struct cluster *c, const struct pw_place_result *res, const struct pw_place_req *r)
{
    pw_placer_node_use(c->p, res->host, res->node, r->memory_mb, r->vcpus, 1);
    pw_placer_fn_count(c->p, res->host, r->fn, 1);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* ---- tests ---- */

static void test_never_straddles(void **state)
{
    (void)state;
    struct cluster c;
    cl_init(&c, NULL);
    /* Two nodes with 8 GiB each: 16 GiB free on the host, but no node fits 10 GiB. */
    add_host(&c, 2, 8192, 16, NULL, NULL, NULL, NULL);
    struct pw_place_req r;
    struct pw_place_result res;
    int fn;
    req_init(&r, &fn, 10240, 1, 0, NULL);
    assert_int_equal(pw_placer_place(c.p, &r, &res), 0);
    assert_int_equal(pw_placer_place_scan(c.p, &r, &res), 0);
    /* A host with one 12 GiB node takes it, on that node. */
    size_t big = add_host(&c, 2, 12288, 16, NULL, NULL, NULL, NULL);
    assert_int_equal(pw_placer_place(c.p, &r, &res), 1);
    assert_int_equal(host_index(&c, res.host), big);
    commit(&c, &res, &r);
    /* vCPU slots count too: a node with memory but no slots is skipped. */
    struct pw_place_req r2;
    int fn2;
    req_init(&r2, &fn2, 512, 17, 0, NULL);
    assert_int_equal(pw_placer_place(c.p, &r2, &res), 0);
    /* Random shapes: every placement fits entirely on its node. */
    for (int i = 0; i < 500; i++) {
        uint32_t mem = 256u << (rnd() % 6);
        req_init(&r, &fn, mem, 1 + (uint32_t)(rnd() % 4), (uint32_t)i, NULL);
        if (!pw_placer_place(c.p, &r, &res))
            break;
        uint64_t used;
        int32_t vused;
        assert_true(pw_placer_node_used(res.host, res.node, &used, &vused));
        commit(&c, &res, &r);
        uint64_t after;
        int32_t vafter;
        pw_placer_node_used(res.host, res.node, &after, &vafter);
        assert_true(after <= (host_index(&c, res.host) == big ? 12288u : 8192u));
        assert_true(vafter <= 16);
    }
    cl_fini(&c);
}

/* A random labelled cluster: 3 clouds x 2 regions x 2 zones, 4 prices. */
static void random_cluster(struct cluster *c, size_t nhosts)
{
    static const char *clouds[] = {"aws", "gcp", "azure"};
    static const char *regions[] = {"r1", "r2"};
    static const char *zones[] = {"a", "b"};
    static const char *costs[] = {"0.010", "0.012", "0.020", "0.031"};
    for (size_t i = 0; i < nhosts; i++) {
        char zone[32];
        const char *cl = clouds[rnd() % 3];
        const char *rg = regions[rnd() % 2];
        snprintf(zone, sizeof(zone), "%s-%s", rg, zones[rnd() % 2]);
        add_host(c, 1 + rnd() % 4, 4096u << (rnd() % 3), 8 + (int32_t)(rnd() % 24), cl, rg, zone, costs[rnd() % 4]);
        pw_placer_host_set_load(c->p, c->h[i], (double)(rnd() % 800) / 100.0);
    }
}

static void test_constraints_and_exactness(void **state)
{
    (void)state;
    struct cluster c;
    cl_init(&c, NULL);
    random_cluster(&c, 120);
    struct pw_placement_spec spec;
    memset(&spec, 0, sizeof(spec));
    pw_strlcpy(spec.clouds[0], "aws", PW_NAME_MAX);
    pw_strlcpy(spec.clouds[1], "gcp", PW_NAME_MAX);
    spec.nclouds = 2;
    pw_strlcpy(spec.regions[0], "r1", PW_NAME_MAX);
    spec.nregions = 1;
    assert_int_equal(pw_placement_spec_validate(&spec, NULL, 0), PW_OK);
    int fn;
    uint32_t placed = 0;
    for (;;) {
        struct pw_place_req r;
        struct pw_place_result res, scan;
        req_init(&r, &fn, 1024, 2, placed, &spec);
        int got = pw_placer_place(c.p, &r, &res);
        /* The index never says "no room" when a full scan finds some, and vice versa. */
        assert_int_equal(got, pw_placer_place_scan(c.p, &r, &scan));
        if (!got)
            break;
        struct pw_phost_info info;
        pw_placer_host_info(res.host, &info);
        assert_true(strcmp(info.cloud, "aws") == 0 || strcmp(info.cloud, "gcp") == 0);
        assert_string_equal(info.region, "r1");
        assert_true(res.score >= scan.score - 1e-9); /* the scan is the optimum */
        commit(&c, &res, &r);
        placed++;
    }
    assert_true(placed > 10);
    /* Nothing landed outside the constraints. */
    for (size_t i = 0; i < c.n; i++) {
        struct pw_phost_info info;
        pw_placer_host_info(c.h[i], &info);
        if (strcmp(info.region, "r1") != 0 || strcmp(info.cloud, "azure") == 0)
            assert_int_equal(pw_placer_host_fn(c.p, c.h[i], &fn), 0);
    }
    /* Another function without constraints still finds room elsewhere. */
    int other;
    struct pw_place_req r;
    struct pw_place_result res;
    req_init(&r, &other, 1024, 2, 0, NULL);
    assert_int_equal(pw_placer_place(c.p, &r, &res), 1);
    /* Bad specs are refused. */
    pw_strlcpy(spec.zones[0], "no spaces", PW_NAME_MAX);
    spec.nzones = 1;
    char err[128];
    assert_int_equal(pw_placement_spec_validate(&spec, err, sizeof(err)), PW_ERR_INVAL);
    spec.nzones = 0;
    spec.max_host_share = 1.5;
    assert_int_equal(pw_placement_spec_validate(&spec, err, sizeof(err)), PW_ERR_INVAL);
    cl_fini(&c);
}

static void test_spread_limits(void **state)
{
    (void)state;
    struct cluster c;
    cl_init(&c, NULL);
    /* 2 zones; zone a has 4 hosts, zone b has 2; big nodes so capacity never binds. */
    for (int i = 0; i < 4; i++)
        add_host(&c, 2, 65536, 64, "aws", "r1", "a", "0.01");
    for (int i = 0; i < 2; i++)
        add_host(&c, 2, 65536, 64, "aws", "r1", "b", "0.01");
    struct pw_placement_spec spec;
    memset(&spec, 0, sizeof(spec));
    spec.max_host_share = 0.25;
    spec.max_zone_share = 0.5;
    int fn;
    uint32_t total = 0;
    for (int k = 0; k < 12; k++) {
        struct pw_place_req r;
        struct pw_place_result res;
        req_init(&r, &fn, 512, 1, total, &spec);
        int got = pw_placer_place(c.p, &r, &res);
        if (!got)
            break;
        commit(&c, &res, &r);
        total++;
        /* After every placement: no host above max(1, ceil(0.25 n)), no zone above
         * max(1, ceil(0.5 n)). */
        uint32_t host_lim = (uint32_t)ceil(0.25 * total - 1e-9), zone_lim = (uint32_t)ceil(0.5 * total - 1e-9);
        host_lim = host_lim < 1 ? 1 : host_lim;
        zone_lim = zone_lim < 1 ? 1 : zone_lim;
        uint32_t za = 0, zb = 0;
        for (size_t i = 0; i < c.n; i++) {
            uint32_t n = pw_placer_host_fn(c.p, c.h[i], &fn);
            assert_true(n <= host_lim);
            if (i < 4)
                za += n;
            else
                zb += n;
        }
        assert_true(za <= zone_lim && zb <= zone_lim);
    }
    assert_int_equal(total, 12); /* 6 per zone at most: zone b's 2 hosts hold 3 each at n = 12 */
    /* One more would need a zone above half: refused although capacity is plenty. */
    struct pw_place_req r;
    struct pw_place_result res;
    req_init(&r, &fn, 512, 1, total, &spec);
    spec.max_host_share = 0.25;
    assert_int_equal(pw_placer_place(c.p, &r, &res), 1); /* n = 13: ceil(6.5) = 7 per zone */
    cl_fini(&c);
}

static void test_cost_preference(void **state)
{
    (void)state;
    struct cluster c;
    cl_init(&c, NULL);
    size_t exp1 = add_host(&c, 2, 8192, 16, "aws", "r1", "a", "0.030");
    size_t cheap = add_host(&c, 2, 8192, 16, "gcp", "r1", "b", "0.010");
    size_t exp2 = add_host(&c, 2, 8192, 16, "azure", "r1", "c", "0.025");
    int fn;
    uint32_t on_cheap = 0, total = 0;
    /* 16 GiB of room on the cheap host: the first 16 VMs of 1 GiB go there, spread or not. */
    for (int k = 0; k < 16; k++) {
        struct pw_place_req r;
        struct pw_place_result res;
        req_init(&r, &fn, 1024, 1, total, NULL);
        assert_int_equal(pw_placer_place(c.p, &r, &res), 1);
        on_cheap += host_index(&c, res.host) == cheap;
        commit(&c, &res, &r);
        total++;
    }
    assert_int_equal(on_cheap, 16);
    /* Full: the next goes to the cheaper of the expensive ones. */
    struct pw_place_req r;
    struct pw_place_result res;
    req_init(&r, &fn, 1024, 1, total, NULL);
    assert_int_equal(pw_placer_place(c.p, &r, &res), 1);
    assert_int_equal(host_index(&c, res.host), exp2);
    (void)exp1;
    /* The naive scan agrees. */
    struct pw_place_result scan;
    assert_int_equal(pw_placer_place_scan(c.p, &r, &scan), 1);
    assert_ptr_equal(scan.host, res.host);
    cl_fini(&c);
}

static void test_snapshot_and_load_preference(void **state)
{
    (void)state;
    struct cluster c;
    cl_init(&c, NULL);
    size_t a = add_host(&c, 1, 8192, 16, NULL, NULL, NULL, NULL);
    size_t b = add_host(&c, 1, 8192, 16, NULL, NULL, NULL, NULL);
    int fn;
    struct pw_place_req r;
    struct pw_place_result res;
    req_init(&r, &fn, 1024, 1, 0, NULL);
    uint64_t snap = r.fn_hash;
    pw_placer_host_set_snapshots(c.p, c.h[b], &snap, 1);
    assert_true(pw_placer_host_has_snapshot(c.h[b], snap));
    assert_int_equal(pw_placer_place(c.p, &r, &res), 1);
    assert_int_equal(host_index(&c, res.host), b);
    pw_placer_host_set_snapshots(c.p, c.h[b], NULL, 0);
    assert_false(pw_placer_host_has_snapshot(c.h[b], snap));
    /* Loaded host loses to an idle one. */
    pw_placer_host_set_load(c.p, c.h[a], 8.0);
    assert_int_equal(pw_placer_place(c.p, &r, &res), 1);
    assert_int_equal(host_index(&c, res.host), b);
    /* The owner callback vetoes (the core: the agent's outbox is full). */
    c.owner_ok[b] = 0;
    assert_int_equal(pw_placer_place(c.p, &r, &res), 1);
    assert_int_equal(host_index(&c, res.host), a);
    /* Ineligible (draining) hosts take nothing. */
    pw_placer_host_set_eligible(c.p, c.h[a], 0);
    assert_int_equal(pw_placer_place(c.p, &r, &res), 0);
    c.owner_ok[b] = 1;
    cl_fini(&c);
}

/* The baselines run on plain arrays: first fit (hosts and nodes in order, the first that
 * fits) and, as a control that the scenario does fragment, worst fit (the emptiest node). */
enum { FH = 40, FN = 2, FOPS = 8000, FCAP = 16384 };
#ifndef FRAG_CFG
#define FRAG_CFG NULL
#endif

struct frag_vm {
    int host, node;
    uint32_t mem;
    int large;
};

struct frag_run {
    struct frag_vm live[FOPS];
    int nlive;
    uint32_t placed, refused, refused_large;
};

static int base_place(uint64_t used[FH][FN], uint32_t mem, int worst, int *oh, int *on)
{
    int best = -1;
    for (int i = 0; i < FH; i++)
        for (int n = 0; n < FN; n++) {
            if (used[i][n] + mem > FCAP)
                continue;
            if (!worst) {
                *oh = i;
                *on = n;
                return 1;
            }
            if (best < 0 || used[i][n] < used[*oh][*on]) {
                best = 1;
                *oh = i;
                *on = n;
            }
        }
    return best > 0;
}

/* run_frag replays ops (arrival with a size, or departure of the k-th live VM) against one
 * placer: kind 0 = ours, 1 = first fit, 2 = worst fit. */
static void run_frag(const uint32_t *op_mem, const int *op_large, const uint64_t *op_pick, int kind, struct frag_run *out)
{
    struct cluster c;
    static uint64_t used[FH][FN];
    memset(used, 0, sizeof(used));
    memset(out, 0, sizeof(*out));
    if (kind == 0) {
        cl_init(&c, FRAG_CFG);
        for (int i = 0; i < FH; i++)
            add_host(&c, FN, FCAP, 64, NULL, NULL, NULL, NULL);
    }
    static int small_fn, large_fn;
    uint32_t totals[2] = {0, 0};
    for (int k = 0; k < FOPS; k++) {
        if (op_mem[k] == 0) {
            if (out->nlive == 0)
                continue;
            int i = (int)(op_pick[k] % (uint64_t)out->nlive);
            struct frag_vm v = out->live[i];
            out->live[i] = out->live[--out->nlive];
            if (kind == 0) {
                pw_placer_node_use(c.p, c.h[v.host], (size_t)v.node, v.mem, 1, -1);
                pw_placer_fn_count(c.p, c.h[v.host], v.large ? &large_fn : &small_fn, -1);
                totals[v.large]--;
            } else {
                used[v.host][v.node] -= v.mem;
            }
            continue;
        }
        int h = 0, n = 0, ok;
        if (kind == 0) {
            struct pw_place_req r;
            struct pw_place_result res;
            req_init(&r, op_large[k] ? &large_fn : &small_fn, op_mem[k], 1, totals[op_large[k]], NULL);
            ok = pw_placer_place(c.p, &r, &res);
            if (ok) {
                commit(&c, &res, &r);
                totals[op_large[k]]++;
                h = (int)host_index(&c, res.host);
                n = (int)res.node;
            }
        } else {
            ok = base_place(used, op_mem[k], kind == 2, &h, &n);
            if (ok)
                used[h][n] += op_mem[k];
        }
        if (ok) {
            out->live[out->nlive++] = (struct frag_vm){h, n, op_mem[k], op_large[k]};
            out->placed++;
        } else {
            out->refused++;
            out->refused_large += (uint32_t)op_large[k];
        }
    }
    if (kind == 0)
        cl_fini(&c);
}

static void test_fragmentation_vs_first_fit(void **state)
{
    (void)state;
    /* Churn near capacity: arrivals of small (256 MiB..1.5 GiB) and large (4..8 GiB) VMs and
     * departures of random live ones; a fragmenting placer refuses large VMs while the fleet
     * still has room in total. Neither best fit nor first fit wins every sequence (a known
     * result), so the claim is over many sequences: in total we place at least as many. The
     * sequences are fixed (seeded), so the test is deterministic. */
    static uint32_t op_mem[FOPS];
    static int op_large[FOPS];
    static uint64_t op_pick[FOPS];
    static struct frag_run ours, ff, wf;
    uint64_t sum_ours = 0, sum_ff = 0, sum_wf = 0;
    int wins = 0, losses = 0;
    for (int trial = 0; trial < 12; trial++) {
        for (int k = 0; k < FOPS; k++) {
            int arrive = k < 500 || rnd() % 100 < 52;
            op_large[k] = rnd() % 4 == 0;
            op_mem[k] = !arrive ? 0
                        : op_large[k] ? 4096u + (uint32_t)(rnd() % 3) * 2048u
                                      : 256u + (uint32_t)(rnd() % 6) * 256u;
            op_pick[k] = rnd();
        }
        run_frag(op_mem, op_large, op_pick, 0, &ours);
        run_frag(op_mem, op_large, op_pick, 1, &ff);
        run_frag(op_mem, op_large, op_pick, 2, &wf);
        sum_ours += ours.placed;
        sum_ff += ff.placed;
        sum_wf += wf.placed;
        wins += ours.placed > ff.placed;
        losses += ours.placed < ff.placed;
    }
    print_message("fragmentation, 12 churn sequences: VMs placed: placer %" PRIu64 ", first fit %" PRIu64
                  ", worst fit %" PRIu64 "; placer ahead of first fit in %d, behind in %d\n",
                  sum_ours, sum_ff, sum_wf, wins, losses);
    assert_true(sum_ours >= sum_ff);
    assert_true(wins >= losses);
    /* The scenario discriminates: the worst-fit control does fragment. */
    assert_true(sum_wf < sum_ff);
}

static void test_index_matches_scan_with_full_budget(void **state)
{
    (void)state;
    struct pw_placer_config cfg;
    pw_placer_config_default(&cfg);
    cfg.candidates = 4096;
    cfg.scan_budget = 1u << 20;
    struct cluster c;
    cl_init(&c, &cfg);
    random_cluster(&c, 60);
    int fns[7];
    uint32_t totals[7] = {0};
    for (int k = 0; k < 600; k++) {
        int f = (int)(rnd() % 7);
        struct pw_place_req r;
        struct pw_place_result a, b;
        req_init(&r, &fns[f], 256u << (rnd() % 4), 1, totals[f], NULL);
        int ga = pw_placer_place(c.p, &r, &a), gb = pw_placer_place_scan(c.p, &r, &b);
        assert_int_equal(ga, gb);
        if (!ga)
            continue;
        assert_true(fabs(a.score - b.score) < 1e-9);
        assert_true(fabs(pw_placer_score(c.p, a.host, a.node, &r) - a.score) < 1e-9);
        commit(&c, &a, &r);
        totals[f]++;
    }
    cl_fini(&c);
}

static void test_index_survives_churn(void **state)
{
    (void)state;
    struct cluster c;
    cl_init(&c, NULL);
    random_cluster(&c, 50);
    struct placed {
        struct pw_phost *h;
        size_t node;
        uint32_t mem;
        int *fn;
    } live[2000];
    size_t nlive = 0;
    int fns[5];
    for (int k = 0; k < 5000; k++) {
        uint64_t op = rnd() % 10;
        if (op < 5 || nlive == 0) {
            int *fn = &fns[rnd() % 5];
            struct pw_place_req r;
            struct pw_place_result res;
            req_init(&r, fn, 128u << (rnd() % 6), 1, 0, NULL);
            if (nlive < 2000 && pw_placer_place(c.p, &r, &res)) {
                commit(&c, &res, &r);
                live[nlive++] = (struct placed){res.host, res.node, r.memory_mb, fn};
            }
        } else if (op < 8) {
            size_t i = (size_t)(rnd() % nlive);
            pw_placer_node_use(c.p, live[i].h, live[i].node, live[i].mem, 1, -1);
            pw_placer_fn_count(c.p, live[i].h, live[i].fn, -1);
            live[i] = live[--nlive];
        } else if (op < 9) {
            size_t i = (size_t)(rnd() % c.n);
            pw_placer_host_set_eligible(c.p, c.h[i], (int)(rnd() % 2));
        } else {
            /* Relabel a host: its class and zone change under its VMs. */
            size_t i = (size_t)(rnd() % c.n);
            struct pw_label l[2];
            pw_strlcpy(l[0].key, PW_LABEL_ZONE, sizeof(l[0].key));
            snprintf(l[0].value, sizeof(l[0].value), "z%u", (unsigned)(rnd() % 3));
            pw_strlcpy(l[1].key, PW_LABEL_COST, sizeof(l[1].key));
            snprintf(l[1].value, sizeof(l[1].value), "0.0%u", (unsigned)(1 + rnd() % 3));
            pw_placer_host_set_labels(c.p, c.h[i], l, 2);
        }
        if (k % 250 == 0)
            cl_check(&c);
    }
    /* Removing hosts with VMs on them drops their counts. */
    for (size_t i = 0; i < c.n; i += 2) {
        pw_placer_host_remove(c.p, c.h[i]);
        c.h[i] = NULL;
    }
    cl_check(&c);
    pw_placer_free(c.p);
}

static void test_reap_prefers_worst_places(void **state)
{
    (void)state;
    struct cluster c;
    cl_init(&c, NULL);
    size_t cheap = add_host(&c, 1, 65536, 64, NULL, NULL, "a", "0.01");
    size_t dear = add_host(&c, 1, 65536, 64, NULL, NULL, "b", "0.03");
    int fn;
    pw_placer_fn_count(c.p, c.h[cheap], &fn, 2);
    pw_placer_fn_count(c.p, c.h[dear], &fn, 2);
    double s_cheap = pw_placer_reap_score(c.p, c.h[cheap], &fn, 4, NULL);
    double s_dear = pw_placer_reap_score(c.p, c.h[dear], &fn, 4, NULL);
    assert_true(s_dear > s_cheap);
    /* A crowded place goes before a sparse one at equal cost. */
    size_t crowded = add_host(&c, 1, 65536, 64, NULL, NULL, "a", "0.01");
    pw_placer_fn_count(c.p, c.h[crowded], &fn, 6);
    assert_true(pw_placer_reap_score(c.p, c.h[crowded], &fn, 10, NULL) > pw_placer_reap_score(c.p, c.h[cheap], &fn, 10, NULL));
    /* A host holding more than a limit allows for a smaller pool goes first, even if cheap:
     * 3 of 4 on `cheap` with max_host_share 0.5; at 3 VMs the limit is 2. */
    {
        struct cluster d;
        cl_init(&d, NULL);
        size_t lo = add_host(&d, 1, 65536, 64, NULL, NULL, "a", "0.01");
        size_t hi = add_host(&d, 1, 65536, 64, NULL, NULL, "b", "0.03");
        struct pw_placement_spec spec;
        memset(&spec, 0, sizeof(spec));
        spec.max_host_share = 0.5;
        pw_placer_fn_count(d.p, d.h[lo], &fn, 3);
        pw_placer_fn_count(d.p, d.h[hi], &fn, 1);
        assert_true(pw_placer_reap_score(d.p, d.h[hi], &fn, 4, NULL) > pw_placer_reap_score(d.p, d.h[lo], &fn, 4, NULL));
        assert_true(pw_placer_reap_score(d.p, d.h[lo], &fn, 4, &spec) > pw_placer_reap_score(d.p, d.h[hi], &fn, 4, &spec));
        pw_placer_fn_count(d.p, d.h[lo], &fn, -3);
        pw_placer_fn_count(d.p, d.h[hi], &fn, -1);
        cl_fini(&d);
    }
    /* A draining host goes before everything. */
    pw_placer_host_set_eligible(c.p, c.h[cheap], 0);
    assert_true(pw_placer_reap_score(c.p, c.h[cheap], &fn, 10, NULL) > pw_placer_reap_score(c.p, c.h[dear], &fn, 10, NULL));
    pw_placer_fn_count(c.p, c.h[cheap], &fn, -2);
    pw_placer_fn_count(c.p, c.h[dear], &fn, -2);
    pw_placer_fn_count(c.p, c.h[crowded], &fn, -6);
    cl_fini(&c);
}

static void test_config_validate(void **state)
{
    (void)state;
    struct pw_placer_config cfg;
    pw_placer_config_default(&cfg);
    assert_int_equal(pw_placer_config_validate(&cfg, NULL, 0), PW_OK);
    cfg.w.cost = -1;
    assert_int_equal(pw_placer_config_validate(&cfg, NULL, 0), PW_ERR_INVAL);
    cfg.w.cost = NAN;
    assert_int_equal(pw_placer_config_validate(&cfg, NULL, 0), PW_ERR_INVAL);
    pw_placer_config_default(&cfg);
    cfg.candidates = 0;
    assert_int_equal(pw_placer_config_validate(&cfg, NULL, 0), PW_ERR_INVAL);
    pw_placer_config_default(&cfg);
    cfg.scan_budget = 2;
    assert_int_equal(pw_placer_config_validate(&cfg, NULL, 0), PW_ERR_INVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_never_straddles),
        cmocka_unit_test(test_constraints_and_exactness),
        cmocka_unit_test(test_spread_limits),
        cmocka_unit_test(test_cost_preference),
        cmocka_unit_test(test_snapshot_and_load_preference),
        cmocka_unit_test(test_fragmentation_vs_first_fit),
        cmocka_unit_test(test_index_matches_scan_with_full_budget),
        cmocka_unit_test(test_index_survives_churn),
        cmocka_unit_test(test_reap_prefers_worst_places),
        cmocka_unit_test(test_config_validate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
