/* test_qmp.c — the QMP line parser and the blocking client against a scripted fake QEMU.
 *
 * The fake runs on a thread at the other end of a socketpair (or a listening unix socket) and
 * plays a script: send bytes, expect a command (recording its id and any descriptor passed
 * with it), answer with the recorded id, pause, hang up. */
#include "pw/error.h"
#include "pw/qmp.h"
#include "pw/util.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define GREETING_LINE \
    "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}}, " \
    "\"capabilities\": [\"oob\"]}}"
#define GREETING GREETING_LINE "\n"

/* ---- the fake QEMU ---- */

enum step_op {
    SEND,   /* write text as is; "$ID" becomes the id of the last expected command, "$PREV"
             * the one before it */
    EXPECT, /* read one line; it must execute text */
    SLEEP,  /* pause ms */
    HANGUP, /* close the connection */
    END
};

struct step {
    enum step_op op;
    const char *text;
    int ms;
};

struct fake {
    int fd;
    const struct step *script;
    pthread_t thread;
    char inbuf[65536];
    size_t inlen;
    long ids[16];
    size_t nids;
    int passed_fd;        /* the last descriptor received with a command, or -1 */
    char failure[256];    /* what went wrong on the fake's side, "" if nothing */
    const char *big;      /* bytes for SEND of text "$BIG" */
    size_t biglen;
};

static void fake_fail(struct fake *f, const char *what)
{
    if (f->failure[0] == '\0')
        snprintf(f->failure, sizeof(f->failure), "%s", what);
}

static void fake_send(struct fake *f, const char *text)
{
    char out[4096];
    size_t n = 0;
    if (strcmp(text, "$BIG") == 0) {
        size_t off = 0;
        while (off < f->biglen) {
            ssize_t w = send(f->fd, f->big + off, f->biglen - off, MSG_NOSIGNAL);
            if (w <= 0)
                return; /* the client gave up reading, as it should */
            off += (size_t)w;
        }
        return;
    }
    for (const char *p = text; *p != '\0' && n < sizeof(out) - 32;) {
        if (strncmp(p, "$ID", 3) == 0 || strncmp(p, "$PREV", 5) == 0) {
            int prev = p[1] == 'P';
            size_t k = f->nids >= (size_t)(1 + prev) ? f->nids - 1 - (size_t)prev : 0;
            n += (size_t)snprintf(out + n, sizeof(out) - n, "%ld", f->nids ? f->ids[k] : -1L);
            p += prev ? 5 : 3;
        } else {
            out[n++] = *p++;
        }
    }
    if (send(f->fd, out, n, MSG_NOSIGNAL) != (ssize_t)n)
        fake_fail(f, "send failed");
}

/* fake_read_line reads one line with recvmsg, keeping any SCM_RIGHTS descriptor. */
static int fake_read_line(struct fake *f, char *line, size_t linelen)
{
    for (;;) {
        char *nl = memchr(f->inbuf, '\n', f->inlen);
        if (nl != NULL) {
            size_t n = (size_t)(nl - f->inbuf);
            if (n >= linelen)
                return -1;
            memcpy(line, f->inbuf, n);
            line[n] = '\0';
            memmove(f->inbuf, nl + 1, f->inlen - n - 1);
            f->inlen -= n + 1;
            return 0;
        }
        union {
            char buf[CMSG_SPACE(sizeof(int))];
            struct cmsghdr align;
        } cm;
        struct iovec iov = {.iov_base = f->inbuf + f->inlen,
                            .iov_len = sizeof(f->inbuf) - f->inlen};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.buf,
                            .msg_controllen = sizeof(cm.buf)};
        ssize_t r = recvmsg(f->fd, &mh, MSG_CMSG_CLOEXEC);
        if (r <= 0)
            return -1;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c != NULL; c = CMSG_NXTHDR(&mh, c)) {
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
                if (f->passed_fd >= 0)
                    close(f->passed_fd);
                memcpy(&f->passed_fd, CMSG_DATA(c), sizeof(int));
            }
        }
        f->inlen += (size_t)r;
    }
}

