/* sha256.h — SHA-256 (FIPS 180-4), for model file checksums.
 *
 * Threads: any; a context belongs to one thread at a time. */
#ifndef PW_SHA256_H
#define PW_SHA256_H

#include <stddef.h>
#include <stdint.h>

struct pw_sha256 {
    uint32_t h[8];
    uint64_t bytes;
    unsigned char block[64];
    size_t fill;
};

void pw_sha256_init(struct pw_sha256 *s);
void pw_sha256_update(struct pw_sha256 *s, const void *data, size_t len);
/* pw_sha256_final writes the digest as 64 lowercase hex digits and a NUL into hex. */
void pw_sha256_final(struct pw_sha256 *s, char hex[65]);

/* pw_sha256_file hashes the file at path into hex. Returns PW_OK or PW_ERR_IO (errno kept). */
int pw_sha256_file(const char *path, char hex[65]);

#endif
