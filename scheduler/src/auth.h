/* auth.h — bearer tokens with roles for prewarmd's HTTP API.
 *
 * Tokens come from a file (--tokens-file) and/or PREWARM_TOKENS, in one format: entries
 * "ROLE TOKEN [NAME]", one per line in the file, separated by newlines or ';' in the
 * environment; blank lines and lines starting with '#' are skipped. ROLE is viewer, gateway or
 * operator; TOKEN is 16-256 characters of [A-Za-z0-9._~+/=-] (RFC 6750's b64token); NAME (a
 * valid name, default ROLE-N) is what audit rows record as the actor. Only each token's SHA-256
 * is kept; a presented token is hashed and compared with every entry in constant time, so
 * neither timing nor memory gives tokens away, and they are never logged.
 *
 * Roles are ordered: viewer (GET) < gateway (+ acquire and release) < operator (everything).
 *
 * Threads: parse/load before the loop runs; pw_auth_check from any thread (read-only). */
#ifndef PW_AUTH_H
#define PW_AUTH_H

#include "pw/util.h"

#include <stddef.h>

#define PW_AUTH_MAX_TOKENS 64
#define PW_AUTH_TOKEN_MIN 16
#define PW_AUTH_TOKEN_MAX 256

enum pw_role { PW_ROLE_NONE, PW_ROLE_VIEWER, PW_ROLE_GATEWAY, PW_ROLE_OPERATOR };
const char *pw_role_str(enum pw_role r);

struct pw_auth_token {
    enum pw_role role;
    char name[PW_NAME_MAX];
    unsigned char digest[32]; /* SHA-256 of the token */
};

struct pw_auth {
    struct pw_auth_token t[PW_AUTH_MAX_TOKENS];
    size_t n; /* 0: authentication is off */
};

/* pw_auth_parse adds the entries of text (from names the source in errors: "file X",
 * "PREWARM_TOKENS"). On error a is unchanged and errbuf says which entry is wrong (by number,
 * never quoting a token). Returns PW_OK or PW_ERR_INVAL. */
int pw_auth_parse(struct pw_auth *a, const char *text, const char *from, char *errbuf, size_t errlen);
/* pw_auth_load_file reads path (at most 64 KiB) and parses it. PW_ERR_IO if it cannot be read. */
int pw_auth_load_file(struct pw_auth *a, const char *path, char *errbuf, size_t errlen);

enum pw_auth_result { PW_AUTH_OK, PW_AUTH_MISSING, PW_AUTH_INVALID };
/* Why a request was refused, for the metric prewarm_http_auth_failures_total{reason}. */
enum pw_auth_fail { PW_AUTH_FAIL_MISSING, PW_AUTH_FAIL_INVALID, PW_AUTH_FAIL_FORBIDDEN, PW_AUTH_FAIL__COUNT };
/* pw_auth_check looks at an Authorization header value (NULL: none). On PW_AUTH_OK *who is the
 * matching entry (owned by a). */
enum pw_auth_result pw_auth_check(const struct pw_auth *a, const char *authorization,
                                  const struct pw_auth_token **who);

#endif
