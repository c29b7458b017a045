/* test_qemu_vm.c — QEMU microvm primitives against real QEMU (TCG) and a real guest image:
 * golden boot and snapshot, two restores that answer HTTP with their own identities, orphan
 * scan and adoption, destroy leaving nothing behind, a boot deadline, the accelerator probe.
 *
 * The guest image comes from agents/guest/build-guest.sh (cached between runs). Without
 * qemu-system-x86_64 or the builder the QEMU tests are skipped, loudly, and fail instead when
 * PREWARM_REQUIRE_QEMU=1. The metadata and command-line checks run everywhere. */
#include "pw/error.h"
#include "pw/qemu_vm.h"
#include "pw/qmp.h"
#include "pw/util.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define BUILDER PW_SOURCE_DIR "/agents/guest/build-guest.sh"
#define FN "pwtest-static"
#define BODY "hello from prewarm"

static struct {
    bool ready;         /* QEMU and the image are there */
    char skip_why[512];
    char image[PATH_MAX];
    char kernel[PATH_MAX + 16];
    char initrd[PATH_MAX + 32];
    char run_dir[64];
    char mem_dir[64];
    char snap_dir[96];
    struct pw_qemu_config cfg;
    struct pw_qemu_snapshot snap;
    bool have_snap;
} G;

/* ---- helpers ---- */

static int64_t in_ms(int64_t ms) { return pw_now_mono_ms() + ms; }

/* vm_id makes VM ids unique to this test process: other runs of this test may share the
 * machine, and the marker checks look at every process. */
static uint64_t vm_id(unsigned n) { return ((uint64_t)(uint32_t)getpid() << 20) | n; }

static bool in_path(const char *name)
{
    const char *path = getenv("PATH");
    char buf[PATH_MAX];
    while (path != NULL && *path != '\0') {
        const char *c = strchr(path, ':');
        size_t n = c != NULL ? (size_t)(c - path) : strlen(path);
        snprintf(buf, sizeof(buf), "%.*s/%s", (int)n, path, name);
        if (n > 0 && access(buf, X_OK) == 0)
            return true;
        path += n + (c != NULL);
    }
    return false;
}

/* count_entries counts directory entries other than . and .. (-1 when it is missing). */
static int count_entries(const char *dir, char *names, size_t nameslen)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return -1;
    int n = 0;
    if (names != NULL && nameslen > 0)
        names[0] = '\0';
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        n++;
        if (names != NULL) {
            size_t l = strlen(names);
            snprintf(names + l, nameslen - l, "%s%s", l ? " " : "", e->d_name);
        }
    }
    closedir(d);
    return n;
}

static void rm_tree(const char *dir)
{
    char cmd[PATH_MAX + 16];
    if (dir[0] == '/' && strlen(dir) > 5) {
        snprintf(cmd, sizeof(cmd), "/bin/rm -rf '%s'", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", dir);
    }
}

/* process_gone: the PID names no process, not even a zombie. */
static void assert_process_gone(pid_t pid)
{
    errno = 0;
    int r = kill(pid, 0);
    if (r == 0 || errno != ESRCH)
        fail_msg("process %d still exists (kill: %d, errno %d)", (int)pid, r, errno);
}

/* marker_running tells whether any process carries -name prewarm-<id>. */
static bool marker_running(uint64_t vm_id)
{
    char want[32];
    snprintf(want, sizeof(want), "prewarm-%016" PRIx64, vm_id);
    DIR *d = opendir("/proc");
    assert_non_null(d);
    bool found = false;
    struct dirent *e;
    while (!found && (e = readdir(d)) != NULL) {
        char path[300], buf[8192];
        snprintf(path, sizeof(path), "/proc/%s/cmdline", e->d_name);
        int fd = open(path, O_RDONLY);
        if (fd < 0)
            continue;
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        for (ssize_t i = 0; i < n; i += (ssize_t)strlen(buf + i) + 1)
            if (strcmp(buf + i, want) == 0)
                found = true;
    }
    closedir(d);
    return found;
}

struct http_answer {
    int status;
    char instance[80];
    char function[80];
    char body[256];
};

/* http_get sends GET / to 127.0.0.1:port and reads the whole answer (Connection: close). */
static int http_get(uint16_t port, struct http_answer *a)
{
    memset(a, 0, sizeof(*a));
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    const char req[] = "GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if (write(fd, req, sizeof(req) - 1) != (ssize_t)sizeof(req) - 1) {
        close(fd);
        return -1;
    }
    char buf[4096];
    size_t len = 0;
    int64_t deadline = in_ms(10000);
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 200) <= 0) {
            if (pw_now_mono_ms() > deadline)
                break;
            continue;
        }
        ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    buf[len] = '\0';
    if (sscanf(buf, "HTTP/1.%*d %d", &a->status) != 1)
        return -1;
    const char *h = strstr(buf, "X-Prewarm-Instance: ");
    if (h != NULL)
        sscanf(h + 20, "%79[^\r\n]", a->instance);
    h = strstr(buf, "X-Prewarm-Function: ");
    if (h != NULL)
        sscanf(h + 20, "%79[^\r\n]", a->function);
    const char *body = strstr(buf, "\r\n\r\n");
    if (body != NULL)
        snprintf(a->body, sizeof(a->body), "%s", body + 4);
    return 0;
}

/* run_builder runs build-guest.sh with args and returns the directory it prints. */
static int run_builder(const char *args, char *out, size_t outlen)
{
    char cmd[1024], log[64];
    snprintf(log, sizeof(log), "/tmp/pw-test-qemu-build-%d.log", (int)getpid());
    snprintf(cmd, sizeof(cmd), "bash '%s' %s 2>%s", BUILDER, args, log);
    FILE *p = popen(cmd, "r");
    if (p == NULL)
        return -1;
    char line[PATH_MAX];
    out[0] = '\0';
    while (fgets(line, sizeof(line), p) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        if (line[0] != '\0')
            snprintf(out, outlen, "%s", line);
    }
    int st = pclose(p);
    if (st != 0 || out[0] == '\0') {
        fprintf(stderr, "test_qemu_vm: %s failed; its log:\n", BUILDER);
        snprintf(cmd, sizeof(cmd), "tail -20 %s >&2", log);
        if (system(cmd) != 0)
            fprintf(stderr, "(no log)\n");
        unlink(log);
        return -1;
    }
    unlink(log);
    return 0;
}

