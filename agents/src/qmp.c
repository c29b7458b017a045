/* qmp.c — the blocking QMP client (qmp.h): a line parser, and a client that sends one command
 * at a time on a non-blocking unix socket, waiting with poll(2) under absolute deadlines.
 *
 * Every command carries a numeric "id" that QEMU echoes in its reply. That is what lets a
 * command time out without poisoning the connection: the late reply shows up with an old id
 * and is dropped. Errors that desynchronise the stream (EOF, a malformed or over-long line, a
 * half-sent command) mark the connection broken instead. */
#include "pw/qmp.h"

#include "pw/error.h"
#include "pw/util.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* Bytes read at a time; the buffer holds at most one maximal line plus one read. */
#define READ_CHUNK 65536
#define RBUF_MAX (PW_QMP_MAX_LINE + 2 + READ_CHUNK)

struct pw_qmp {
    int fd;
    bool broken;        /* the stream is out of step: every call fails with PW_ERR_STATE */
    char *rbuf;         /* rbuf[rpos..rlen) is read and not consumed; grows up to RBUF_MAX */
    size_t rpos, rlen, rcap;
    size_t scanned;     /* rbuf[rpos..rpos+scanned) holds no newline */
    uint64_t next_id;   /* id of the next command */
    uint64_t nevents;
    pw_qmp_event_cb event_cb;
    void *event_arg;
    char err_class[64]; /* class of the last error reply */
};

static const char *const kind_names[] = {
#define PW_QMP_KIND_NAME(name, str) str,
    PW_QMP_KIND_MAP(PW_QMP_KIND_NAME)
#undef PW_QMP_KIND_NAME
};

const char *pw_qmp_kind_name(enum pw_qmp_kind kind)
{
    if ((size_t)kind >= PW_ARRAY_LEN(kind_names))
        return "unknown";
    return kind_names[kind];
}

/* ---- parser ---- */

static bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

int pw_qmp_parse_line(const char *line, size_t len, struct pw_qmp_msg *out, char *errbuf,
                      size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (line == NULL)
        len = 0;
    if (len > 0 && line[len - 1] == '\r')
        len--;
    if (len > PW_QMP_MAX_LINE) {
        pw_errf(errbuf, errlen, "QMP line of %zu bytes is longer than the limit of %d", len,
                PW_QMP_MAX_LINE);
        return PW_ERR_TOOBIG;
    }
    size_t start = 0;
    while (start < len && is_ws(line[start]))
        start++;
    if (start == len) {
        pw_errf(errbuf, errlen, "empty QMP line");
        return PW_ERR_PARSE;
    }
    const char *nul = memchr(line, '\0', len);
    if (nul != NULL) {
        pw_errf(errbuf, errlen, "QMP line has a NUL byte at offset %zu", (size_t)(nul - line));
        return PW_ERR_PARSE;
    }
    const char *nl = memchr(line, '\n', len);
    if (nl != NULL) {
        pw_errf(errbuf, errlen, "QMP line has a newline at offset %zu", (size_t)(nl - line));
        return PW_ERR_PARSE;
    }

    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(line + start, len - start, &end, 0);
    if (root == NULL) {
        size_t at = start;
        if (end != NULL && end >= line + start && end <= line + len)
            at = (size_t)(end - line);
        pw_errf(errbuf, errlen, "QMP line is not valid JSON (near offset %zu)", at);
        return PW_ERR_PARSE;
    }
    int rv = PW_ERR_PARSE;
    for (const char *p = end; p < line + len; p++) {
        if (!is_ws(*p)) {
            pw_errf(errbuf, errlen, "QMP line has data after its JSON value at offset %zu",
                    (size_t)(p - line));
            goto fail;
        }
    }
    if (!cJSON_IsObject(root)) {
        pw_errf(errbuf, errlen, "QMP line is not a JSON object");
        goto fail;
    }

    const cJSON *greet = cJSON_GetObjectItemCaseSensitive(root, "QMP");
    const cJSON *ret = cJSON_GetObjectItemCaseSensitive(root, "return");
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(root, "error");
    const cJSON *ev = cJSON_GetObjectItemCaseSensitive(root, "event");
    int n = (greet != NULL) + (ret != NULL) + (err != NULL) + (ev != NULL);
    if (n == 0) {
        pw_errf(errbuf, errlen,
                "QMP line has none of \"QMP\", \"return\", \"error\" or \"event\"");
        goto fail;
    }
    if (n > 1) {
        pw_errf(errbuf, errlen,
                "QMP line has more than one of \"QMP\", \"return\", \"error\" and \"event\"");
        goto fail;
    }

    out->id = cJSON_GetObjectItemCaseSensitive(root, "id");
    if (greet != NULL) {
        if (!cJSON_IsObject(greet)) {
            pw_errf(errbuf, errlen, "QMP greeting: \"QMP\" is not an object");
            goto fail;
        }
        out->kind = PW_QMP_GREETING;
        out->value = greet;
        out->id = NULL;
    } else if (ret != NULL) {
        out->kind = PW_QMP_RETURN;
        out->value = ret;
    } else if (err != NULL) {
        const cJSON *cls = cJSON_GetObjectItemCaseSensitive(err, "class");
        const cJSON *desc = cJSON_GetObjectItemCaseSensitive(err, "desc");
        if (!cJSON_IsObject(err) || !cJSON_IsString(cls) || !cJSON_IsString(desc)) {
            pw_errf(errbuf, errlen,
                    "QMP error reply: \"error\" is not an object with strings \"class\" "
                    "and \"desc\"");
            goto fail;
        }
        out->kind = PW_QMP_ERROR;
        out->value = err;
        out->err_class = cls->valuestring;
        out->err_desc = desc->valuestring;
    } else {
        const cJSON *data = cJSON_GetObjectItemCaseSensitive(root, "data");
        if (!cJSON_IsString(ev)) {
            pw_errf(errbuf, errlen, "QMP event: \"event\" is not a string");
            goto fail;
        }
        if (data != NULL && !cJSON_IsObject(data)) {
            pw_errf(errbuf, errlen, "QMP event: \"data\" is not an object");
            goto fail;
        }
        out->kind = PW_QMP_EVENT;
        out->value = data;
        out->event = ev->valuestring;
        out->id = NULL;
    }
    out->root = root;
    return PW_OK;

fail:
    cJSON_Delete(root);
    memset(out, 0, sizeof(*out));
    return rv;
}