static void fake_expect(struct fake *f, const char *cmd)
{
    char line[4096];
    if (fake_read_line(f, line, sizeof(line)) != 0) {
        fake_fail(f, "expected a command, got EOF");
        return;
    }
    char want[128];
    snprintf(want, sizeof(want), "\"execute\":\"%s\"", cmd);
    if (strstr(line, want) == NULL) {
        char why[256];
        snprintf(why, sizeof(why), "expected %s, got %.180s", cmd, line);
        fake_fail(f, why);
        return;
    }
    const char *id = strstr(line, "\"id\":");
    if (id == NULL) {
        fake_fail(f, "command without id");
        return;
    }
    if (f->nids < PW_ARRAY_LEN(f->ids))
        f->ids[f->nids++] = strtol(id + 5, NULL, 10);
}

static void *fake_main(void *arg)
{
    struct fake *f = arg;
    for (const struct step *s = f->script; s->op != END; s++) {
        switch (s->op) {
        case SEND: fake_send(f, s->text); break;
        case EXPECT: fake_expect(f, s->text); break;
        case SLEEP: {
            struct timespec ts = {.tv_sec = s->ms / 1000, .tv_nsec = (s->ms % 1000) * 1000000L};
            nanosleep(&ts, NULL);
            break;
        }
        case HANGUP:
            close(f->fd);
            f->fd = -1;
            break;
        case END: break;
        }
    }
    return NULL;
}

/* fake_start runs script on a new thread and returns the client's end of the socketpair. */
static int fake_start(struct fake *f, const struct step *script)
{
    int sv[2];
    memset(f, 0, sizeof(*f));
    f->passed_fd = -1;
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    f->fd = sv[1];
    f->script = script;
    assert_int_equal(pthread_create(&f->thread, NULL, fake_main, f), 0);
    return sv[0];
}

static void fake_join(struct fake *f)
{
    assert_int_equal(pthread_join(f->thread, NULL), 0);
    if (f->fd >= 0)
        close(f->fd);
    if (f->passed_fd >= 0)
        close(f->passed_fd);
    if (f->failure[0] != '\0')
        fail_msg("fake QEMU: %s", f->failure);
}

static int64_t in_ms(int64_t ms) { return pw_now_mono_ms() + ms; }

/* open_script connects a client to a fake playing script; the handshake must succeed. */
static struct pw_qmp *open_script(struct fake *f, const struct step *script)
{
    struct pw_qmp *q = NULL;
    char err[256] = "";
    int fd = fake_start(f, script);
    int rv = pw_qmp_open_fd(&q, fd, in_ms(5000), err, sizeof(err));
    if (rv != PW_OK)
        fail_msg("open: %s: %s", pw_strerror(rv), err);
    return q;
}

#define HANDSHAKE                                                          \
    {SEND, GREETING, 0}, {EXPECT, "qmp_capabilities", 0},                   \
    {                                                                       \
        SEND, "{\"return\": {}, \"id\": $ID}\n", 0                          \
    }

/* ---- parser ---- */

static void parse_ok(const char *line, enum pw_qmp_kind kind, struct pw_qmp_msg *m)
{
    char err[256] = "";
    int rv = pw_qmp_parse_line(line, strlen(line), m, err, sizeof(err));
    if (rv != PW_OK)
        fail_msg("parse %s: %s", line, err);
    assert_int_equal(m->kind, kind);
    assert_non_null(m->root);
}

static void parse_bad(const char *line, size_t len, int want)
{
    struct pw_qmp_msg m;
    char err[256] = "";
    int rv = pw_qmp_parse_line(line, len, &m, err, sizeof(err));
    if (rv != want)
        fail_msg("parse %.60s: want %s, got %s (%s)", line, pw_strerror(want), pw_strerror(rv),
                 err);
    assert_null(m.root);
    assert_true(err[0] != '\0');
    assert_null(strchr(err, '\n'));
}

