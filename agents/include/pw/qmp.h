/* qmp.h — a blocking client for QMP, QEMU's JSON control protocol, over a unix socket.
 *
 * QMP is newline-delimited JSON: QEMU greets, the client negotiates capabilities, then sends
 * one command at a time and reads lines until the reply (`return` or `error`), skipping the
 * asynchronous `event` lines in between. Every call here takes an absolute deadline on the
 * pw_now_mono_ms() clock and waits with poll(2), so nothing blocks past it. Lines are bounded
 * (PW_QMP_MAX_LINE); a longer one is refused and leaves the connection unusable.
 *
 * Thread rules: a struct pw_qmp belongs to one thread at a time (the agent's worker thread that
 * drives one VM); calls on it are not synchronised. Different connections are independent.
 * The parser, pw_qmp_parse_line, is pure and may run on any thread. */
#ifndef PW_QMP_H
#define PW_QMP_H

#include <cjson/cJSON.h>

#include <stddef.h>
#include <stdint.h>

/* The longest line accepted from QEMU, without its newline. QEMU's replies to the commands the
 * agent sends are a few hundred bytes; query-qmp-schema, the largest, is about 200 KiB. */
#define PW_QMP_MAX_LINE (1024 * 1024)

/* ---- parsing one line ---- */

/* X(name, string) — what a line from QEMU is. */
#define PW_QMP_KIND_MAP(X) \
    X(GREETING, "greeting") \
    X(RETURN, "return")     \
    X(ERROR, "error")       \
    X(EVENT, "event")

enum pw_qmp_kind {
#define PW_QMP_KIND_ENUM(name, str) PW_QMP_##name,
    PW_QMP_KIND_MAP(PW_QMP_KIND_ENUM)
#undef PW_QMP_KIND_ENUM
};

/* One parsed line. root owns the whole JSON tree; every other pointer borrows from it and is
 * valid until pw_qmp_msg_fini. */
struct pw_qmp_msg {
    enum pw_qmp_kind kind;
    cJSON *root;             /* the line's JSON object */
    const cJSON *value;      /* GREETING: the "QMP" object; RETURN: the "return" value (any
                              * JSON type); ERROR: the "error" object; EVENT: "data" or NULL */
    const char *err_class;   /* ERROR: "GenericError", "CommandNotFound", ...; else NULL */
    const char *err_desc;    /* ERROR: QEMU's human-readable description; else NULL */
    const char *event;       /* EVENT: its name ("STOP", "MIGRATION", ...); else NULL */
    const cJSON *id;         /* RETURN/ERROR: the "id" echoed from the command, or NULL */
};

/* pw_qmp_kind_name returns the static name of kind ("return"); never NULL. */
const char *pw_qmp_kind_name(enum pw_qmp_kind kind);

/* pw_qmp_parse_line parses one line from QEMU: len bytes at line, without the newline (a
 * trailing "\r" is allowed). The line must be exactly one JSON object, optionally surrounded
 * by whitespace, with exactly one of the members "QMP" (an object), "return" (any value),
 * "error" (an object with string members "class" and "desc") or "event" (a string, with an
 * optional object "data"). Returns PW_OK with *out filled (release it with pw_qmp_msg_fini);
 * PW_ERR_TOOBIG for a line longer than PW_QMP_MAX_LINE; PW_ERR_PARSE for anything else, with a
 * one-line reason in errbuf. On failure *out is zeroed and owns nothing. Pure; any thread. */
int pw_qmp_parse_line(const char *line, size_t len, struct pw_qmp_msg *out, char *errbuf,
                      size_t errlen);

/* pw_qmp_msg_fini frees m's tree and zeroes it. Safe on a zeroed message. */
void pw_qmp_msg_fini(struct pw_qmp_msg *m);

/* ---- the client ---- */

struct pw_qmp;

/* pw_qmp_event_cb is called for each event line read while the client waits for something
 * else, on the calling thread, before the call that read it returns. name and data (NULL
 * without "data") are borrowed for the call. It must not call back into the same client. */
typedef void (*pw_qmp_event_cb)(const char *name, const cJSON *data, void *arg);