static void skip_loudly(void)
{
    fprintf(stderr,
            "\n"
            "**********************************************************************\n"
            "** test_qemu_vm: SKIPPING the real-QEMU tests: %s\n"
            "** (set PREWARM_REQUIRE_QEMU=1 to make this a failure)\n"
            "**********************************************************************\n\n",
            G.skip_why);
}

static int setup(void **state)
{
    (void)state;
    if (!in_path("qemu-system-x86_64"))
        snprintf(G.skip_why, sizeof(G.skip_why),
                 "no qemu-system-x86_64 in PATH (apt-get install qemu-system-x86)");
    else if (access(BUILDER, R_OK) != 0)
        snprintf(G.skip_why, sizeof(G.skip_why), "no guest image builder at %s", BUILDER);
    if (G.skip_why[0] != '\0')
        return 0;

    char base[PATH_MAX];
    int64_t t0 = pw_now_mono_ms();
    if (run_builder("base", base, sizeof(base)) != 0 ||
        run_builder("function " FN " --static '" BODY "'", G.image, sizeof(G.image)) != 0) {
        snprintf(G.skip_why, sizeof(G.skip_why), "the guest image builder failed");
        return -1;
    }
    printf("test_qemu_vm: guest image %s (built or found in %" PRId64 " ms)\n", G.image,
           pw_now_mono_ms() - t0);
    snprintf(G.kernel, sizeof(G.kernel), "%s/vmlinux", G.image);
    snprintf(G.initrd, sizeof(G.initrd), "%s/initramfs.cpio.gz", G.image);

    snprintf(G.run_dir, sizeof(G.run_dir), "/tmp/pwq-%d", (int)getpid());
    snprintf(G.mem_dir, sizeof(G.mem_dir), "/dev/shm/pwq-test-%d", (int)getpid());
    snprintf(G.snap_dir, sizeof(G.snap_dir), "/tmp/pwq-%d-snap/" FN, (int)getpid());
    char err[512], why[512];
    assert_int_equal(pw_qemu_config_init(&G.cfg, G.run_dir, err, sizeof(err)), PW_OK);
    pw_strlcpy(G.cfg.mem_dir, G.mem_dir, sizeof(G.cfg.mem_dir));
    G.cfg.accel = PW_QEMU_ACCEL_TCG;
    int rv = pw_qemu_config_resolve(&G.cfg, in_ms(10000), why, sizeof(why), err, sizeof(err));
    if (rv != PW_OK) {
        fprintf(stderr, "test_qemu_vm: resolve: %s\n", err);
        return -1;
    }
    printf("test_qemu_vm: QEMU %s at %s, sandbox %s%s%s, tsc %" PRIu64 " kHz\n",
           G.cfg.qemu_version, G.cfg.qemu_bin,
           G.cfg.sandbox == PW_QEMU_SANDBOX_ON ? "on" : "off", why[0] ? " — " : "", why,
           G.cfg.tsc_khz);
    G.ready = true;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (G.run_dir[0] != '\0') {
        rm_tree(G.run_dir);
        rm_tree(G.mem_dir);
        char top[128];
        snprintf(top, sizeof(top), "/tmp/pwq-%d-snap", (int)getpid());
        rm_tree(top);
    }
    return 0;
}

#define NEED_QEMU()                                                  \
    do {                                                             \
        if (!G.ready) {                                              \
            skip_loudly();                                           \
            if (getenv("PREWARM_REQUIRE_QEMU") != NULL &&            \
                strcmp(getenv("PREWARM_REQUIRE_QEMU"), "1") == 0)    \
                fail_msg("PREWARM_REQUIRE_QEMU=1: %s", G.skip_why);  \
            skip();                                                  \
        }                                                            \
    } while (0)

/* ---- without QEMU: metadata, scan, command line ---- */

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static uint64_t my_start_time(void)
{
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "r");
    assert_non_null(f);
    assert_non_null(fgets(buf, sizeof(buf), f));
    fclose(f);
    char *p = strrchr(buf, ')') + 2;
    for (int field = 3; field < 22; field++)
        p = strchr(p, ' ') + 1;
    return strtoull(p, NULL, 10);
}