static void test_parse_kinds(void **state)
{
    (void)state;
    struct pw_qmp_msg m;

    parse_ok(GREETING_LINE, PW_QMP_GREETING, &m);
    assert_true(cJSON_IsObject(m.value));
    assert_null(m.id);
    pw_qmp_msg_fini(&m);

    parse_ok("{\"return\": {\"status\": \"running\"}, \"id\": 7}\r", PW_QMP_RETURN, &m);
    assert_string_equal(cJSON_GetObjectItem(m.value, "status")->valuestring, "running");
    assert_true(cJSON_IsNumber(m.id));
    assert_int_equal(m.id->valueint, 7);
    pw_qmp_msg_fini(&m);

    parse_ok("{\"return\": [1, 2]}", PW_QMP_RETURN, &m);
    assert_true(cJSON_IsArray(m.value));
    assert_null(m.id);
    pw_qmp_msg_fini(&m);

    parse_ok("  {\"error\": {\"class\": \"GenericError\", \"desc\": \"no\"}, \"id\": \"x\"}  ",
             PW_QMP_ERROR, &m);
    assert_string_equal(m.err_class, "GenericError");
    assert_string_equal(m.err_desc, "no");
    assert_true(cJSON_IsString(m.id));
    pw_qmp_msg_fini(&m);

    parse_ok("{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": \"STOP\"}",
             PW_QMP_EVENT, &m);
    assert_string_equal(m.event, "STOP");
    assert_null(m.value);
    pw_qmp_msg_fini(&m);

    parse_ok("{\"event\": \"MIGRATION\", \"data\": {\"status\": \"completed\"}}", PW_QMP_EVENT,
             &m);
    assert_string_equal(cJSON_GetObjectItem(m.value, "status")->valuestring, "completed");
    pw_qmp_msg_fini(&m);
    pw_qmp_msg_fini(&m); /* twice is harmless */

    assert_string_equal(pw_qmp_kind_name(PW_QMP_EVENT), "event");
}

static void test_parse_bad(void **state)
{
    (void)state;
    const char *bad[] = {
        "",
        "   ",
        "\r",
        "[]",
        "42",
        "\"return\"",
        "{",
        "{\"return\": {}",
        "{\"return\": {}} x",
        "{\"return\": {}}{}",
        "{}",
        "{\"id\": 1}",
        "{\"return\": {}, \"error\": {\"class\": \"a\", \"desc\": \"b\"}}",
        "{\"QMP\": {}, \"event\": \"X\"}",
        "{\"QMP\": 1}",
        "{\"error\": \"GenericError\"}",
        "{\"error\": {\"class\": \"GenericError\"}}",
        "{\"error\": {\"class\": 1, \"desc\": \"d\"}}",
        "{\"event\": 5}",
        "{\"event\": \"STOP\", \"data\": [1]}",
    };
    for (size_t i = 0; i < PW_ARRAY_LEN(bad); i++)
        parse_bad(bad[i], strlen(bad[i]), PW_ERR_PARSE);

    parse_bad("{\"return\": {}}\0", 15, PW_ERR_PARSE);
    parse_bad("{\"return\":\n{}}", 14, PW_ERR_PARSE);
    parse_bad(NULL, 0, PW_ERR_PARSE);

    size_t n = PW_QMP_MAX_LINE + 1;
    char *big = pw_xmalloc(n + 1);
    memset(big, ' ', n);
    memcpy(big, "{\"return\": {}}", 14);
    big[n] = '\0';
    parse_bad(big, n, PW_ERR_TOOBIG);
    /* Exactly at the limit, with a "\r" after it, is fine. */
    big[n - 1] = '\r';
    struct pw_qmp_msg m;
    char err[200];
    assert_int_equal(pw_qmp_parse_line(big, n, &m, err, sizeof(err)), PW_OK);
    pw_qmp_msg_fini(&m);
    free(big);
}

/* ---- client ---- */

struct events {
    int n;
    char names[8][32];
};

static void on_event(const char *name, const cJSON *data, void *arg)
{
    struct events *e = arg;
    (void)data;
    if (e->n < 8)
        snprintf(e->names[e->n], sizeof(e->names[0]), "%s", name);
    e->n++;
}

static void test_execute_with_events(void **state)
{
    (void)state;
    static const struct step script[] = {
        HANDSHAKE,
        {SEND, "{\"event\": \"RESUME\", \"timestamp\": {\"seconds\": 1, \"microseconds\": 0}}\n", 0},
        {EXPECT, "query-status", 0},
        {SEND, "{\"event\": \"STOP\"}\n{\"event\": \"MIGRATION\", \"data\": {\"status\": \"setup\"}}\n", 0},
        {SEND, "{\"return\": {\"status\": \"running\", \"running\": true}, \"id\": $ID}\n", 0},
        {END, NULL, 0},
    };
    struct fake f;
    struct pw_qmp *q = open_script(&f, script);
    struct events ev = {0};
    pw_qmp_set_event_cb(q, on_event, &ev);

    cJSON *reply = NULL;
    char err[256] = "";
    int rv = pw_qmp_execute(q, "query-status", NULL, &reply, in_ms(5000), err, sizeof(err));
    if (rv != PW_OK)
        fail_msg("query-status: %s", err);
    assert_non_null(reply);
    assert_string_equal(cJSON_GetObjectItem(reply, "status")->valuestring, "running");
    cJSON_Delete(reply);
    assert_int_equal(ev.n, 3);
    assert_string_equal(ev.names[0], "RESUME");
    assert_string_equal(ev.names[1], "STOP");
    assert_string_equal(ev.names[2], "MIGRATION");
    assert_int_equal(pw_qmp_events(q), 3);
    assert_true(pw_qmp_fd(q) >= 0);
    pw_qmp_close(q);
    fake_join(&f);
}

