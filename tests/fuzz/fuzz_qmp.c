/* fuzz_qmp.c — libFuzzer target for the QMP line parser (agents/src/qmp.c).
 *
 * The input is cut at each newline, the way the client cuts what QEMU sends, and every piece
 * is parsed. A failure must leave the message zeroed with a one-line reason; a success must
 * fill exactly the fields its kind promises, and the parsed tree must print and parse again to
 * the same kind. */
#include "pw/error.h"
#include "pw/qmp.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok, const char *what, const char *detail)
{
    if (!ok) {
        fprintf(stderr, "fuzz_qmp: %s: %s\n", what, detail);
        abort();
    }
}

static int all_zero(const void *p, size_t n)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        if (c[i] != 0)
            return 0;
    return 1;
}

static void one_line(const char *line, size_t len)
{
    struct pw_qmp_msg m;
    char err[256];
    err[0] = '\0';
    int rv = pw_qmp_parse_line(line, len, &m, err, sizeof(err));
    if (rv != PW_OK) {
        check(rv == PW_ERR_PARSE || rv == PW_ERR_TOOBIG, "unexpected error code", err);
        check(all_zero(&m, sizeof(m)), "failed parse left data behind", err);
        check(err[0] != '\0' && strchr(err, '\n') == NULL, "bad error reason", err);
        return;
    }
    check(m.root != NULL, "no tree", "");
    switch (m.kind) {
    case PW_QMP_GREETING:
        check(cJSON_IsObject(m.value) && m.id == NULL && m.event == NULL, "greeting fields", "");
        break;
    case PW_QMP_RETURN:
        check(m.value != NULL && m.err_class == NULL && m.event == NULL, "return fields", "");
        break;
    case PW_QMP_ERROR:
        check(m.err_class != NULL && m.err_desc != NULL && cJSON_IsObject(m.value),
              "error fields", "");
        break;
    case PW_QMP_EVENT:
        check(m.event != NULL && m.id == NULL && (m.value == NULL || cJSON_IsObject(m.value)),
              "event fields", "");
        break;
    default:
        check(0, "unknown kind", "");
    }

    /* cJSON prints what it parsed; text with embedded NULs in strings may print shorter, so
     * only the kind is compared. */
    char *text = cJSON_PrintUnformatted(m.root);
    check(text != NULL, "print failed", "");
    struct pw_qmp_msg again;
    rv = pw_qmp_parse_line(text, strlen(text), &again, err, sizeof(err));
    if (rv == PW_OK) {
        check(again.kind == m.kind, "kind changed after a round trip", text);
        pw_qmp_msg_fini(&again);
    } else {
        /* Only a string member holding "\u0000" can change shape when printed back. */
        check(rv == PW_ERR_PARSE || rv == PW_ERR_TOOBIG, "round trip error code", err);
    }
    free(text);
    pw_qmp_msg_fini(&m);
    check(all_zero(&m, sizeof(m)), "fini left data behind", "");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data;
    const char *end = p + size;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl != NULL ? (size_t)(nl - p) : (size_t)(end - p);
        one_line(p, len);
        p += len + (nl != NULL);
    }
    if (size == 0)
        one_line(NULL, 0);
    return 0;
}