void pw_qmp_msg_fini(struct pw_qmp_msg *m)
{
    cJSON_Delete(m->root);
    memset(m, 0, sizeof(*m));
}

/* ---- socket helpers ---- */

/* wait_fd polls fd for events until deadline_ms. PW_OK when ready (or when the socket has an
 * error or hang-up, which the next read or write reports), PW_ERR_TIMEOUT, PW_ERR_IO. */
static int wait_fd(int fd, short events, int64_t deadline_ms, char *errbuf, size_t errlen)
{
    for (;;) {
        int64_t left = deadline_ms - pw_now_mono_ms();
        if (left <= 0) {
            pw_errf(errbuf, errlen, "QMP: deadline passed");
            return PW_ERR_TIMEOUT;
        }
        struct pollfd p = {.fd = fd, .events = events};
        int r = poll(&p, 1, left > 60000 ? 60000 : (int)left);
        if (r > 0)
            return PW_OK;
        if (r < 0 && errno != EINTR) {
            pw_errf(errbuf, errlen, "QMP: poll: %s", strerror(errno));
            return PW_ERR_IO;
        }
    }
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* send_all writes len bytes, passing pass_fd (when >= 0) with the first sendmsg that moves
 * any byte. *sent tells how much went out, so a caller knows whether the stream is torn. */
static int send_all(struct pw_qmp *q, const char *data, size_t len, int pass_fd,
                    int64_t deadline_ms, size_t *sent, char *errbuf, size_t errlen)
{
    *sent = 0;
    while (*sent < len) {
        struct iovec iov = {.iov_base = (void *)(data + *sent), .iov_len = len - *sent};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
        union {
            char buf[CMSG_SPACE(sizeof(int))];
            struct cmsghdr align;
        } cm;
        if (pass_fd >= 0 && *sent == 0) {
            memset(&cm, 0, sizeof(cm));
            mh.msg_control = cm.buf;
            mh.msg_controllen = sizeof(cm.buf);
            struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(sizeof(int));
            memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
        }
        ssize_t n = sendmsg(q->fd, &mh, MSG_NOSIGNAL);
        if (n > 0) {
            *sent += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int rv = wait_fd(q->fd, POLLOUT, deadline_ms, errbuf, errlen);
            if (rv != PW_OK)
                return rv;
            continue;
        }
        pw_errf(errbuf, errlen, "QMP: send: %s", n < 0 ? strerror(errno) : "no progress");
        return PW_ERR_IO;
    }
    return PW_OK;
}

/* read_line waits for one complete line and returns it in *line and *len (without "\n"), in the
 * buffer until consume_line. PW_ERR_IO with *eof set when QEMU closed the connection. */
static int read_line(struct pw_qmp *q, int64_t deadline_ms, const char **line, size_t *len,
                     bool *eof, char *errbuf, size_t errlen)
{
    *eof = false;
    for (;;) {
        char *base = q->rbuf + q->rpos;
        size_t have = q->rlen - q->rpos;
        char *nl = have > q->scanned ? memchr(base + q->scanned, '\n', have - q->scanned) : NULL;
        if (nl != NULL) {
            *line = base;
            *len = (size_t)(nl - base);
            /* The parser strips one trailing "\r", so such a line may be one byte longer. */
            if (*len > PW_QMP_MAX_LINE + 1 ||
                (*len == PW_QMP_MAX_LINE + 1 && base[*len - 1] != '\r')) {
                pw_errf(errbuf, errlen, "QMP: line of %zu bytes is longer than the limit of %d",
                        *len, PW_QMP_MAX_LINE);
                return PW_ERR_TOOBIG;
            }
            return PW_OK;
        }
        q->scanned = have;
        if (have > PW_QMP_MAX_LINE + 1) {
            pw_errf(errbuf, errlen, "QMP: line longer than the limit of %d bytes",
                    PW_QMP_MAX_LINE);
            return PW_ERR_TOOBIG;
        }
        /* Make room for one more read: move the partial line to the front, then grow. */
        if (q->rcap - q->rlen < READ_CHUNK && q->rpos > 0) {
            memmove(q->rbuf, base, have);
            q->rpos = 0;
            q->rlen = have;
        }
        if (q->rcap - q->rlen < READ_CHUNK && q->rcap < RBUF_MAX) {
            size_t ncap = q->rcap == 0 ? 4096 : q->rcap * 2;
            while (ncap - q->rlen < READ_CHUNK && ncap < RBUF_MAX)
                ncap *= 2;
            if (ncap > RBUF_MAX)
                ncap = RBUF_MAX;
            q->rbuf = pw_xrealloc(q->rbuf, ncap);
            q->rcap = ncap;
        }
        ssize_t n = recv(q->fd, q->rbuf + q->rlen, q->rcap - q->rlen, 0);
        if (n > 0) {
            q->rlen += (size_t)n;
            continue;
        }
        if (n == 0) {
            *eof = true;
            pw_errf(errbuf, errlen, "QMP: QEMU closed the connection%s",
                    have > 0 ? " in the middle of a line" : "");
            return PW_ERR_IO;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            int rv = wait_fd(q->fd, POLLIN, deadline_ms, errbuf, errlen);
            if (rv != PW_OK)
                return rv;
            continue;
        }
        if (errno == ECONNRESET)
            *eof = true;
        pw_errf(errbuf, errlen, "QMP: recv: %s", strerror(errno));
        return PW_ERR_IO;
    }
}

static void consume_line(struct pw_qmp *q, size_t len)
{
    q->rpos += len + 1;
    q->scanned = 0;
    if (q->rpos == q->rlen)
        q->rpos = q->rlen = 0;
}

/* read_msg reads and parses the next line. Any error but a timeout breaks the connection. */
static int read_msg(struct pw_qmp *q, int64_t deadline_ms, struct pw_qmp_msg *m, bool *eof,
                    char *errbuf, size_t errlen)
{
    const char *line;
    size_t len;
    memset(m, 0, sizeof(*m));
    int rv = read_line(q, deadline_ms, &line, &len, eof, errbuf, errlen);
    if (rv == PW_OK) {
        char perr[200];
        rv = pw_qmp_parse_line(line, len, m, perr, sizeof(perr));
        if (rv != PW_OK)
            pw_errf(errbuf, errlen, "%s", perr);
        consume_line(q, len);
    }
    if (rv != PW_OK && rv != PW_ERR_TIMEOUT)
        q->broken = true;
    return rv;
}

static void note_event(struct pw_qmp *q, const struct pw_qmp_msg *m)
{
    q->nevents++;
    if (q->event_cb != NULL)
        q->event_cb(m->event, m->value, q->event_arg);
}

/* ---- commands ---- */

enum { RUN_PLAIN = 0, RUN_QUIT = 1 };

/* skip_prefix drops the "QMP: " of a low-level reason, for messages that name the command. */
static const char *skip_prefix(const char *s) { return strncmp(s, "QMP: ", 5) == 0 ? s + 5 : s; }

static int run_command(struct pw_qmp *q, const char *cmd, const char *args_json, int pass_fd,
                       int mode, cJSON **reply, int64_t deadline_ms, char *errbuf,
                       size_t errlen)
{
    if (reply != NULL)
        *reply = NULL;
    if (q->broken) {
        pw_errf(errbuf, errlen, "QMP %s: the connection is unusable after an earlier error",
                cmd);
        return PW_ERR_STATE;
    }
    q->err_class[0] = '\0';

    cJSON *args = NULL;
    if (args_json != NULL) {
        const char *end = NULL;
        args = cJSON_ParseWithOpts(args_json, &end, 1);
        if (args == NULL || !cJSON_IsObject(args)) {
            pw_errf(errbuf, errlen, "QMP %s: arguments are not a JSON object", cmd);
            cJSON_Delete(args);
            return PW_ERR_INVAL;
        }
    }
    uint64_t id = q->next_id++;
    cJSON *req = cJSON_CreateObject();
    cJSON_AddStringToObject(req, "execute", cmd);
    if (args != NULL)
        cJSON_AddItemToObject(req, "arguments", args);
    cJSON_AddNumberToObject(req, "id", (double)id);
    char *text = cJSON_PrintUnformatted(req);
    cJSON_Delete(req);
    if (text == NULL)
        abort(); /* cJSON fails to print only for lack of memory */
    size_t total = strlen(text);
    text = pw_xrealloc(text, total + 2);
    memcpy(text + total, "\n", 2);
    total++;

    size_t sent = 0;
    char detail[256];
    int rv = send_all(q, text, total, pass_fd, deadline_ms, &sent, detail, sizeof(detail));
    free(text);
    if (rv != PW_OK) {
        /* A command cut in the middle leaves the stream torn; one not started does not. */
        if (rv == PW_ERR_IO || sent > 0)
            q->broken = true;
        pw_errf(errbuf, errlen, "QMP %s: %s", cmd, skip_prefix(detail));
        return rv;
    }
    if (mode == RUN_QUIT)
        q->broken = true; /* nothing may follow quit */

    for (;;) {
        struct pw_qmp_msg m;
        bool eof = false;
        rv = read_msg(q, deadline_ms, &m, &eof, detail, sizeof(detail));
        if (rv != PW_OK) {
            if (mode == RUN_QUIT && eof)
                return PW_OK;
            pw_errf(errbuf, errlen, "QMP %s: %s", cmd, skip_prefix(detail));
            return rv;
        }
        switch (m.kind) {
        case PW_QMP_EVENT:
            note_event(q, &m);
            pw_qmp_msg_fini(&m);
            continue;
        case PW_QMP_GREETING:
            pw_qmp_msg_fini(&m);
            q->broken = true;
            pw_errf(errbuf, errlen, "QMP %s: unexpected greeting in the middle of a session", cmd);
            return PW_ERR_PROTO;
        case PW_QMP_RETURN:
        case PW_QMP_ERROR:
            break;
        }
        /* A reply carrying another id answers a command that timed out earlier. */
        if (m.id != NULL && !(cJSON_IsNumber(m.id) && m.id->valuedouble == (double)id)) {
            pw_qmp_msg_fini(&m);
            continue;
        }
        if (m.kind == PW_QMP_ERROR) {
            pw_strlcpy(q->err_class, m.err_class, sizeof(q->err_class));
            pw_errf(errbuf, errlen, "QMP %s: %s: %s", cmd, m.err_class, m.err_desc);
            pw_qmp_msg_fini(&m);
            return PW_ERR_INVAL;
        }
        if (reply != NULL)
            *reply = cJSON_DetachItemViaPointer(m.root, (cJSON *)m.value);
        pw_qmp_msg_fini(&m);
        return PW_OK;
    }
}

int pw_qmp_execute(struct pw_qmp *q, const char *cmd, const char *args_json, cJSON **reply,
                   int64_t deadline_ms, char *errbuf, size_t errlen)
{
    return run_command(q, cmd, args_json, -1, RUN_PLAIN, reply, deadline_ms, errbuf, errlen);
}

int pw_qmp_execute_fd(struct pw_qmp *q, const char *cmd, const char *args_json, int fd,
                      cJSON **reply, int64_t deadline_ms, char *errbuf, size_t errlen)
{
    if (fd < 0) {
        if (reply != NULL)
            *reply = NULL;
        pw_errf(errbuf, errlen, "QMP %s: no file descriptor to pass", cmd);
        return PW_ERR_INVAL;
    }
    return run_command(q, cmd, args_json, fd, RUN_PLAIN, reply, deadline_ms, errbuf, errlen);
}

int pw_qmp_quit(struct pw_qmp *q, int64_t deadline_ms, char *errbuf, size_t errlen)
{
    return run_command(q, "quit", NULL, -1, RUN_QUIT, NULL, deadline_ms, errbuf, errlen);
}

/* ---- connection ---- */

int pw_qmp_open_fd(struct pw_qmp **out, int fd, int64_t deadline_ms, char *errbuf,
                   size_t errlen)
{
    *out = NULL;
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
        fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
        pw_errf(errbuf, errlen, "QMP: fcntl: %s", strerror(errno));
        close(fd);
        return PW_ERR_IO;
    }
    struct pw_qmp *q = pw_xcalloc(1, sizeof(*q));
    q->fd = fd;
    q->next_id = 1;

    struct pw_qmp_msg m;
    bool eof;
    char detail[256];
    int rv = read_msg(q, deadline_ms, &m, &eof, detail, sizeof(detail));
    if (rv != PW_OK) {
        pw_errf(errbuf, errlen, "%s (waiting for the greeting)", detail);
        goto fail;
    }
    if (m.kind != PW_QMP_GREETING) {
        pw_errf(errbuf, errlen, "QMP: expected a greeting, got a %s line",
                pw_qmp_kind_name(m.kind));
        pw_qmp_msg_fini(&m);
        rv = PW_ERR_PROTO;
        goto fail;
    }
    pw_qmp_msg_fini(&m);
    rv = pw_qmp_execute(q, "qmp_capabilities", NULL, NULL, deadline_ms, errbuf, errlen);
    if (rv != PW_OK)
        goto fail;
    *out = q;
    return PW_OK;

fail:
    pw_qmp_close(q);
    return rv;
}

