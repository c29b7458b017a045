/* placer.h — where a new VM goes: NUMA-aware, constraint-, spread- and cost-aware placement
 * over many hosts, and which idle VM to remove first.
 *
 * The placer holds, per host: its labels (cloud, region, zone, cost per GiB-hour), NUMA nodes
 * with their capacity and what is placed on them, its load, its local golden snapshots and
 * whether it takes new VMs (alive and not draining); per (host, function) and (zone, function):
 * how many VMs the function has there. The core keeps it up to date and asks it two things:
 * pw_placer_place (a host and NUMA node for one VM) and pw_placer_reap_score (which VM to
 * remove first). It is pure and single-threaded like the core; prewarmd, prewarm-replay and
 * bench/placement run this same code.
 *
 * Filter: the host takes new VMs, the owner's callback agrees (the core: the agent's outbox has
 * room), the function's clouds/regions/zones allow it, one NUMA node has the memory and vCPU
 * slots for the whole VM (a VM never straddles nodes), and the spread limits hold after
 * placing: VMs of the function on the host <= max(1, ceil(max_host_share * (n + 1))) and in
 * the zone <= max(1, ceil(max_zone_share * (n + 1))), n = the function's VMs now.
 * Score (lower is better), every term in [0, 1] times its weight:
 *   cost     host cost per GiB-hour / the highest cost of any host
 *   fit      node memory left after placing / node memory (best fit: less fragmentation)
 *   spread   (share of the function on the host + share in the zone) / 2
 *   snapshot 0 when the host has the function's golden snapshot, else 1
 *   load     host load / host CPUs, capped at 1
 *
 * The index: hosts are grouped into classes of equal (zone, cost); each class keeps its
 * eligible nodes in buckets by free memory (16 log-linear buckets per power of two, a bitmap of
 * the non-empty ones). A decision visits classes cheapest first and stops once a class's cost
 * term alone cannot beat the best score found; in a class it scans buckets from the smallest
 * that can fit the VM upward and scores the first `candidates` feasible nodes (looking at no
 * more than `scan_budget` nodes), plus up to 32 hosts that hold the function's snapshot (a
 * window that moves with the function's pool size when there are more). If that
 * finds nothing, a full pass over the allowed classes runs, so "no capacity" is always exact.
 * pw_placer_place_scan is the naive placer: every node of every host, same filter and score;
 * it is the baseline in tests and in bench/placement.
 *
 * Ownership: the placer owns its hosts (struct pw_phost); `owner` pointers and `fn` keys are
 * the caller's and only compared or passed back. */
#ifndef PW_PLACER_H
#define PW_PLACER_H

#include "pw/proto.h"

#include <stddef.h>
#include <stdint.h>

#define PW_PLACE_MAX_SEL 8 /* entries per allowed-clouds/regions/zones list */

/* A function's placement constraints. Empty lists allow everything; a share of 0 or >= 1 means
 * no limit. */
struct pw_placement_spec {
    char clouds[PW_PLACE_MAX_SEL][PW_NAME_MAX];
    size_t nclouds;
    char regions[PW_PLACE_MAX_SEL][PW_NAME_MAX];
    size_t nregions;
    char zones[PW_PLACE_MAX_SEL][PW_NAME_MAX];
    size_t nzones;
    double max_host_share; /* [0, 1] */
    double max_zone_share; /* [0, 1] */
};
/* pw_placement_spec_validate checks names and ranges. Returns PW_OK or PW_ERR_INVAL with a
 * reason in errbuf. */
int pw_placement_spec_validate(const struct pw_placement_spec *s, char *errbuf, size_t errlen);

struct pw_placer_weights {
    double cost, fit, spread, snapshot, load; /* each >= 0 */
};

struct pw_placer_config {
    struct pw_placer_weights w;
    uint32_t candidates;  /* feasible nodes scored per class; default 8 */
    uint32_t scan_budget; /* nodes looked at per class before moving on; default 64 */
};
/* Defaults: weights cost 4, fit 1, spread 1, snapshot 0.5, load 0.5. */
void pw_placer_config_default(struct pw_placer_config *c);
/* Returns PW_OK or PW_ERR_INVAL (negative or non-finite weight, zero candidates). */
int pw_placer_config_validate(const struct pw_placer_config *c, char *errbuf, size_t errlen);

struct pw_placer;
struct pw_phost;

/* host_ok is asked about a candidate host's owner just before it is scored; NULL = always. */
typedef int (*pw_placer_host_ok_fn)(void *owner);

struct pw_placer *pw_placer_new(const struct pw_placer_config *cfg, pw_placer_host_ok_fn host_ok);
void pw_placer_free(struct pw_placer *p);

/* ---- hosts ---- */

/* pw_placer_host_add registers a host with no labels, no nodes, not eligible. */
struct pw_phost *pw_placer_host_add(struct pw_placer *p, void *owner);
/* pw_placer_host_remove forgets the host and its per-function counts. */
void pw_placer_host_remove(struct pw_placer *p, struct pw_phost *h);
void *pw_placer_host_owner(const struct pw_phost *h);
/* pw_placer_host_set_labels reads cloud, region, zone and cost_per_gib_hour (an unparsable or
 * negative cost counts as 0); the function counts move to the new zone. */