/* pw_qmp_connect connects to the QMP server listening on the unix socket path, retrying while
 * the socket does not exist yet or refuses (ENOENT, ECONNREFUSED: QEMU creates it a few ms
 * after it starts), then reads the greeting and negotiates capabilities, all before
 * deadline_ms. Returns PW_OK with a new client in *out (the caller frees it with
 * pw_qmp_close); PW_ERR_TIMEOUT when the deadline passed; PW_ERR_INVAL for a path that does
 * not fit a socket address; PW_ERR_IO for another socket error or EOF; PW_ERR_PROTO /
 * PW_ERR_PARSE / PW_ERR_TOOBIG when QEMU's lines are not what QMP promises. On failure *out is
 * NULL and nothing is left open. errbuf gets a one-line reason. */
int pw_qmp_connect(struct pw_qmp **out, const char *path, int64_t deadline_ms, char *errbuf,
                   size_t errlen);

/* pw_qmp_open_fd is pw_qmp_connect on an already connected stream socket fd (any blocking
 * mode; it is made non-blocking and close-on-exec). It takes fd over in every case: on
 * failure fd is closed. */
int pw_qmp_open_fd(struct pw_qmp **out, int fd, int64_t deadline_ms, char *errbuf,
                   size_t errlen);

/* pw_qmp_set_event_cb records events through cb (NULL: skip them silently, the default). */
void pw_qmp_set_event_cb(struct pw_qmp *q, pw_qmp_event_cb cb, void *arg);

/* pw_qmp_execute sends {"execute":cmd,"arguments":...,"id":N} and waits until deadline_ms for
 * its reply, skipping events and replies to earlier commands that timed out (matched by id).
 * args_json is a JSON object as text, or NULL for none; it is parsed and re-serialised, so
 * malformed text never reaches QEMU (PW_ERR_INVAL). On PW_OK *reply, when reply is not NULL,
 * is a detached copy of the "return" value that the caller frees with cJSON_Delete.
 * Otherwise *reply is NULL and:
 *  - PW_ERR_INVAL: QEMU answered with an error; errbuf holds "<cmd>: <class>: <desc>" and
 *    pw_qmp_error_class(q) the class. The connection stays usable.
 *  - PW_ERR_TIMEOUT: no reply by the deadline. The connection stays usable: a late reply is
 *    recognised by its id and dropped.
 *  - PW_ERR_IO (socket error, EOF), PW_ERR_TOOBIG (a line over PW_QMP_MAX_LINE),
 *    PW_ERR_PROTO / PW_ERR_PARSE (a line that is not QMP): the connection is unusable; every
 *    later call returns PW_ERR_STATE. */
int pw_qmp_execute(struct pw_qmp *q, const char *cmd, const char *args_json, cJSON **reply,
                   int64_t deadline_ms, char *errbuf, size_t errlen);

/* pw_qmp_execute_fd is pw_qmp_execute with fd passed to QEMU as SCM_RIGHTS ancillary data on
 * the same sendmsg(2) as the command, as getfd and add-fd expect. fd stays the caller's. */
int pw_qmp_execute_fd(struct pw_qmp *q, const char *cmd, const char *args_json, int fd,
                      cJSON **reply, int64_t deadline_ms, char *errbuf, size_t errlen);

/* pw_qmp_quit sends "quit". QEMU may close the socket before or just after its reply, so EOF
 * or a reset after the command went out counts as success. Returns PW_OK or an error as
 * pw_qmp_execute. The connection is unusable afterwards either way. */
int pw_qmp_quit(struct pw_qmp *q, int64_t deadline_ms, char *errbuf, size_t errlen);

/* pw_qmp_error_class returns the class of the last QMP error reply ("" if none); valid until
 * the next call on q. */
const char *pw_qmp_error_class(const struct pw_qmp *q);

/* pw_qmp_events returns how many event lines the client has read so far. */
uint64_t pw_qmp_events(const struct pw_qmp *q);

/* pw_qmp_fd returns the socket (still owned by q), for a caller that wants to poll it. */
int pw_qmp_fd(const struct pw_qmp *q);

/* pw_qmp_close closes the socket and frees q. NULL is a no-op. */
void pw_qmp_close(struct pw_qmp *q);

#endif
