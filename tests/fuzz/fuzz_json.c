/* fuzz_json.c — libFuzzer target for the flat JSON reader of acquire and release bodies
 * (common/src/json.c), checked against cJSON, which the API falls back to.
 *
 * Whatever pw_json_flat_parse accepts, cJSON must accept too, as an object with the same
 * members in the same order, each string byte for byte and each integer equal to cJSON's
 * number; pw_json_flat_get must find what cJSON_GetObjectItemCaseSensitive finds. */
#include "pw/json.h"
#include "pw/util.h"

#include <cjson/cJSON.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_json: %s\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct pw_json_flat f;
    if (!pw_json_flat_parse((const char *)data, size, &f))
        return 0;
    check(f.n <= PW_JSON_FLAT_MAX, "more members than the cap");
    cJSON *j = size == 0 ? cJSON_CreateObject() : cJSON_ParseWithLength((const char *)data, size);
    check(j != NULL && cJSON_IsObject(j), "accepted what cJSON refuses");
    const cJSON *it = j->child;
    for (size_t i = 0; i < f.n; i++, it = it->next) {
        const struct pw_json_member *m = &f.m[i];
        check(it != NULL, "more members than cJSON sees");
        check(strlen(it->string) == m->klen && memcmp(it->string, m->key, m->klen) == 0, "a key differs");
        if (m->is_str) {
            check(cJSON_IsString(it) && strlen(it->valuestring) == m->slen &&
                      memcmp(it->valuestring, m->str, m->slen) == 0,
                  "a string differs");
        } else {
            check(cJSON_IsNumber(it) && it->valuedouble == (double)m->num, "a number differs");
        }
        char key[256];
        if (m->klen < sizeof(key)) {
            memcpy(key, m->key, m->klen);
            key[m->klen] = '\0';
            const struct pw_json_member *g = pw_json_flat_get(&f, key);
            const cJSON *cg = cJSON_GetObjectItemCaseSensitive(j, key);
            check(g != NULL && cg != NULL, "a member is not found by name");
            check(g->is_str == cJSON_IsString(cg), "lookup by name finds another member than cJSON");
        }
    }
    check(it == NULL, "fewer members than cJSON sees");
    cJSON_Delete(j);
    return 0;
}