static void test_meta_parse(void **state)
{
    (void)state;
    struct pw_qemu_meta m;
    char err[300];
    const char *good =
        "{\"format\":1,\"vm_id\":\"00000000000000ab\",\"kind\":\"restored\",\"function\":\"fn\","
        "\"pid\":123,\"start_time\":456,\"port\":8081,\"mac\":\"52:54:00:00:00:ab\","
        "\"instance\":\"i-1\",\"qmp\":\"/r/ab/qmp.sock\",\"console\":\"/r/ab/console.sock\","
        "\"snapshot\":\"/s/fn\",\"owned\":[],\"created_ms\":1}";
    assert_int_equal(pw_qemu_meta_parse(good, strlen(good), &m, err, sizeof(err)), PW_OK);
    assert_int_equal(m.vm_id, 0xab);
    assert_int_equal(m.kind, PW_QEMU_VM_RESTORED);
    assert_int_equal(m.pid, 123);
    assert_int_equal(m.start_time, 456);
    assert_int_equal(m.port, 8081);
    assert_string_equal(m.instance, "i-1");
    assert_string_equal(m.snapshot_dir, "/s/fn");
    /* Written by older agents without node and shape: -1 and 0. */
    assert_int_equal(m.numa_node, -1);
    assert_int_equal(m.memory_mb, 0);
    assert_int_equal(m.vcpus, 0);
    const char *shaped =
        "{\"format\":1,\"vm_id\":\"00000000000000ab\",\"kind\":\"restored\",\"function\":\"fn\","
        "\"pid\":123,\"start_time\":456,\"port\":8081,\"mac\":\"52:54:00:00:00:ab\","
        "\"qmp\":\"/r/ab/qmp.sock\",\"console\":\"/r/ab/console.sock\",\"created_ms\":1,"
        "\"numa_node\":3,\"memory_mb\":512,\"vcpus\":2}";
    assert_int_equal(pw_qemu_meta_parse(shaped, strlen(shaped), &m, err, sizeof(err)), PW_OK);
    assert_int_equal(m.numa_node, 3);
    assert_int_equal(m.memory_mb, 512);
    assert_int_equal(m.vcpus, 2);

    const struct {
        const char *text;
        const char *why;
    } bad[] = {
        {"", "not a JSON object"},
        {"[1]", "not a JSON object"},
        {"{\"format\":2}", "unknown format 2"},
        {"{\"format\":1,\"vm_id\":\"xyz\"}", "\"vm_id\" is not 16 hex digits"},
        {"{\"format\":1,\"vm_id\":\"00000000000000ab\",\"kind\":\"odd\",\"function\":\"fn\"}",
         "\"kind\" is neither"},
        {"{\"format\":1,\"vm_id\":\"00000000000000ab\",\"kind\":\"golden\",\"function\":\"a b\"}",
         "\"function\" is not a valid name"},
        {"{\"format\":1,\"vm_id\":\"00000000000000ab\",\"kind\":\"golden\",\"function\":\"fn\","
         "\"pid\":-4}",
         "\"pid\" is missing or not an integer"},
        {"{\"format\":1,\"vm_id\":\"00000000000000ab\",\"kind\":\"golden\",\"function\":\"fn\","
         "\"pid\":1,\"start_time\":2.5}",
         "\"start_time\" is missing or not an integer"},
        {"{\"format\":1,\"vm_id\":\"00000000000000ab\",\"kind\":\"golden\",\"function\":\"fn\","
         "\"pid\":1,\"start_time\":2,\"port\":70000}",
         "\"port\" is missing or not an integer in 0..65535"},
        {"{\"format\":1,\"vm_id\":\"00000000000000ab\",\"kind\":\"golden\",\"function\":\"fn\","
         "\"pid\":1,\"start_time\":2,\"port\":1,\"mac\":\"53:54:00:00:00:01\",\"qmp\":\"/q\","
         "\"console\":\"/c\"}",
         "\"mac\" is not a unicast MAC"},
        {"{\"format\":1,\"vm_id\":\"00000000000000ab\",\"kind\":\"golden\",\"function\":\"fn\","
         "\"pid\":1,\"start_time\":2,\"port\":1,\"mac\":\"52:54:00:00:00:01\",\"qmp\":\"q\"}",
         "\"qmp\" is not an absolute path"},
        {"{\"format\":1,\"vm_id\":\"00000000000000ab\",\"kind\":\"golden\",\"function\":\"fn\","
         "\"pid\":1,\"start_time\":2,\"port\":1,\"mac\":\"52:54:00:00:00:01\",\"qmp\":\"/q\","
         "\"console\":\"/c\",\"created_ms\":1,\"numa_node\":-2}",
         "\"numa_node\" is not an integer"},
        {"{\"format\":1,\"vm_id\":\"00000000000000ab\",\"kind\":\"golden\",\"function\":\"fn\","
         "\"pid\":1,\"start_time\":2,\"port\":1,\"mac\":\"52:54:00:00:00:01\",\"qmp\":\"/q\","
         "\"console\":\"/c\",\"created_ms\":1,\"vcpus\":300}",
         "\"vcpus\" is missing or not an integer"},
    };
    for (size_t i = 0; i < PW_ARRAY_LEN(bad); i++) {
        int rv = pw_qemu_meta_parse(bad[i].text, strlen(bad[i].text), &m, err, sizeof(err));
        if (rv != PW_ERR_PARSE || strstr(err, bad[i].why) == NULL)
            fail_msg("case %zu: want \"%s\", got %s \"%s\"", i, bad[i].why, pw_strerror(rv), err);
        assert_int_equal(m.pid, 0);
    }
}