static void test_error_reply(void **state)
{
    (void)state;
    static const struct step script[] = {
        HANDSHAKE,
        {EXPECT, "migrate", 0},
        {SEND, "{\"id\": $ID, \"error\": {\"class\": \"GenericError\", \"desc\": \"There's a migration process in progress\"}}\n", 0},
        {EXPECT, "query-migrate", 0},
        {SEND, "{\"return\": {}, \"id\": $ID}\n", 0},
        {END, NULL, 0},
    };
    struct fake f;
    struct pw_qmp *q = open_script(&f, script);
    cJSON *reply = (cJSON *)1;
    char err[256] = "";
    int rv = pw_qmp_execute(q, "migrate", "{\"uri\": \"fd:snap\"}", &reply, in_ms(5000), err,
                            sizeof(err));
    assert_int_equal(rv, PW_ERR_INVAL);
    assert_null(reply);
    assert_string_equal(err, "QMP migrate: GenericError: There's a migration process in progress");
    assert_string_equal(pw_qmp_error_class(q), "GenericError");

    /* Still usable, and a later reply with an empty return needs no reply pointer. */
    rv = pw_qmp_execute(q, "query-migrate", NULL, NULL, in_ms(5000), err, sizeof(err));
    if (rv != PW_OK)
        fail_msg("query-migrate: %s", err);
    assert_string_equal(pw_qmp_error_class(q), "");
    pw_qmp_close(q);
    fake_join(&f);
}

static void test_split_reply(void **state)
{
    (void)state;
    static const struct step script[] = {
        {SEND, "{\"QMP\": {\"version\"", 0},
        {SLEEP, NULL, 20},
        {SEND, ": {}, \"capabilities\": []}}\r\n", 0},
        {EXPECT, "qmp_capabilities", 0},
        {SEND, "{\"return\": {}, \"id\": $ID}\n{\"event\": \"ST", 0},
        {SLEEP, NULL, 20},
        {SEND, "OP\"}\n", 0},
        {EXPECT, "query-migrate", 0},
        {SEND, "{\"return\": {\"status\": \"comp", 0},
        {SLEEP, NULL, 30},
        {SEND, "leted\", \"total-time\": 12}, ", 0},
        {SLEEP, NULL, 30},
        {SEND, "\"id\": $ID}", 0},
        {SLEEP, NULL, 30},
        {SEND, "\n", 0},
        {END, NULL, 0},
    };
    struct fake f;
    struct pw_qmp *q = open_script(&f, script);
    cJSON *reply = NULL;
    char err[256] = "";
    int rv = pw_qmp_execute(q, "query-migrate", NULL, &reply, in_ms(5000), err, sizeof(err));
    if (rv != PW_OK)
        fail_msg("query-migrate: %s", err);
    assert_string_equal(cJSON_GetObjectItem(reply, "status")->valuestring, "completed");
    assert_int_equal(cJSON_GetObjectItem(reply, "total-time")->valueint, 12);
    cJSON_Delete(reply);
    assert_int_equal(pw_qmp_events(q), 1);
    pw_qmp_close(q);
    fake_join(&f);
}

