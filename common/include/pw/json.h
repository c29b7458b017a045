/* json.h — a reader for the small flat JSON objects of hot request bodies ({"timeout_ms":5000},
 * {"duration_ms":12,"outcome":"ok"}), without building a cJSON tree.
 *
 * It accepts only the easy subset: one object whose members are plain strings (printable
 * ASCII, no escapes) or plain integers (at most 15 digits, no fraction or exponent), separated
 * by JSON whitespace. Anything else — nesting, escapes, other types, trailing bytes, more than
 * PW_JSON_FLAT_MAX members — is refused, and the caller parses the body with cJSON as before,
 * so what is accepted and what is refused, and every error message, stay cJSON's. Within the
 * subset the values equal cJSON's: integers of up to 15 digits are exact as doubles. */
#ifndef PW_JSON_H
#define PW_JSON_H

#include <stddef.h>
#include <stdint.h>

#define PW_JSON_FLAT_MAX 8

struct pw_json_member {
    const char *key; /* into the body; not NUL-terminated */
    size_t klen;
    int is_str;      /* 1: str/slen; 0: num */
    const char *str; /* into the body; not NUL-terminated */
    size_t slen;
    int64_t num;
};

struct pw_json_flat {
    struct pw_json_member m[PW_JSON_FLAT_MAX];
    size_t n;
};

/* pw_json_flat_parse reads body (len bytes; an empty body is {}) into out, which points into
 * body. Returns 1, or 0 when the body is outside the subset (out is then undefined). */
int pw_json_flat_parse(const char *body, size_t len, struct pw_json_flat *out);

/* pw_json_flat_get returns the first member named key (as cJSON_GetObjectItemCaseSensitive
 * does), or NULL. */
const struct pw_json_member *pw_json_flat_get(const struct pw_json_flat *f, const char *key);

#endif