static void test_scan_offline(void **state)
{
    (void)state;
    char dir[] = "/tmp/pwq-scan-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[PATH_MAX], text[1024];

    /* 1: malformed metadata. */
    snprintf(path, sizeof(path), "%s/0000000000000001", dir);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(path, sizeof(path), "%s/0000000000000001/vm.json", dir);
    write_text(path, "{\"format\":1,");
    /* 2: our own PID with another start time: a reused PID. */
    snprintf(path, sizeof(path), "%s/0000000000000002", dir);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(path, sizeof(path), "%s/0000000000000002/vm.json", dir);
    snprintf(text, sizeof(text),
             "{\"format\":1,\"vm_id\":\"0000000000000002\",\"kind\":\"restored\",\"function\":\"fn\","
             "\"pid\":%d,\"start_time\":%" PRIu64 ",\"port\":1,\"mac\":\"52:54:00:00:00:02\","
             "\"instance\":\"\",\"qmp\":\"%s/0000000000000002/qmp.sock\",\"console\":\"/c\","
             "\"snapshot\":\"\",\"owned\":[],\"created_ms\":1}",
             (int)getpid(), my_start_time() + 1, dir);
    write_text(path, text);
    /* 3: our own PID and start time, but not a QEMU of ours. */
    snprintf(path, sizeof(path), "%s/0000000000000003", dir);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(path, sizeof(path), "%s/0000000000000003/vm.json", dir);
    snprintf(text, sizeof(text),
             "{\"format\":1,\"vm_id\":\"0000000000000003\",\"kind\":\"golden\",\"function\":\"fn\","
             "\"pid\":%d,\"start_time\":%" PRIu64 ",\"port\":1,\"mac\":\"52:54:00:00:00:03\","
             "\"qmp\":\"/q\",\"console\":\"/c\",\"owned\":[\"%s/owned-file\"],\"created_ms\":1}",
             (int)getpid(), my_start_time(), dir);
    write_text(path, text);
    snprintf(path, sizeof(path), "%s/owned-file", dir);
    write_text(path, "x");
    /* 4: never started. Not a VM directory: ignored. */
    snprintf(path, sizeof(path), "%s/0000000000000004", dir);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(path, sizeof(path), "%s/0000000000000004/vm.json", dir);
    write_text(path,
               "{\"format\":1,\"vm_id\":\"0000000000000004\",\"kind\":\"golden\",\"function\":\"fn\","
               "\"pid\":0,\"start_time\":0,\"port\":1,\"mac\":\"52:54:00:00:00:04\","
               "\"qmp\":\"/q\",\"console\":\"/c\",\"created_ms\":1}");
    snprintf(path, sizeof(path), "%s/not-a-vm", dir);
    assert_int_equal(mkdir(path, 0755), 0);

    struct pw_qemu_orphan *o = NULL;
    size_t n = 0;
    char err[300];
    assert_int_equal(pw_qemu_scan(dir, &o, &n, err, sizeof(err)), PW_OK);
    assert_int_equal(n, 4);
    assert_int_equal(o[0].meta.vm_id, 1);
    assert_int_equal(o[0].state, PW_QEMU_ORPHAN_BAD);
    assert_non_null(strstr(o[0].why, "vm.json: not a JSON object"));
    assert_int_equal(o[1].state, PW_QEMU_ORPHAN_DEAD);
    assert_non_null(strstr(o[1].why, "the PID was reused"));
    assert_int_equal(o[2].state, PW_QEMU_ORPHAN_DEAD);
    assert_non_null(strstr(o[2].why, "is not prewarm-0000000000000003"));
    assert_int_equal(o[3].state, PW_QEMU_ORPHAN_DEAD);
    assert_non_null(strstr(o[3].why, "never recorded as started"));
    for (size_t i = 0; i < n; i++)
        printf("test_qemu_vm: orphan %s: %s\n", o[i].dir, o[i].why);

    /* Adopting a dead one is refused; cleaning never signals the (reused) PID: we are alive. */
    struct pw_qemu_vm *vm = NULL;
    assert_int_equal(pw_qemu_adopt(&o[1], in_ms(1000), &vm, err, sizeof(err)), PW_ERR_STATE);
    assert_null(vm);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(pw_qemu_orphan_clean(&o[i], in_ms(2000), err, sizeof(err)), PW_OK);
    free(o);
    snprintf(path, sizeof(path), "%s/owned-file", dir);
    assert_int_equal(access(path, F_OK), -1);
    char names[256];
    assert_int_equal(count_entries(dir, names, sizeof(names)), 1);
    assert_string_equal(names, "not-a-vm");
    rm_tree(dir);

    assert_int_equal(pw_qemu_scan("/nonexistent-pw-dir", &o, &n, err, sizeof(err)), PW_ERR_IO);
}

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* Logs over the cap are copied to .1 and truncated; a log QEMU appends to keeps appending at
 * the new end. */
static void test_logs_cap(void **state)
{
    (void)state;
    char dir[] = "/tmp/pwq-logs-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char qlog[PATH_MAX], clog[PATH_MAX], old[PATH_MAX + 2];
    snprintf(qlog, sizeof(qlog), "%s/qemu.log", dir);
    snprintf(clog, sizeof(clog), "%s/console.log", dir);
    int fd = open(qlog, O_WRONLY | O_CREAT | O_APPEND, 0644);
    assert_true(fd >= 0);
    char line[100];
    memset(line, 'q', sizeof(line));
    for (int i = 0; i < 30; i++)
        assert_int_equal(write(fd, line, sizeof(line)), (ssize_t)sizeof(line));
    write_text(clog, "short\n");
    assert_int_equal(pw_qemu_logs_cap(dir, 1000), 1);
    assert_int_equal(file_size(qlog), 0);
    snprintf(old, sizeof(old), "%s.1", qlog);
    assert_int_equal(file_size(old), 3000);
    assert_int_equal(file_size(clog), 6);
    assert_int_equal(write(fd, "next\n", 5), 5); /* the writer's O_APPEND follows */
    assert_int_equal(file_size(qlog), 5);
    close(fd);
    assert_int_equal(pw_qemu_logs_cap(dir, 1000), 0);
    assert_int_equal(pw_qemu_logs_cap("/nonexistent-pw-dir", 10), 0);
    rm_tree(dir);
}

static bool argv_has(char **argv, const char *a, const char *b)
{
    for (char **p = argv; p[0] != NULL; p++)
        if (strcmp(p[0], a) == 0 && (b == NULL || (p[1] != NULL && strcmp(p[1], b) == 0)))
            return true;
    return false;
}

/* value_of returns the argument after flag (the first occurrence). */
static const char *value_of(char **argv, const char *flag)
{
    for (char **p = argv; p[0] != NULL; p++)
        if (strcmp(p[0], flag) == 0)
            return p[1];
    return NULL;
}

