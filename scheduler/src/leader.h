/* leader.h — leader election between prewarmd replicas sharing one PostgreSQL.
 *
 * A thread with its own connection tries pg_try_advisory_lock(PW_LEADER_LOCK). The replica
 * that holds it draws a new epoch from pw_epoch_seq, records it in pw_leader (migration 0005)
 * and renews pw_leader.renewed_at every renew_ms. A follower that finds renewed_at older than
 * takeover_ms (a leader stopped or hung with its session, and so the lock, still open) ends
 * that session with pg_terminate_backend and takes the lock on its next try.
 *
 * The leader may act (answer acquires, command agents, write) only while pw_leader_may_act
 * holds: its last renewal is younger than lease_ms — or PostgreSQL itself is unreachable and
 * the election thread is alive and says so (nobody can take over without PostgreSQL, and
 * acquires must go on during an outage). A leader stopped (SIGSTOP) and resumed finds both
 * stale and does nothing until its thread has spoken to PostgreSQL again; there it finds its
 * session ended and its epoch superseded, and reports the loss. Agents and the store refuse
 * older epochs besides (fencing), so even an action that slipped through changes nothing.
 *
 * Threads: pw_leader_new/close and the callback on the loop thread; pw_leader_may_act and
 * pw_leader_epoch from any thread. */
#ifndef PW_LEADER_H
#define PW_LEADER_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#define PW_LEADER_LOCK 7306355 /* the advisory lock key ("pre" in ASCII) */

struct pw_leader;

struct pw_leader_options {
    const char *conninfo; /* copied */
    const char *holder;   /* this replica's name, for pw_leader and logs (copied) */
    int64_t renew_ms;     /* renewal and retry period (default 500) */
    int64_t lease_ms;     /* a leader acts at most this long after its last renewal (2000) */
    int64_t takeover_ms;  /* a follower ends a leader silent this long (4000; > lease_ms) */
    int64_t connect_timeout_ms;
};
void pw_leader_options_default(struct pw_leader_options *o);

enum pw_leader_event { PW_LEADER_ELECTED, PW_LEADER_LOST };
/* Called on the loop thread: ELECTED once, with the new epoch; LOST once, after which this
 * replica must stop acting (prewarmd exits so that its supervisor restarts it as a follower). */
typedef void (*pw_leader_cb)(void *arg, enum pw_leader_event ev, uint64_t epoch);

/* pw_leader_new starts the election thread. On PW_OK *out is the caller's (pw_leader_close). */
int pw_leader_new(uv_loop_t *loop, const struct pw_leader_options *o, pw_leader_cb cb, void *arg,
                  struct pw_leader **out, char *errbuf, size_t errlen);
/* pw_leader_close stops the thread (releasing the lock with the connection) and frees l once
 * its handle is closed. */
void pw_leader_close(struct pw_leader *l);

/* pw_leader_may_act says whether this replica is the leader and may act now. */
bool pw_leader_may_act(const struct pw_leader *l);
/* pw_leader_epoch returns the epoch this replica leads with (0 while a follower). */
uint64_t pw_leader_epoch(const struct pw_leader *l);

/* What /readyz and /metrics show. */
struct pw_leader_status {
    bool leader, may_act, pg_up;
    uint64_t epoch;
    char current_holder[128]; /* the leader as last read from pw_leader ("" unknown) */
    uint64_t current_epoch;
    int64_t renewed_ago_ms;   /* of the current leader, as last read; -1 unknown */
    uint64_t takeovers;       /* sessions of silent leaders this replica ended */
};
void pw_leader_status(struct pw_leader *l, struct pw_leader_status *out);

#endif