static void test_overlong_line(void **state)
{
    (void)state;
    static const struct step script[] = {
        HANDSHAKE,
        {EXPECT, "query-qmp-schema", 0},
        {SEND, "$BIG", 0},
        {END, NULL, 0},
    };
    struct fake f;
    /* A reply one byte over the limit, still without its newline when the client gives up. */
    size_t n = PW_QMP_MAX_LINE + 2;
    char *big = pw_xmalloc(n);
    memset(big, ' ', n);
    memcpy(big, "{\"return\": [", 12);
    int fd = fake_start(&f, script);
    f.big = big;
    f.biglen = n;
    struct pw_qmp *q = NULL;
    char err[256] = "";
    assert_int_equal(pw_qmp_open_fd(&q, fd, in_ms(5000), err, sizeof(err)), PW_OK);

    cJSON *reply = NULL;
    int rv = pw_qmp_execute(q, "query-qmp-schema", NULL, &reply, in_ms(5000), err, sizeof(err));
    assert_int_equal(rv, PW_ERR_TOOBIG);
    assert_null(reply);
    assert_non_null(strstr(err, "longer than the limit"));
    rv = pw_qmp_execute(q, "query-status", NULL, &reply, in_ms(5000), err, sizeof(err));
    assert_int_equal(rv, PW_ERR_STATE);
    pw_qmp_close(q);
    fake_join(&f);
    free(big);
}

static void test_quit_eof(void **state)
{
    (void)state;
    /* QEMU closes before answering, or answers and closes: both are a clean quit. */
    static const struct step before[] = {
        HANDSHAKE, {EXPECT, "quit", 0}, {HANGUP, NULL, 0}, {END, NULL, 0},
    };
    static const struct step after[] = {
        HANDSHAKE, {EXPECT, "quit", 0}, {SEND, "{\"return\": {}, \"id\": $ID}\n", 0},
        {HANGUP, NULL, 0}, {END, NULL, 0},
    };
    const struct step *scripts[] = {before, after};
    for (size_t i = 0; i < 2; i++) {
        struct fake f;
        struct pw_qmp *q = open_script(&f, scripts[i]);
        char err[256] = "";
        int rv = pw_qmp_quit(q, in_ms(5000), err, sizeof(err));
        if (rv != PW_OK)
            fail_msg("quit (%zu): %s", i, err);
        rv = pw_qmp_execute(q, "query-status", NULL, NULL, in_ms(1000), err, sizeof(err));
        assert_int_equal(rv, PW_ERR_STATE);
        pw_qmp_close(q);
        fake_join(&f);
    }
}

static void test_eof_mid_command(void **state)
{
    (void)state;
    static const struct step script[] = {
        HANDSHAKE, {EXPECT, "stop", 0}, {SEND, "{\"retu", 0}, {HANGUP, NULL, 0}, {END, NULL, 0},
    };
    struct fake f;
    struct pw_qmp *q = open_script(&f, script);
    char err[256] = "";
    int rv = pw_qmp_execute(q, "stop", NULL, NULL, in_ms(5000), err, sizeof(err));
    assert_int_equal(rv, PW_ERR_IO);
    assert_string_equal(err, "QMP stop: QEMU closed the connection in the middle of a line");
    assert_int_equal(pw_qmp_execute(q, "cont", NULL, NULL, in_ms(1000), err, sizeof(err)),
                     PW_ERR_STATE);
    pw_qmp_close(q);
    fake_join(&f);
}

static void test_pass_fd(void **state)
{
    (void)state;
    static const struct step script[] = {
        HANDSHAKE, {EXPECT, "getfd", 0}, {SEND, "{\"return\": {}, \"id\": $ID}\n", 0},
        {END, NULL, 0},
    };
    char path[] = "/tmp/pw-test-qmp-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);

    struct fake f;
    struct pw_qmp *q = open_script(&f, script);
    char err[256] = "";
    int rv = pw_qmp_execute_fd(q, "getfd", "{\"fdname\": \"snap\"}", fd, NULL, in_ms(5000), err,
                               sizeof(err));
    if (rv != PW_OK)
        fail_msg("getfd: %s", err);
    /* Without a descriptor, execute_fd refuses before sending anything. */
    assert_int_equal(pw_qmp_execute_fd(q, "getfd", NULL, -1, NULL, in_ms(1000), err, sizeof(err)),
                     PW_ERR_INVAL);
    pw_qmp_close(q);
    assert_int_equal(pthread_join(f.thread, NULL), 0);
    assert_string_equal(f.failure, "");
    assert_true(f.passed_fd >= 0);
    struct stat a, b;
    assert_int_equal(fstat(fd, &a), 0);
    assert_int_equal(fstat(f.passed_fd, &b), 0);
    assert_true(a.st_dev == b.st_dev);
    assert_true(a.st_ino == b.st_ino);
    /* The same open file, not just the same inode: a write through one moves the other. */
    assert_int_equal(write(f.passed_fd, "abc", 3), 3);
    assert_int_equal(lseek(fd, 0, SEEK_CUR), 3);
    close(f.passed_fd);
    close(f.fd);
    close(fd);
}

