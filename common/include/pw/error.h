/* error.h — the one error enum of Prewarm and its strings.
 *
 * Every function that can fail returns an enum pw_err; PW_OK is zero. Foreign errors (errno,
 * NNG, libpq, XGBoost) are translated where they enter, and their detail is logged there. */
#ifndef PW_ERROR_H
#define PW_ERROR_H

/* X(name, http status, string) — one table so names, statuses and strings cannot drift. */
#define PW_ERR_MAP(X)                                                        \
    X(OK, 200, "ok")                                                         \
    X(NOMEM, 500, "out of memory")                                           \
    X(INVAL, 400, "invalid argument")                                        \
    X(PARSE, 400, "malformed input")                                         \
    X(TOOBIG, 413, "too large")                                              \
    X(NOTFOUND, 404, "not found")                                            \
    X(EXISTS, 409, "already exists")                                         \
    X(CONFLICT, 409, "conflict")                                             \
    X(LIMIT, 429, "limit reached")                                           \
    X(NOCAP, 503, "no capacity")                                             \
    X(TIMEOUT, 503, "timed out")                                             \
    X(UNAVAIL, 503, "unavailable")                                           \
    X(IO, 500, "i/o error")                                                  \
    X(STORE, 503, "store error")                                             \
    X(PROTO, 400, "protocol error")                                          \
    X(STATE, 409, "wrong state")                                             \
    X(STALE, 409, "stale epoch")                                             \
    X(INTERNAL, 500, "internal error")

enum pw_err {
#define PW_ERR_ENUM(name, status, str) PW_ERR_##name,
    PW_ERR_MAP(PW_ERR_ENUM)
#undef PW_ERR_ENUM
    PW_ERR__COUNT
};
#define PW_OK PW_ERR_OK

/* pw_strerror returns a static string for err; never NULL. Any thread. */
const char *pw_strerror(enum pw_err err);
/* pw_err_name returns the static lower-case code of err ("not_found"); never NULL. Any thread. */
const char *pw_err_name(enum pw_err err);
/* pw_err_http_status returns the HTTP status an API error of this kind answers with. */
int pw_err_http_status(enum pw_err err);

#endif
