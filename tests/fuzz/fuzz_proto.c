/* fuzz_proto.c — libFuzzer target for the agent wire protocol decoder.
 *
 * Decodes arbitrary bytes. A failure must leave the message zeroed; a success must re-encode,
 * and the re-encoded JSON must decode to a message that encodes to the same bytes (the codec
 * is a fixed point after one pass). */
#include "pw/error.h"
#include "pw/proto.h"
#include "pw/util.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok, const char *what, const char *detail)
{
    if (!ok) {
        fprintf(stderr, "fuzz_proto: %s: %s\n", what, detail);
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct pw_msg m1, m2;
    struct pw_buf b1, b2;
    char err[256];

    int rv = pw_proto_decode((const char *)data, size, &m1, err, sizeof(err));
    if (rv != PW_OK) {
        check(all_zero(&m1, sizeof(m1)), "failed decode left data behind", err);
        check(err[0] != '\0' && strchr(err, '\n') == NULL, "bad error reason", err);
        pw_msg_fini(&m1);
        return 0;
    }

    /* Re-encoding may grow the text (short hex ids become 16 digits), so allow more room. */
    pw_buf_init(&b1, 16 * PW_PROTO_MAX_MSG);
    pw_buf_init(&b2, 16 * PW_PROTO_MAX_MSG);
    rv = pw_proto_encode(&m1, &b1);
    check(rv == PW_OK, "decoded message does not encode", pw_strerror(rv));
    if (b1.len <= PW_PROTO_MAX_MSG) {
        rv = pw_proto_decode(b1.data, b1.len, &m2, err, sizeof(err));
        check(rv == PW_OK, "encoded message does not decode", err);
        check(m2.type == m1.type, "type changed", b1.data);
        rv = pw_proto_encode(&m2, &b2);
        check(rv == PW_OK, "second encode failed", pw_strerror(rv));
        check(b1.len == b2.len && memcmp(b1.data, b2.data, b1.len) == 0, "re-encoding differs",
              b1.data);
        pw_msg_fini(&m2);
    }
    pw_buf_fini(&b1);
    pw_buf_fini(&b2);
    pw_msg_fini(&m1);
    return 0;
}