static void test_deadline(void **state)
{
    (void)state;
    static const struct step script[] = {
        HANDSHAKE,
        {EXPECT, "migrate-incoming", 0},
        {SLEEP, NULL, 400},
        /* The late reply to the timed-out command, then the answer to the next one. */
        {SEND, "{\"return\": {\"late\": true}, \"id\": $ID}\n", 0},
        {EXPECT, "query-status", 0},
        {SEND, "{\"error\": {\"class\": \"GenericError\", \"desc\": \"stale\"}, \"id\": $PREV}\n", 0},
        {SEND, "{\"return\": {\"status\": \"paused\"}, \"id\": $ID}\n", 0},
        {END, NULL, 0},
    };
    struct fake f;
    struct pw_qmp *q = open_script(&f, script);
    char err[256] = "";
    cJSON *reply = NULL;
    int64_t t0 = pw_now_mono_ms();
    int rv = pw_qmp_execute(q, "migrate-incoming", "{\"uri\":\"fd:snap\"}", &reply, t0 + 150,
                            err, sizeof(err));
    int64_t took = pw_now_mono_ms() - t0;
    assert_int_equal(rv, PW_ERR_TIMEOUT);
    assert_null(reply);
    assert_true(took >= 150);
    assert_true(took < 1000);
    assert_non_null(strstr(err, "migrate-incoming"));

    /* The connection survives: the stale reply (and a stale error) is skipped by its id. */
    rv = pw_qmp_execute(q, "query-status", NULL, &reply, in_ms(5000), err, sizeof(err));
    if (rv != PW_OK)
        fail_msg("query-status: %s", err);
    assert_string_equal(cJSON_GetObjectItem(reply, "status")->valuestring, "paused");
    cJSON_Delete(reply);
    pw_qmp_close(q);
    fake_join(&f);
}

static void test_handshake_errors(void **state)
{
    (void)state;
    static const struct step no_greeting[] = {
        {SEND, "{\"return\": {}}\n", 0}, {END, NULL, 0},
    };
    static const struct step garbage[] = {
        {SEND, "Hello, I am not QEMU\n", 0}, {END, NULL, 0},
    };
    static const struct step silent[] = {{SLEEP, NULL, 300}, {END, NULL, 0}};
    static const struct step refused[] = {
        {SEND, GREETING, 0}, {EXPECT, "qmp_capabilities", 0},
        {SEND, "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"nope\"}, \"id\": $ID}\n", 0},
        {END, NULL, 0},
    };
    const struct {
        const struct step *script;
        int want;
        const char *text;
    } cases[] = {
        {no_greeting, PW_ERR_PROTO, "expected a greeting, got a return line"},
        {garbage, PW_ERR_PARSE, "not valid JSON"},
        {silent, PW_ERR_TIMEOUT, "deadline"},
        {refused, PW_ERR_INVAL, "QMP qmp_capabilities: CommandNotFound: nope"},
    };
    for (size_t i = 0; i < PW_ARRAY_LEN(cases); i++) {
        struct fake f;
        struct pw_qmp *q = (struct pw_qmp *)1;
        char err[256] = "";
        int fd = fake_start(&f, cases[i].script);
        int rv = pw_qmp_open_fd(&q, fd, in_ms(150), err, sizeof(err));
        if (rv != cases[i].want || strstr(err, cases[i].text) == NULL)
            fail_msg("case %zu: want %s \"%s\", got %s \"%s\"", i, pw_strerror(cases[i].want),
                     cases[i].text, pw_strerror(rv), err);
        assert_null(q);
        fake_join(&f);
    }
}

static void test_bad_arguments(void **state)
{
    (void)state;
    static const struct step script[] = {
        HANDSHAKE, {EXPECT, "cont", 0}, {SEND, "{\"return\": {}, \"id\": $ID}\n", 0},
        {END, NULL, 0},
    };
    struct fake f;
    struct pw_qmp *q = open_script(&f, script);
    char err[256] = "";
    const char *bad[] = {"[1]", "{\"a\":", "{} {}", "\"s\""};
    for (size_t i = 0; i < PW_ARRAY_LEN(bad); i++) {
        int rv = pw_qmp_execute(q, "stop", bad[i], NULL, in_ms(1000), err, sizeof(err));
        assert_int_equal(rv, PW_ERR_INVAL);
        assert_string_equal(err, "QMP stop: arguments are not a JSON object");
    }
    /* Nothing was sent: the fake sees cont first. */
    assert_int_equal(pw_qmp_execute(q, "cont", NULL, NULL, in_ms(5000), err, sizeof(err)), PW_OK);
    pw_qmp_close(q);
    fake_join(&f);
}

