/* error.h — the one error enum of Prewarm and its strings.
 *
 * Every function that can fail returns an enum pw_err; PW_OK is zero. Foreign errors (errno,
 * NNG, libpq, XGBoost) are translated where they enter, and their detail is logged there. */
#ifndef PW_ERROR_H
#define PW_ERROR_H

/* X(name, http status, code for APIs, string) — one table so names, statuses and strings cannot drift. */
#define PW_ERR_MAP(X)                                                        \
    X(OK, 200, "ok", "ok")                                                         \
    X(NOMEM, 500, "out_of_memory", "out of memory")                                           \
    X(INVAL, 400, "invalid", "invalid argument")                                        \
    X(PARSE, 400, "malformed", "malformed input")                                         \
    X(TOOBIG, 413, "too_large", "too large")                                              \
    X(NOTFOUND, 404, "not_found", "not found")                                            \
    X(EXISTS, 409, "exists", "already exists")                                         \
    X(CONFLICT, 409, "conflict", "conflict")                                             \
    X(LIMIT, 429, "limit_reached", "limit reached")                                           \
    X(NOCAP, 503, "no_capacity", "no capacity")                                             \
    X(TIMEOUT, 503, "timed_out", "timed out")                                             \
    X(UNAVAIL, 503, "unavailable", "unavailable")                                           \
    X(IO, 500, "io_error", "i/o error")                                                  \
    X(STORE, 503, "store_unavailable", "store error")                                             \
    X(PROTO, 400, "protocol_error", "protocol error")                                          \
    X(STATE, 409, "wrong_state", "wrong state")                                             \
    X(STALE, 409, "stale_epoch", "stale epoch")                                             \
    X(INTERNAL, 500, "internal", "internal error")

enum pw_err {
#define PW_ERR_ENUM(name, status, code, str) PW_ERR_##name,
    PW_ERR_MAP(PW_ERR_ENUM)
#undef PW_ERR_ENUM
    PW_ERR__COUNT
};
#define PW_OK PW_ERR_OK

/* pw_strerror returns a static string for err; never NULL. Any thread. */
const char *pw_strerror(enum pw_err err);
/* pw_err_name returns the static API code of err ("not_found"); never NULL. Any thread. */
const char *pw_err_name(enum pw_err err);
/* pw_err_http_status returns the HTTP status an API error of this kind answers with. */
int pw_err_http_status(enum pw_err err);

#endif
