/* test_sha256.c — SHA-256 against the FIPS 180-4 examples, across block boundaries and split
 * updates, and over a file compared with sha256sum. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pw/error.h"
#include "pw/sha256.h"

static void hash(const char *s, size_t len, char hex[65])
{
    struct pw_sha256 c;
    pw_sha256_init(&c);
    pw_sha256_update(&c, s, len);
    pw_sha256_final(&c, hex);
}

static void test_vectors(void **state)
{
    (void)state;
    char hex[65];
    hash("", 0, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    hash("abc", 3, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"; /* 56 bytes: padding spills */
    hash(two, strlen(two), hex);
    assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    /* One million 'a', fed in uneven pieces so every partial-block path runs. */
    char *a = malloc(1000000);
    memset(a, 'a', 1000000);
    struct pw_sha256 c;
    pw_sha256_init(&c);
    size_t off = 0, step = 1;
    while (off < 1000000) {
        size_t n = step < 1000000 - off ? step : 1000000 - off;
        pw_sha256_update(&c, a + off, n);
        off += n;
        step = step * 3 % 257 + 1;
    }
    pw_sha256_final(&c, hex);
    assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    free(a);
}

static void test_file(void **state)
{
    (void)state;
    char path[] = "/tmp/pw-sha-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    char buf[70000];
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (char)(i * 7 + i / 300);
    assert_int_equal(write(fd, buf, sizeof(buf)), (ssize_t)sizeof(buf));
    close(fd);
    char hex[65], want[65];
    hash(buf, sizeof(buf), want);
    assert_int_equal(pw_sha256_file(path, hex), PW_OK);
    assert_string_equal(hex, want);
    /* The system's sha256sum, when there is one, agrees. */
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "sha256sum %s 2>/dev/null", path);
    FILE *p = popen(cmd, "r");
    char line[160] = "";
    if (p != NULL && fgets(line, sizeof(line), p) != NULL)
        assert_memory_equal(line, want, 64);
    if (p != NULL)
        pclose(p);
    unlink(path);
    assert_int_equal(pw_sha256_file(path, hex), PW_ERR_IO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_vectors), cmocka_unit_test(test_file)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