int pw_qmp_connect(struct pw_qmp **out, const char *path, int64_t deadline_ms, char *errbuf,
                   size_t errlen)
{
    *out = NULL;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (path == NULL || path[0] == '\0' || strlen(path) >= sizeof(sa.sun_path)) {
        pw_errf(errbuf, errlen, "QMP: socket path \"%s\" is empty or longer than %zu bytes",
                path != NULL ? path : "", sizeof(sa.sun_path) - 1);
        return PW_ERR_INVAL;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);

    int64_t backoff = 2;
    for (;;) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0) {
            pw_errf(errbuf, errlen, "QMP: socket: %s", strerror(errno));
            return PW_ERR_IO;
        }
        int r;
        do
            r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
        while (r < 0 && errno == EINTR);
        if (r == 0)
            return pw_qmp_open_fd(out, fd, deadline_ms, errbuf, errlen);
        int e = errno;
        close(fd);
        /* Not there yet, or its backlog is full: QEMU is still starting. */
        if (e != ENOENT && e != ECONNREFUSED && e != EAGAIN) {
            pw_errf(errbuf, errlen, "QMP: connect %s: %s", path, strerror(e));
            return PW_ERR_IO;
        }
        int64_t left = deadline_ms - pw_now_mono_ms();
        if (left <= 0) {
            pw_errf(errbuf, errlen, "QMP: connect %s: %s until the deadline", path, strerror(e));
            return PW_ERR_TIMEOUT;
        }
        sleep_ms(PW_MIN(backoff, left));
        backoff = PW_MIN(backoff * 2, 50);
    }
}

void pw_qmp_set_event_cb(struct pw_qmp *q, pw_qmp_event_cb cb, void *arg)
{
    q->event_cb = cb;
    q->event_arg = arg;
}

const char *pw_qmp_error_class(const struct pw_qmp *q) { return q->err_class; }

uint64_t pw_qmp_events(const struct pw_qmp *q) { return q->nevents; }

int pw_qmp_fd(const struct pw_qmp *q) { return q->fd; }

void pw_qmp_close(struct pw_qmp *q)
{
    if (q == NULL)
        return;
    if (q->fd >= 0)
        close(q->fd);
    free(q->rbuf);
    free(q);
}