static void test_argv(void **state)
{
    (void)state;
    struct pw_qemu_config cfg;
    char err[300];
    assert_int_equal(pw_qemu_config_init(&cfg, "/run/pw", err, sizeof(err)), PW_OK);
    pw_strlcpy(cfg.qemu_bin, "/usr/bin/qemu-system-x86_64", sizeof(cfg.qemu_bin));
    cfg.accel = PW_QEMU_ACCEL_TCG;
    cfg.sandbox = PW_QEMU_SANDBOX_ON;
    struct pw_qemu_snapshot s = {0};
    pw_strlcpy(s.mem_path, "/dev/shm/prewarm-fn-00000000000000aa.mem", sizeof(s.mem_path));
    pw_strlcpy(s.accel, "tcg", sizeof(s.accel));
    pw_strlcpy(s.cpu, "max", sizeof(s.cpu));
    pw_strlcpy(s.machine, "microvm,x-option-roms=off,memory-backend=mem0", sizeof(s.machine));
    pw_strlcpy(s.mac, "52:54:00:00:00:aa", sizeof(s.mac));
    pw_strlcpy(s.kernel, "/img/vmlinux", sizeof(s.kernel));
    pw_strlcpy(s.initrd, "/img/initramfs.cpio.gz", sizeof(s.initrd));
    pw_strlcpy(s.cmdline, "console=ttyS0 tsc_early_khz=2600000", sizeof(s.cmdline));
    s.memory_mb = 128;
    s.vcpus = 1;
    struct pw_qemu_vm vm = {.vm_id = 0xbb, .port = 40001};
    pw_strlcpy(vm.dir, "/run/pw/00000000000000bb", sizeof(vm.dir));
    pw_strlcpy(vm.qmp_path, "/run/pw/00000000000000bb/qmp.sock", sizeof(vm.qmp_path));
    pw_strlcpy(vm.console_path, "/run/pw/00000000000000bb/console.sock", sizeof(vm.console_path));

    char **gold = NULL, **rest = NULL;
    assert_int_equal(pw_qemu_build_argv(&cfg, &s, &vm, true, &gold, err, sizeof(err)), PW_OK);
    assert_int_equal(pw_qemu_build_argv(&cfg, &s, &vm, false, &rest, err, sizeof(err)), PW_OK);
    for (char **p = gold; *p != NULL; p++)
        printf("%s%s", p == gold ? "test_qemu_vm: golden argv:" : " ", *p);
    printf("\n");
    assert_string_equal(gold[0], "/usr/bin/qemu-system-x86_64");
    assert_true(argv_has(gold, "-name", "prewarm-00000000000000bb"));
    assert_true(argv_has(gold, "-nodefaults", NULL));
    assert_true(argv_has(gold, "-no-user-config", NULL));
    assert_true(argv_has(gold, "-display", "none"));
    assert_true(argv_has(gold, "-accel", "tcg"));
    assert_true(argv_has(gold, "-cpu", "max"));
    assert_true(argv_has(gold, "-append", "console=ttyS0 tsc_early_khz=2600000"));
    assert_true(argv_has(gold, "-netdev", "user,id=n0,hostfwd=tcp:127.0.0.1:40001-:8080"));
    assert_true(argv_has(gold, "-device", "virtio-net-device,netdev=n0,mac=52:54:00:00:00:aa"));
    assert_true(argv_has(gold, "-sandbox",
                         "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"));
    assert_false(argv_has(gold, "-incoming", NULL));
    assert_string_equal(value_of(gold, "-object"),
                        "memory-backend-file,id=mem0,size=128M,mem-path=/dev/shm/"
                        "prewarm-fn-00000000000000aa.mem,share=on");
    assert_string_equal(value_of(rest, "-object"),
                        "memory-backend-file,id=mem0,size=128M,mem-path=/dev/shm/"
                        "prewarm-fn-00000000000000aa.mem,share=off");
    assert_true(argv_has(rest, "-incoming", "defer"));
    /* What the migration needs identical is identical. */
    const char *same[] = {"-machine", "-m", "-smp", "-accel", "-cpu", "-device", "-name"};
    for (size_t i = 0; i < PW_ARRAY_LEN(same); i++)
        assert_string_equal(value_of(gold, same[i]), value_of(rest, same[i]));
    pw_qemu_argv_free(gold);
    pw_qemu_argv_free(rest);

    /* A comma in a path would split QEMU's option: refused. */
    pw_strlcpy(s.mem_path, "/dev/shm/a,b.mem", sizeof(s.mem_path));
    assert_int_equal(pw_qemu_build_argv(&cfg, &s, &vm, true, &gold, err, sizeof(err)),
                     PW_ERR_INVAL);
    assert_null(gold);
    assert_non_null(strstr(err, "without commas"));

    enum pw_qemu_accel a;
    assert_int_equal(pw_qemu_accel_parse("kvm", &a), PW_OK);
    assert_int_equal(a, PW_QEMU_ACCEL_KVM);
    assert_int_equal(pw_qemu_accel_parse("xen", &a), PW_ERR_INVAL);
    assert_string_equal(pw_qemu_accel_name(PW_QEMU_ACCEL_AUTO), "auto");
    assert_int_equal(pw_qemu_config_init(&cfg, "/a/very/long/run/directory/path/that/cannot/"
                                               "hold/unix/socket/paths/at/all/x",
                                         err, sizeof(err)),
                     PW_ERR_INVAL);
}

/* write_private_manifest writes a snapshot.json of private RAM (mem_path should be ""). */
static void write_private_manifest(const char *path, const char *state, const char *mem)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f,
            "{\"format\":1,\"ram\":\"private\",\"function\":\"fn\",\"golden_vm_id\":"
            "\"00000000000000aa\",\"mem_path\":\"%s\",\"state_path\":\"%s\",\"accel\":\"tcg\","
            "\"cpu\":\"max\",\"machine\":\"microvm\",\"memory_mb\":128,\"vcpus\":1,\"mac\":"
            "\"52:54:00:00:00:aa\",\"kernel\":\"/img/vmlinux\",\"initrd\":\"/img/initrd\","
            "\"cmdline\":\"console=ttyS0\",\"created_ms\":1}",
            mem, state);
    fclose(f);
}

/* Isolation: private RAM on the command line, the image passed as descriptors, and the RAM
 * mode in the manifest. */
