/* client.h — a small blocking HTTP/1.1 client for prewarmctl: one request per connection,
 * bounded in time (poll) and in response size. Not thread-safe across one pw_cli_resp. */
#ifndef PW_CLI_CLIENT_H
#define PW_CLI_CLIENT_H

#include "pw/util.h"

#include <stddef.h>

/* The largest response body accepted (a function list of thousands of entries fits). */
#define PW_CLI_RESP_MAX (64u << 20)

struct pw_cli_resp {
    int status;          /* HTTP status */
    struct pw_buf body;  /* the body, NUL-terminated; owned, pw_cli_resp_fini frees it */
};

/* pw_cli_http_do sends method path (with body, JSON, when non-NULL) to server, a URL
 * "http://host[:port][/prefix]", with "Authorization: Bearer token" when token is non-empty,
 * and reads the whole answer within timeout_ms. On PW_OK *resp holds the answer (any status)
 * and the caller must call pw_cli_resp_fini; on an error *resp is empty and err holds one line
 * ("cannot connect to ...: Connection refused"). */
int pw_cli_http_do(const char *server, const char *token, const char *method, const char *path, const char *body,
                   int timeout_ms, struct pw_cli_resp *resp, char *err, size_t errlen);

void pw_cli_resp_fini(struct pw_cli_resp *resp);

#endif
