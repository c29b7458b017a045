/* store.h — PostgreSQL behind a queue.
 *
 * One store thread owns the libpq connection; the loop thread submits jobs and gets their
 * results back on the loop (uv_async). Config writes (functions with their pools and placement,
 * host drains, each with its audit row) are submitted one by one and answered when committed.
 * Telemetry (invocation counts per function per minute, host rows) is buffered on the loop
 * thread within a bound and flushed in batches by the store thread with multi-row upserts at
 * synchronous_commit=off; it never blocks the acquire path.
 * If PostgreSQL is down, jobs fail fast with PW_ERR_STORE, telemetry stays buffered (oldest
 * dropped and counted beyond the bound), and the thread reconnects with backoff.
 *
 * Migrations (migrations/NNNN_name.sql, embedded at build time) are applied by pw_store_open
 * under a session advisory lock, each in its own transaction, and recorded in
 * schema_migrations with an md5 checksum; a recorded migration whose checksum differs from the
 * embedded one stops the start with PW_ERR_STORE.
 *
 * Threads: every function here is called on the loop thread only, except where noted. */
#ifndef PW_STORE_H
#define PW_STORE_H

#include "pw/core.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct pw_migration {
    const char *name; /* "0001_init" */
    const char *sql;
};
extern const struct pw_migration pw_migrations[];
extern const size_t pw_migrations_count;

struct pw_store;

struct pw_store_options {
    const char *conninfo;         /* libpq connection string; "" = libpq defaults/env (copied) */
    size_t telemetry_max_rows;    /* bound on buffered telemetry rows (default 100000) */
    int64_t flush_interval_ms;    /* telemetry flush period (default 1000) */
    int64_t connect_timeout_ms;   /* per connection attempt (default 3000) */
};
void pw_store_options_default(struct pw_store_options *o);

/* pw_store_open connects and applies migrations, synchronously (call it before the loop runs),
 * then starts the store thread bound to loop. On PW_OK *out is owned by the caller
 * (pw_store_close). On error nothing is left running and errbuf says why. */
int pw_store_open(uv_loop_t *loop, const struct pw_store_options *opt, struct pw_store **out, char *errbuf,
                  size_t errlen);

/* pw_store_set_epoch fences every later write (config jobs, telemetry flushes) with the
 * leader epoch (leader.h): each runs in a transaction that first checks pw_leader still
 * carries it, and fails with PW_ERR_STALE otherwise. Any thread. */
void pw_store_set_epoch(struct pw_store *s, uint64_t epoch);

/* pw_store_close flushes buffered telemetry (bounded wait), stops the thread, closes the
 * connection and the uv handles, and frees s once they are closed (after the loop runs). */
void pw_store_close(struct pw_store *s);

/* pw_store_load_functions calls cb for every persisted function, synchronously, before the
 * loop runs (right after pw_store_open). Returns PW_OK or PW_ERR_STORE. */
typedef void (*pw_store_function_cb)(void *arg, const struct pw_function_spec *spec);
int pw_store_load_functions(struct pw_store *s, pw_store_function_cb cb, void *arg);

/* pw_store_load_hosts calls cb with the id of every host last known alive, synchronously. */
typedef void (*pw_store_host_cb)(void *arg, const char *host_id);
int pw_store_load_hosts(struct pw_store *s, pw_store_host_cb cb, void *arg);

/* pw_store_load_drains calls cb for every host an operator left draining, ordered by id, with
 * whether the host was last known alive, synchronously (before the loop runs). host_id is owned
 * by the store and valid during the call. Returns PW_OK or PW_ERR_STORE (cb not called). */
typedef void (*pw_store_drain_cb)(void *arg, const char *host_id, int alive);
int pw_store_load_drains(struct pw_store *s, pw_store_drain_cb cb, void *arg);

/* pw_store_load_invocations calls cb for every stored (function, minute, count) with minute >=
 * since_minute, ordered by function then minute, synchronously (before the loop runs or while
 * nothing else waits on the store). Returns PW_OK or PW_ERR_STORE. */
typedef void (*pw_store_invocation_cb)(void *arg, const char *fn, int64_t minute, uint64_t count);
int pw_store_load_invocations(struct pw_store *s, int64_t since_minute, pw_store_invocation_cb cb, void *arg);