static void test_private_ram(void **state)
{
    (void)state;
    struct pw_qemu_config cfg;
    char err[300];
    assert_int_equal(pw_qemu_config_init(&cfg, "/run/pw", err, sizeof(err)), PW_OK);
    assert_int_equal(cfg.ram, PW_QEMU_RAM_FILE);
    pw_strlcpy(cfg.qemu_bin, "/usr/bin/qemu-system-x86_64", sizeof(cfg.qemu_bin));
    cfg.accel = PW_QEMU_ACCEL_TCG;
    cfg.sandbox = PW_QEMU_SANDBOX_ON;
    cfg.ram = PW_QEMU_RAM_PRIVATE;
    struct pw_qemu_snapshot s = {.ram = PW_QEMU_RAM_PRIVATE, .memory_mb = 128, .vcpus = 1};
    pw_strlcpy(s.accel, "tcg", sizeof(s.accel));
    pw_strlcpy(s.cpu, "max", sizeof(s.cpu));
    pw_strlcpy(s.machine, "microvm,memory-backend=mem0", sizeof(s.machine));
    pw_strlcpy(s.mac, "52:54:00:00:00:aa", sizeof(s.mac));
    pw_strlcpy(s.kernel, "/img/vmlinux", sizeof(s.kernel));
    pw_strlcpy(s.initrd, "/img/initramfs.cpio.gz", sizeof(s.initrd));
    pw_strlcpy(s.cmdline, "console=ttyS0", sizeof(s.cmdline));
    struct pw_qemu_vm vm = {.vm_id = 0xbb, .port = 40001, .uid = 62000};
    pw_strlcpy(vm.dir, "/run/pw/00000000000000bb", sizeof(vm.dir));
    pw_strlcpy(vm.qmp_path, "/run/pw/00000000000000bb/qmp.sock", sizeof(vm.qmp_path));
    pw_strlcpy(vm.console_path, "/run/pw/00000000000000bb/console.sock", sizeof(vm.console_path));
    char **gold = NULL, **rest = NULL;
    assert_int_equal(pw_qemu_build_argv(&cfg, &s, &vm, true, &gold, err, sizeof(err)), PW_OK);
    assert_int_equal(pw_qemu_build_argv(&cfg, &s, &vm, false, &rest, err, sizeof(err)), PW_OK);
    assert_string_equal(value_of(gold, "-object"), "memory-backend-ram,id=mem0,size=128M");
    assert_string_equal(value_of(rest, "-object"), "memory-backend-ram,id=mem0,size=128M");
    assert_string_equal(value_of(gold, "-kernel"), "/proc/self/fd/3");
    assert_string_equal(value_of(gold, "-initrd"), "/proc/self/fd/4");
    assert_true(argv_has(rest, "-sandbox",
                         "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"));
    pw_qemu_argv_free(gold);
    pw_qemu_argv_free(rest);

    enum pw_qemu_ram r;
    assert_int_equal(pw_qemu_ram_parse("private", &r), PW_OK);
    assert_int_equal(r, PW_QEMU_RAM_PRIVATE);
    assert_int_equal(pw_qemu_ram_parse("shared", &r), PW_ERR_INVAL);
    assert_string_equal(pw_qemu_ram_name(PW_QEMU_RAM_FILE), "file");

    /* The manifest says "ram": "private" and names no RAM file; loading needs none. */
    char dir[] = "/tmp/pw-test-privram-XXXXXX";
    assert_non_null(mkdtemp(dir));
    pw_strlcpy(s.function, "fn", sizeof(s.function));
    s.golden_vm_id = 0xaa;
    snprintf(s.state_path, sizeof(s.state_path), "%s/state.bin", dir);
    FILE *f = fopen(s.state_path, "w");
    assert_non_null(f);
    fputs("state", f);
    fclose(f);
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/snapshot.json", dir);
    write_private_manifest(path, s.state_path, "");
    struct pw_qemu_snapshot got;
    assert_int_equal(pw_qemu_snapshot_load(dir, &got, err, sizeof(err)), PW_OK);
    assert_int_equal(got.ram, PW_QEMU_RAM_PRIVATE);
    assert_string_equal(got.mem_path, "");
    /* A private snapshot that names a RAM file is malformed. */
    write_private_manifest(path, s.state_path, "/dev/shm/x.mem");
    assert_int_equal(pw_qemu_snapshot_load(dir, &got, err, sizeof(err)), PW_ERR_PARSE);
    assert_non_null(strstr(err, "mem_path"));
    /* A restore refuses a snapshot of the other RAM mode. */
    pw_strlcpy(got.state_path, s.state_path, sizeof(got.state_path));
    cfg.ram = PW_QEMU_RAM_FILE;
    struct pw_qemu_vm_spec spec = {.vm_id = 0xcc, .function = "fn", .numa_node = -1};
    struct pw_qemu_vm *none = NULL;
    assert_int_equal(pw_qemu_restore(&cfg, &s, &spec, "x", 0, pw_now_mono_ms() + 1000, &none,
                                     NULL, err, sizeof(err)),
                     PW_ERR_STATE);
    assert_null(none);
    assert_non_null(strstr(err, "private RAM"));
    unlink(path);
    unlink(s.state_path);
    rmdir(dir);
}

/* ---- with QEMU ---- */

static void test_golden(void **state)
{
    (void)state;
    NEED_QEMU();
    struct pw_qemu_guest g = {.kernel = G.kernel, .initrd = G.initrd, .memory_mb = 128, .vcpus = 1,
                              .image = G.image, .image_hash = "abc123"};
    struct pw_qemu_vm_spec spec = {.vm_id = vm_id(0x100), .function = FN};
    struct pw_qemu_times t;
    char err[600];
    int rv = pw_qemu_golden(&G.cfg, &g, &spec, G.snap_dir, in_ms(90000), &G.snap, &t, err,
                            sizeof(err));
    if (rv != PW_OK)
        fail_msg("golden: %s: %s", pw_strerror(rv), err);
    G.have_snap = true;
    printf("test_qemu_vm: MEASURED golden boot: qmp %.1f ms, ready (boot) %.1f ms, "
           "snapshot %.1f ms\n",
           t.qmp_ms, t.ready_ms, t.snapshot_ms);
    assert_true(t.ready_ms > 0 && t.snapshot_ms > 0);

    /* The snapshot: a manifest and a state file; the RAM file in mem_dir; nothing running. */
    struct pw_qemu_snapshot s;
    assert_int_equal(pw_qemu_snapshot_load(G.snap_dir, &s, err, sizeof(err)), PW_OK);
    assert_string_equal(s.function, FN);
    assert_string_equal(s.accel, "tcg");
    assert_string_equal(s.mem_path, G.snap.mem_path);
    assert_string_equal(s.image, G.image);
    assert_string_equal(s.image_hash, "abc123");
    struct stat st;
    assert_int_equal(stat(s.state_path, &st), 0);
    printf("test_qemu_vm: state file %lld bytes, RAM file %s\n", (long long)st.st_size,
           s.mem_path);
    char names[512];
    assert_int_equal(count_entries(G.snap_dir, names, sizeof(names)), 2);
    assert_int_equal(count_entries(G.mem_dir, names, sizeof(names)), 1);
    assert_int_equal(count_entries(G.run_dir, names, sizeof(names)), 0);
    assert_false(marker_running(spec.vm_id));
}