void pw_placer_host_set_labels(struct pw_placer *p, struct pw_phost *h, const struct pw_label *labels, size_t n);
/* pw_placer_host_set_topology replaces the nodes (totals from numa[]; mem_total_mb and
 * vcpu_total) and zeroes what is placed on them: the caller adds its VMs back with
 * pw_placer_node_use. */
void pw_placer_host_set_topology(struct pw_placer *p, struct pw_phost *h, const struct pw_numa_node *numa, size_t n);
/* Eligible: the host takes new VMs (alive, not draining). */
void pw_placer_host_set_eligible(struct pw_placer *p, struct pw_phost *h, int eligible);
void pw_placer_host_set_load(struct pw_placer *p, struct pw_phost *h, double load);
/* pw_placer_host_set_snapshots replaces the host's snapshot set (pw_hash_str of names). */
void pw_placer_host_set_snapshots(struct pw_placer *p, struct pw_phost *h, const uint64_t *fn_hashes, size_t n);
int pw_placer_host_has_snapshot(const struct pw_phost *h, uint64_t fn_hash);

/* What the placer knows of a host, for views. Strings point into the placer; valid until the
 * next call that changes the host. */
struct pw_phost_info {
    const char *cloud, *region, *zone, *instance_type;
    double cost_per_gib_hour;
    int eligible;
    size_t nsnapshots;
};
void pw_placer_host_info(const struct pw_phost *h, struct pw_phost_info *out);

/* ---- usage ---- */

/* pw_placer_node_use adds (sign > 0) or removes (sign < 0) one VM's memory and vCPUs on node
 * `node` of h. Ignored when node is out of range. */
void pw_placer_node_use(struct pw_placer *p, struct pw_phost *h, size_t node, uint32_t memory_mb, uint32_t vcpus,
                        int sign);
/* pw_placer_node_used reads what is placed on a node. Returns 0 when node is out of range. */
int pw_placer_node_used(const struct pw_phost *h, size_t node, uint64_t *mem_mb, int32_t *vcpus);
/* pw_placer_fn_count changes the number of fn's VMs on h (and in h's zone) by delta. */
void pw_placer_fn_count(struct pw_placer *p, struct pw_phost *h, const void *fn, int delta);
uint32_t pw_placer_host_fn(const struct pw_placer *p, const struct pw_phost *h, const void *fn);
/* pw_placer_zone_fn counts fn's VMs in h's zone on eligible hosts (a drained host's VMs are on
 * their way out and do not count against the zone's spread limit). */
uint32_t pw_placer_zone_fn(const struct pw_placer *p, const struct pw_phost *h, const void *fn);

/* ---- decisions ---- */

struct pw_place_req {
    const void *fn;   /* identity for spread counts */
    uint64_t fn_hash; /* pw_hash_str(name), for local snapshots */
    uint32_t memory_mb, vcpus;
    uint32_t fn_total; /* the function's VMs now (for shares) */
    const struct pw_placement_spec *spec; /* NULL: no constraints */
};

struct pw_place_result {
    struct pw_phost *host;
    size_t node; /* index into the host's nodes */
    double score;
};

/* pw_placer_place picks a host and node for one VM (it does not record it: the caller then
 * calls pw_placer_node_use and pw_placer_fn_count). Returns 1 and fills out, or 0 when no
 * node passes the filter. */
int pw_placer_place(struct pw_placer *p, const struct pw_place_req *r, struct pw_place_result *out);
/* pw_placer_place_scan: the same decision by scoring every node of every host. */
int pw_placer_place_scan(struct pw_placer *p, const struct pw_place_req *r, struct pw_place_result *out);
/* pw_placer_score scores node `node` of h for r; returns a negative number when it fails the
 * filter. */
double pw_placer_score(const struct pw_placer *p, const struct pw_phost *h, size_t node, const struct pw_place_req *r);

/* pw_placer_reap_score ranks an existing VM of fn on h for removal: higher goes first. Terms:
 * cost, load and spread (the function's share on the host and in its zone) with the placement
 * weights; a host or zone that would break spec's limits once the pool is one smaller ranks
 * above those (spec may be NULL); an ineligible (draining) host ranks above everything. */
double pw_placer_reap_score(const struct pw_placer *p, const struct pw_phost *h, const void *fn, uint32_t fn_total,
                            const struct pw_placement_spec *spec);

/* pw_placer_check verifies the index against the hosts (for tests; O(everything)). Returns
 * PW_OK or PW_ERR_INTERNAL with the first violation in errbuf. */
int pw_placer_check(const struct pw_placer *p, char *errbuf, size_t errlen);

struct pw_placer_stats {
    uint64_t decisions, classes_visited, nodes_scanned, nodes_scored, fallbacks;
};
void pw_placer_stats(const struct pw_placer *p, struct pw_placer_stats *out);

/* pw_placer_generation changes whenever the placer's state changes in a way that can make a
 * placement succeed where it failed: a host added, removed, relabelled, given a new topology or
 * made eligible or ineligible (zone counts follow eligibility), a VM's resources given back, a
 * function's count lowered. Adding VMs, loads and snapshots only make placement harder or
 * change scores, so they leave it alone. A caller may remember that a request found no room at
 * generation g and, while the generation is still g, answer an equal or harder request (same
 * shape and constraints, no more VMs of the function) with "no room" without asking. */
uint64_t pw_placer_generation(const struct pw_placer *p);
/* pw_placer_touch bumps the generation: the owner's host_ok may now accept a host it refused. */
void pw_placer_touch(struct pw_placer *p);

#endif