/* ---- connecting through a path ---- */

struct late_listener {
    char path[108];
    int delay_ms;
    struct fake f;
    int lfd;
};

static void *late_listen(void *arg)
{
    struct late_listener *l = arg;
    struct timespec ts = {.tv_sec = 0, .tv_nsec = l->delay_ms * 1000000L};
    nanosleep(&ts, NULL);
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", l->path);
    if (s < 0 || bind(s, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(s, 4) != 0) {
        fake_fail(&l->f, "listen failed");
        return NULL;
    }
    l->lfd = s;
    int c = accept(s, NULL, NULL);
    if (c < 0) {
        fake_fail(&l->f, "accept failed");
        return NULL;
    }
    l->f.fd = c;
    return fake_main(&l->f);
}

static void test_connect_retry(void **state)
{
    (void)state;
    static const struct step script[] = {
        HANDSHAKE, {EXPECT, "query-status", 0},
        {SEND, "{\"return\": {\"status\": \"prelaunch\"}, \"id\": $ID}\n", 0}, {END, NULL, 0},
    };
    char dir[] = "/tmp/pw-test-qmp-XXXXXX";
    assert_non_null(mkdtemp(dir));
    struct late_listener l;
    memset(&l, 0, sizeof(l));
    snprintf(l.path, sizeof(l.path), "%s/qmp.sock", dir);
    l.delay_ms = 120;
    l.f.passed_fd = -1;
    l.f.fd = -1;
    l.f.script = script;
    l.lfd = -1;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, late_listen, &l), 0);

    struct pw_qmp *q = NULL;
    char err[256] = "";
    int64_t t0 = pw_now_mono_ms();
    int rv = pw_qmp_connect(&q, l.path, t0 + 5000, err, sizeof(err));
    if (rv != PW_OK)
        fail_msg("connect: %s", err);
    assert_true(pw_now_mono_ms() - t0 >= 100);
    cJSON *reply = NULL;
    rv = pw_qmp_execute(q, "query-status", NULL, &reply, in_ms(5000), err, sizeof(err));
    assert_int_equal(rv, PW_OK);
    assert_string_equal(cJSON_GetObjectItem(reply, "status")->valuestring, "prelaunch");
    cJSON_Delete(reply);
    pw_qmp_close(q);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_string_equal(l.f.failure, "");
    close(l.f.fd);
    close(l.lfd);
    unlink(l.path);

    /* Nobody ever listens: the deadline ends the retries. */
    t0 = pw_now_mono_ms();
    rv = pw_qmp_connect(&q, l.path, t0 + 200, err, sizeof(err));
    assert_int_equal(rv, PW_ERR_TIMEOUT);
    assert_null(q);
    assert_true(pw_now_mono_ms() - t0 >= 200);
    assert_non_null(strstr(err, "No such file or directory"));
    rmdir(dir);

    /* A path that cannot be a socket address. */
    char longpath[300];
    memset(longpath, 'a', sizeof(longpath) - 1);
    longpath[sizeof(longpath) - 1] = '\0';
    assert_int_equal(pw_qmp_connect(&q, longpath, in_ms(100), err, sizeof(err)), PW_ERR_INVAL);
    assert_int_equal(pw_qmp_connect(&q, "", in_ms(100), err, sizeof(err)), PW_ERR_INVAL);
    pw_qmp_close(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_kinds),
        cmocka_unit_test(test_parse_bad),
        cmocka_unit_test(test_execute_with_events),
        cmocka_unit_test(test_error_reply),
        cmocka_unit_test(test_split_reply),
        cmocka_unit_test(test_overlong_line),
        cmocka_unit_test(test_quit_eof),
        cmocka_unit_test(test_eof_mid_command),
        cmocka_unit_test(test_pass_fd),
        cmocka_unit_test(test_deadline),
        cmocka_unit_test(test_handshake_errors),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_connect_retry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