static void test_restore(void **state)
{
    (void)state;
    NEED_QEMU();
    if (!G.have_snap)
        fail_msg("no snapshot from test_golden");
    char err[600];
    struct pw_qemu_vm *vm[2] = {NULL, NULL};
    const char *inst[2] = {"inst-a", "inst-b"};
    pid_t pids[2];
    for (int i = 0; i < 2; i++) {
        struct pw_qemu_vm_spec spec = {.vm_id = vm_id(0x200 + (unsigned)i), .function = FN};
        struct pw_qemu_times t;
        int rv = pw_qemu_restore(&G.cfg, &G.snap, &spec, inst[i], PW_QEMU_PROBE_HTTP,
                                 in_ms(30000), &vm[i], &t, err, sizeof(err));
        if (rv != PW_OK)
            fail_msg("restore %d: %s: %s", i, pw_strerror(rv), err);
        printf("test_qemu_vm: MEASURED restore %d: qmp %.1f ms, cont (restore) %.1f ms, "
               "identity %.1f ms, first HTTP answer %.1f ms\n",
               i, t.qmp_ms, t.cont_ms, t.id_ms, t.http_ms);
        assert_true(t.cont_ms > 0 && t.id_ms >= t.cont_ms && t.http_ms >= t.id_ms);
        pids[i] = vm[i]->pid;
        assert_true(pw_qemu_alive(vm[i]));
    }
    assert_int_not_equal(vm[0]->port, vm[1]->port);

    for (int i = 0; i < 2; i++) {
        struct http_answer a;
        assert_int_equal(http_get(vm[i]->port, &a), 0);
        printf("test_qemu_vm: GET 127.0.0.1:%u -> %d, instance %s, body \"%s\"\n",
               (unsigned)vm[i]->port, a.status, a.instance, a.body);
        assert_int_equal(a.status, 200);
        assert_string_equal(a.body, BODY);
        assert_string_equal(a.function, FN);
        assert_string_equal(a.instance, inst[i]);
    }

    /* As after an agent crash: forget VM 1 without stopping it, then find and adopt it. */
    pw_qemu_vm_free(vm[1]);
    vm[1] = NULL;
    struct pw_qemu_orphan *o = NULL;
    size_t n = 0;
    assert_int_equal(pw_qemu_scan(G.run_dir, &o, &n, err, sizeof(err)), PW_OK);
    assert_int_equal(n, 2);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(o[i].state, PW_QEMU_ORPHAN_RUNNING);
        assert_int_equal(o[i].meta.pid, pids[i]);
        assert_string_equal(o[i].meta.instance, inst[i]);
        assert_string_equal(o[i].meta.function, FN);
        assert_int_equal(o[i].meta.numa_node, 0);
        assert_int_equal(o[i].meta.memory_mb, 128);
        assert_int_equal(o[i].meta.vcpus, 1);
    }
    struct pw_qemu_vm *adopted = NULL;
    int rv = pw_qemu_adopt(&o[1], in_ms(5000), &adopted, err, sizeof(err));
    if (rv != PW_OK)
        fail_msg("adopt: %s", err);
    free(o);
    assert_false(adopted->is_child);
    assert_int_equal(adopted->pid, pids[1]);
    struct http_answer a;
    assert_int_equal(http_get(adopted->port, &a), 0);
    assert_string_equal(a.instance, inst[1]);

    /* Destroy both: nothing may remain but the snapshot. */
    int64_t t0 = pw_now_mono_ms();
    rv = pw_qemu_destroy(vm[0], in_ms(5000), 0, err, sizeof(err));
    if (rv != PW_OK)
        fail_msg("destroy: %s", err);
    printf("test_qemu_vm: MEASURED destroy: %" PRId64 " ms\n", pw_now_mono_ms() - t0);
    rv = pw_qemu_destroy(adopted, in_ms(5000), 0, err, sizeof(err));
    if (rv != PW_OK)
        fail_msg("destroy adopted: %s", err);
    pw_qemu_vm_free(vm[0]);
    pw_qemu_vm_free(adopted);
    for (int i = 0; i < 2; i++) {
        int st;
        assert_int_equal(waitpid(pids[i], &st, WNOHANG), -1); /* reaped already */
        assert_process_gone(pids[i]);
    }
    char names[512];
    assert_int_equal(count_entries(G.run_dir, names, sizeof(names)), 0);
    assert_int_equal(count_entries(G.mem_dir, names, sizeof(names)), 1);
    assert_int_equal(count_entries(G.snap_dir, names, sizeof(names)), 2);
    assert_false(marker_running(vm_id(0x200)));
    assert_false(marker_running(vm_id(0x201)));

    /* A snapshot for another accelerator is refused before anything starts. */
    struct pw_qemu_config kvm = G.cfg;
    kvm.accel = PW_QEMU_ACCEL_KVM;
    struct pw_qemu_vm_spec spec = {.vm_id = vm_id(0x2ff), .function = FN};
    struct pw_qemu_vm *none = NULL;
    assert_int_equal(pw_qemu_restore(&kvm, &G.snap, &spec, "x", 0, in_ms(1000), &none, NULL, err,
                                     sizeof(err)),
                     PW_ERR_STATE);
    assert_null(none);
    assert_int_equal(count_entries(G.run_dir, names, sizeof(names)), 0);
}