/* Completion of a config write, called on the loop thread: err is PW_OK (msg "") or
 * PW_ERR_STORE (a one-line reason in msg). msg is owned by the store, valid during the call.
 * Jobs still pending at pw_store_close complete (with PW_ERR_STORE) inside it; their callbacks
 * must not call the store again. */
typedef void (*pw_store_done_cb)(void *arg, int err, const char *msg);

/* pw_store_put_function upserts a function (with its placement constraints) and its pool
 * policy and appends an audit row (actor, action "function.put"), in one transaction. spec is
 * copied; a placement list longer than PW_PLACE_MAX_SEL fails the write. */
void pw_store_put_function(struct pw_store *s, const struct pw_function_spec *spec, const char *actor,
                           pw_store_done_cb cb, void *arg);
/* pw_store_delete_function deletes a function (and its policy) and appends an audit row. Missing
 * rows are not an error. */
void pw_store_delete_function(struct pw_store *s, const char *name, const char *actor,
                              pw_store_done_cb cb, void *arg);

/* pw_store_set_host_drain records an operator's drain (drain != 0) or undrain of host_id and
 * appends an audit row (actor, action "host.drain" or "host.undrain", detail {"draining",
 * "changed"}), in one transaction, answered through cb once committed. A drain creates the
 * host's row when it has none yet (alive false, never seen: its telemetry fills that in); an
 * undrain of a host without a row only writes the audit row. host_id and actor are copied; a
 * host_id that is not a valid name (pw_name_valid) fails the write. */
void pw_store_set_host_drain(struct pw_store *s, const char *host_id, int drain, const char *actor,
                             pw_store_done_cb cb, void *arg);

/* A row of the model registry (migration 0004). */
enum pw_model_source { PW_MODEL_FILE, PW_MODEL_TRAINED, PW_MODEL_RETRAINED };
const char *pw_model_source_str(enum pw_model_source s);

struct pw_model_row {
    char version[PW_NAME_MAX]; /* a valid name */
    char path[512];
    char sha256[65];
    enum pw_model_source source;
    int64_t created_ms;        /* wall clock; 0 if unknown */
    int64_t activated_ms;      /* last activation, 0 never */
    int64_t rows;              /* training rows; -1 unknown (a file) */
    int64_t functions, minutes;/* -1 unknown */
    int active;
};

/* pw_store_load_models calls cb for every registered model, oldest first, synchronously
 * (before the loop runs). Rows whose values do not fit are skipped with a warning. */
typedef void (*pw_store_model_cb)(void *arg, const struct pw_model_row *m);
int pw_store_load_models(struct pw_store *s, pw_store_model_cb cb, void *arg);

/* pw_store_put_model registers m (copied; m->active is ignored) with an audit row; with
 * activate != 0 it also becomes the one active model, in the same transaction. A version
 * already registered with the same sha256 is left as it is (and still activated if asked); with
 * another sha256 it fails. cb as for config writes. */
void pw_store_put_model(struct pw_store *s, const struct pw_model_row *m, int activate, const char *actor,
                        pw_store_done_cb cb, void *arg);
/* pw_store_activate_model makes version the one active model, with an audit row. An unknown
 * version fails with PW_ERR_NOTFOUND. */
void pw_store_activate_model(struct pw_store *s, const char *version, const char *actor, pw_store_done_cb cb,
                             void *arg);

/* Telemetry: buffered, never blocks. minute is wall-clock minutes since the Unix epoch.
 * pw_store_add_invocations adds count to (fn, minute); repeated calls for the same key merge. */
void pw_store_add_invocations(struct pw_store *s, const char *fn, int64_t minute, uint32_t count);
/* pw_store_put_host records a host as seen alive or dead at wall time at_ms. */
void pw_store_put_host(struct pw_store *s, const char *host_id, int alive, int64_t at_ms);

struct pw_store_stats {
    int connected;           /* last attempt succeeded */
    int migrations_ok;
    uint64_t queue_depth;    /* config jobs waiting */
    uint64_t buffered_rows;  /* telemetry rows waiting */
    uint64_t dropped_rows;   /* telemetry rows dropped at the bound */
    uint64_t errors;         /* failed statements */
    uint64_t flushed_rows;
    uint64_t fenced;         /* writes refused because another epoch leads */
};
void pw_store_stats(const struct pw_store *s, struct pw_store_stats *out);

#endif
