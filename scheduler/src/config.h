/* config.h — prewarmd's configuration: defaults < JSON file < environment < flags. */
#ifndef PW_SCHED_CONFIG_H
#define PW_SCHED_CONFIG_H

#include "auth.h"
#include "pw/placer.h"
#include "pw/util.h"

#include <stddef.h>
#include <stdint.h>

struct pw_sched_config {
    char http_host[64];
    int http_port;
    char agents_url[256];
    char pg_conninfo[1024];
    int64_t heartbeat_ms;
    int64_t lease_ttl_ms;
    int64_t adopt_grace_ms;       /* -1 = 3 heartbeats */
    int64_t acquire_timeout_ms;   /* default deadline of an acquire */
    int64_t acquire_timeout_max_ms;
    uint32_t max_waiters_per_fn;
    size_t max_functions;         /* functions registered at once */
    int64_t cordon_ms;            /* self-healing: first cordon of an anomalous host; 0 off */
    size_t max_body_bytes;
    size_t max_connections;
    size_t max_agents;            /* held long polls and agent sessions */
    size_t telemetry_max_rows;
    int log_level;
    char model_path[512];         /* predictor model ("" = the recent-rate heuristic) */
    int64_t restore_ms;           /* expected restore time, for sizing predictive pools */
    int64_t retrain_every_ms;     /* background retraining period; 0: never */
    size_t retrain_minutes;       /* minutes of history kept per function for retraining */
    char model_dir[512];          /* trained models are kept here as VERSION.json */
    size_t model_keep;            /* model files kept in model_dir besides the active one; 0: all */
    struct pw_placer_config placement; /* score weights and search bounds, validated */
    char tokens_file[512];        /* API tokens ("ROLE TOKEN [NAME]" lines); "" none */
    char replica_name[128];       /* this replica in pw_leader and logs (default: host name) */
    int64_t leader_renew_ms, leader_lease_ms, leader_takeover_ms; /* leader.h */
    char https[80];               /* optional TLS API listener IPV4:PORT ("" none; tlsfront.h) */
    char https_cert[512];         /* its certificate and key, one PEM file */
    char agents_tls_cert[512];    /* tls+tcp:// agent link: our certificate and key (PEM) */
    char agents_tls_ca[512];      /* ... and the CA of agents' certificates */
    struct pw_auth auth;          /* from tokens_file and PREWARM_TOKENS; n == 0: no auth */
};

/* pw_sched_config_default fills the defaults. */
void pw_sched_config_default(struct pw_sched_config *c);

/* pw_sched_config_load builds the configuration from argv (flags), the environment
 * (PREWARM_*) and a JSON file given with --config or PREWARM_CONFIG. Returns PW_OK; PW_ERR_INVAL
 * with a one-line reason in errbuf for bad input (exit 2); or -1 when --help/--version printed
 * something and the program should exit 0. Not thread-safe (getopt).
 *
 * Placement: --placement-weights / PREWARM_PLACEMENT_WEIGHTS take "cost=4,fit=1,spread=1,
 * snapshot=0.5,load=0.5" (any subset; the others keep their value from the level below);
 * --placement-candidates and --placement-scan-budget are integers. The file takes them nested,
 * {"placement": {"weights": {"cost": 4, ...}, "candidates": 8, "scan_budget": 64}}, or flat
 * with underscores like every other key. The result passes pw_placer_config_validate.
 *
 * API tokens (auth.h): --tokens-file / PREWARM_TOKENS_FILE / "tokens_file" names a file, and
 * PREWARM_TOKENS (environment only, so tokens never show in a process list) adds entries; both
 * are parsed into c->auth. */
int pw_sched_config_load(struct pw_sched_config *c, int argc, char **argv, char *errbuf, size_t errlen);

#endif