static void test_boot_deadline(void **state)
{
    (void)state;
    NEED_QEMU();
    char empty[128];
    snprintf(empty, sizeof(empty), "%s/empty.cpio.gz", G.run_dir);
    write_text(empty, "");
    struct pw_qemu_guest g = {.kernel = G.kernel, .initrd = empty};
    struct pw_qemu_vm_spec spec = {.vm_id = vm_id(0x300), .function = FN};
    struct pw_qemu_vm *vm = NULL;
    struct pw_qemu_times t;
    char err[600];
    int64_t t0 = pw_now_mono_ms();
    int rv = pw_qemu_boot(&G.cfg, &g, &spec, t0 + 4000, &vm, &t, err, sizeof(err));
    int64_t took = pw_now_mono_ms() - t0;
    printf("test_qemu_vm: broken initrd: %s after %" PRId64 " ms: %s\n", pw_strerror(rv), took, err);
    assert_int_equal(rv, PW_ERR_TIMEOUT);
    assert_null(vm);
    assert_true(took >= 4000);
    assert_true(took < 12000);
    assert_non_null(strstr(err, "PREWARM-READY " FN));
    assert_false(marker_running(spec.vm_id));

    /* Cancelled (here before it starts): it gives up at once, as at its deadline. */
    atomic_int cancel;
    atomic_init(&cancel, 1);
    spec.cancel = &cancel;
    t0 = pw_now_mono_ms();
    rv = pw_qemu_boot(&G.cfg, &g, &spec, t0 + 60000, &vm, &t, err, sizeof(err));
    took = pw_now_mono_ms() - t0;
    printf("test_qemu_vm: cancelled boot: %s after %" PRId64 " ms: %s\n", pw_strerror(rv), took,
           err);
    assert_int_equal(rv, PW_ERR_TIMEOUT);
    assert_non_null(strstr(err, "cancelled"));
    assert_true(took < 5000);
    assert_false(marker_running(spec.vm_id));
    spec.cancel = NULL;
    unlink(empty);
    char names[512];
    assert_int_equal(count_entries(G.run_dir, names, sizeof(names)), 0);
    assert_int_equal(count_entries(G.mem_dir, names, sizeof(names)), 1);

    /* A kernel that does not exist fails before anything starts. */
    g.kernel = "/nonexistent/vmlinux";
    assert_int_equal(pw_qemu_boot(&G.cfg, &g, &spec, in_ms(1000), &vm, NULL, err, sizeof(err)),
                     PW_ERR_INVAL);
    assert_non_null(strstr(err, "/nonexistent/vmlinux"));

    /* QEMU that exits at once (a port already taken by another VM's hostfwd is one way):
     * reported with QEMU's own words, long before the deadline. */
    g.kernel = G.kernel;
    g.initrd = G.initrd;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof(sa);
    assert_int_equal(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(s, 1), 0);
    assert_int_equal(getsockname(s, (struct sockaddr *)&sa, &sl), 0);
    spec.port = ntohs(sa.sin_port);
    t0 = pw_now_mono_ms();
    rv = pw_qemu_boot(&G.cfg, &g, &spec, t0 + 20000, &vm, NULL, err, sizeof(err));
    took = pw_now_mono_ms() - t0;
    close(s);
    printf("test_qemu_vm: taken port: %s after %" PRId64 " ms: %s\n", pw_strerror(rv), took, err);
    assert_int_equal(rv, PW_ERR_UNAVAIL);
    assert_true(took < 10000);
    assert_non_null(strstr(err, "QEMU exited"));
    assert_int_equal(count_entries(G.run_dir, names, sizeof(names)), 0);
    assert_int_equal(count_entries(G.mem_dir, names, sizeof(names)), 1);
}

static void test_accel_probe(void **state)
{
    (void)state;
    NEED_QEMU();
    struct pw_qemu_guest g = {.kernel = G.kernel, .initrd = G.initrd};
    enum pw_qemu_accel a = PW_QEMU_ACCEL_AUTO;
    char why[600];
    int64_t t0 = pw_now_mono_ms();
    int rv = pw_qemu_probe_accel(&G.cfg, &g, FN, 0, 5000, &a, why, sizeof(why));
    printf("test_qemu_vm: accelerator probe (%" PRId64 " ms): %s\n", pw_now_mono_ms() - t0, why);
    assert_int_equal(rv, PW_OK);
    assert_true(a == PW_QEMU_ACCEL_KVM || a == PW_QEMU_ACCEL_TCG);
    assert_true(why[0] != '\0');
    char names[512];
    assert_int_equal(count_entries(G.run_dir, names, sizeof(names)), 0);
    assert_int_equal(count_entries(G.mem_dir, names, sizeof(names)), 1);
}

static void test_resnapshot_and_delete(void **state)
{
    (void)state;
    NEED_QEMU();
    if (!G.have_snap)
        fail_msg("no snapshot from test_golden");
    char err[600], names[512];

    /* A new golden snapshot in the same directory replaces the old one and its files. */
    struct pw_qemu_guest g = {.kernel = G.kernel, .initrd = G.initrd};
    struct pw_qemu_vm_spec spec = {.vm_id = vm_id(0x101), .function = FN};
    struct pw_qemu_snapshot s2;
    struct pw_qemu_times t;
    int rv = pw_qemu_golden(&G.cfg, &g, &spec, G.snap_dir, in_ms(90000), &s2, &t, err,
                            sizeof(err));
    if (rv != PW_OK)
        fail_msg("second golden: %s: %s", pw_strerror(rv), err);
    printf("test_qemu_vm: MEASURED second golden boot: ready %.1f ms, snapshot %.1f ms\n",
           t.ready_ms, t.snapshot_ms);
    assert_string_not_equal(s2.mem_path, G.snap.mem_path);
    assert_int_equal(access(G.snap.mem_path, F_OK), -1);
    assert_int_equal(access(G.snap.state_path, F_OK), -1);
    assert_int_equal(count_entries(G.snap_dir, names, sizeof(names)), 2);
    assert_int_equal(count_entries(G.mem_dir, names, sizeof(names)), 1);
    struct pw_qemu_snapshot loaded;
    assert_int_equal(pw_qemu_snapshot_load(G.snap_dir, &loaded, err, sizeof(err)), PW_OK);
    assert_int_equal(loaded.golden_vm_id, vm_id(0x101));
    G.snap = loaded;

    assert_int_equal(pw_qemu_snapshot_delete(&G.snap, err, sizeof(err)), PW_OK);
    G.have_snap = false;
    assert_int_equal(count_entries(G.mem_dir, names, sizeof(names)), 0);
    assert_int_equal(count_entries(G.snap_dir, names, sizeof(names)), -1);
    struct pw_qemu_snapshot s;
    assert_int_equal(pw_qemu_snapshot_load(G.snap_dir, &s, err, sizeof(err)), PW_ERR_NOTFOUND);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_meta_parse),
        cmocka_unit_test(test_scan_offline),
        cmocka_unit_test(test_logs_cap),
        cmocka_unit_test(test_argv),
        cmocka_unit_test(test_private_ram),
        cmocka_unit_test(test_golden),
        cmocka_unit_test(test_restore),
        cmocka_unit_test(test_boot_deadline),
        cmocka_unit_test(test_accel_probe),
        cmocka_unit_test(test_resnapshot_and_delete),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
