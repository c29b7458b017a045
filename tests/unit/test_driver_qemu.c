/* test_driver_qemu.c — the qemu driver: its configuration keys and directories, guest image
 * validation (image.json), and the driver itself on a libuv loop against real QEMU (TCG) and a
 * real guest image: golden snapshot on command, restores, destroy in every state, a bad image,
 * the stop that leaves nothing behind, and VMs kept at a stop and adopted by the next start.
 *
 * The QEMU part needs qemu-system-x86_64 and agents/guest/build-guest.sh; without them it is
 * skipped, loudly, and fails instead when PREWARM_REQUIRE_QEMU=1. */
#include "pw/agent_config.h"
#include "pw/driver.h"
#include "pw/error.h"
#include "pw/log.h"
#include "pw/qemu_vm.h"
#include "pw/topology.h"
#include "pw/util.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#define BUILDER PW_SOURCE_DIR "/agents/guest/build-guest.sh"
#define FN "pwtest-static"
#define BODY "hello from prewarm"

/* ---- configuration ---- */

static void test_config_keys(void **state)
{
    (void)state;
    struct pw_agent_config c;
    char err[300];
    pw_agent_config_init(&c);
    assert_string_equal(c.qemu_accel, "auto");
    assert_string_equal(c.qemu_bin, "qemu-system-x86_64");
    assert_int_equal(c.qemu_boot_timeout_ms, 60000);
    assert_int_equal(c.qemu_restore_timeout_ms, 30000);
    assert_int_equal(c.qemu_probe_timeout_ms, 3000);
    assert_int_equal(c.qemu_jobs, 4);
    assert_int_equal(c.qemu_keep_vms, 0);
    assert_int_equal(c.qemu_log_max_kb, 1024);

    assert_int_equal(pw_agent_config_set(&c, "driver", "qemu", err, sizeof(err)), PW_OK);
    assert_int_equal(pw_agent_config_set(&c, "qemu_accel", "tcg", err, sizeof(err)), PW_OK);
    assert_string_equal(c.qemu_accel, "tcg");
    assert_int_equal(pw_agent_config_set(&c, "qemu_accel", "xen", err, sizeof(err)),
                     PW_ERR_INVAL);
    assert_non_null(strstr(err, "auto, kvm or tcg"));
    assert_int_equal(pw_agent_config_set(&c, "qemu_restore_timeout_ms", "2s", err, sizeof(err)),
                     PW_OK);
    assert_int_equal(c.qemu_restore_timeout_ms, 2000);
    assert_int_equal(pw_agent_config_set(&c, "qemu_boot_timeout_ms", "10", err, sizeof(err)),
                     PW_ERR_INVAL);
    assert_int_equal(pw_agent_config_set(&c, "qemu_jobs", "0", err, sizeof(err)), PW_ERR_INVAL);
    assert_int_equal(pw_agent_config_set(&c, "qemu_jobs", "8", err, sizeof(err)), PW_OK);
    assert_int_equal(c.qemu_jobs, 8);
    assert_int_equal(pw_agent_config_set(&c, "qemu_keep_vms", "yes", err, sizeof(err)), PW_OK);
    assert_int_equal(c.qemu_keep_vms, 1);
    assert_int_equal(pw_agent_config_set(&c, "qemu_run_dir", "relative/dir", err, sizeof(err)),
                     PW_ERR_INVAL);
    assert_int_equal(pw_agent_config_set(&c, "qemu_mem_dir", "/dev/shm/a,b", err, sizeof(err)),
                     PW_ERR_INVAL);
    assert_non_null(strstr(err, "without commas"));
    /* The snapshot directory never reaches QEMU's options: a comma is fine there. */
    assert_int_equal(pw_agent_config_set(&c, "qemu_snapshot_dir", "/var/a,b", err, sizeof(err)),
                     PW_OK);
    assert_int_equal(pw_agent_config_set(&c, "qemu_run_dir",
                                         "/a/very/long/run/directory/that/cannot/hold/the/unix/"
                                         "sockets/of/one/vm/at/all/x",
                                         err, sizeof(err)),
                     PW_ERR_INVAL);
    assert_non_null(strstr(err, "unix sockets"));
    assert_int_equal(pw_agent_config_set(&c, "qemu_nonsense", "1", err, sizeof(err)),
                     PW_ERR_INVAL);
    assert_non_null(strstr(err, "unknown key"));

    /* A JSON file takes the same keys; a bad one changes nothing. */
    char path[] = "/tmp/pw-drvq-cfg-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *json = "{\"id\":\"h1\",\"driver\":\"qemu\",\"qemu_accel\":\"kvm\","
                       "\"qemu_keep_vms\":true,\"qemu_stop_timeout_ms\":500,"
                       "\"qemu_run_dir\":\"/run/pw-test\",\"qemu_log_max_kb\":64}";
    assert_int_equal(write(fd, json, strlen(json)), (ssize_t)strlen(json));
    close(fd);
    pw_agent_config_init(&c);
    assert_int_equal(pw_agent_config_load_file(&c, path, err, sizeof(err)), PW_OK);
    assert_string_equal(c.driver, "qemu");
    assert_string_equal(c.qemu_accel, "kvm");
    assert_int_equal(c.qemu_keep_vms, 1);
    assert_int_equal(c.qemu_stop_timeout_ms, 500);
    assert_int_equal(c.qemu_log_max_kb, 64);
    assert_string_equal(c.qemu_run_dir, "/run/pw-test");
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs("{\"qemu_accel\":\"tcg\",\"qemu_jobs\":1000}", fp);
    fclose(fp);
    assert_int_equal(pw_agent_config_load_file(&c, path, err, sizeof(err)), PW_ERR_INVAL);
    assert_string_equal(c.qemu_accel, "kvm");
    unlink(path);
}

static void test_dirs(void **state)
{
    (void)state;
    struct pw_agent_config c;
    char err[300], run[PW_AGENT_PATH_MAX], snap[PW_AGENT_PATH_MAX], mem[PW_AGENT_PATH_MAX];
    pw_agent_config_init(&c);
    assert_int_equal(pw_agent_config_set(&c, "id", "host-7", err, sizeof(err)), PW_OK);
    assert_int_equal(pw_agent_config_qemu_dirs(&c, run, snap, mem, err, sizeof(err)), PW_OK);
    printf("test_driver_qemu: default directories: run %s, snapshots %s, RAM %s\n", run, snap,
           mem);
    if (geteuid() == 0)
        assert_string_equal(run, "/run/prewarm/host-7");
    assert_true(strstr(run, "/host-7") != NULL);
    char want[PW_AGENT_PATH_MAX + 16];
    snprintf(want, sizeof(want), "%s/snapshots", run);
    assert_string_equal(snap, want);
    assert_string_equal(mem, "/dev/shm/prewarm-host-7");

    assert_int_equal(pw_agent_config_set(&c, "qemu_run_dir", "/srv/r", err, sizeof(err)), PW_OK);
    assert_int_equal(pw_agent_config_set(&c, "qemu_snapshot_dir", "/srv/s", err, sizeof(err)),
                     PW_OK);
    assert_int_equal(pw_agent_config_set(&c, "qemu_mem_dir", "/dev/shm/m", err, sizeof(err)),
                     PW_OK);
    assert_int_equal(pw_agent_config_qemu_dirs(&c, run, snap, mem, err, sizeof(err)), PW_OK);
    assert_string_equal(run, "/srv/r");
    assert_string_equal(snap, "/srv/s");
    assert_string_equal(mem, "/dev/shm/m");

    /* A long agent id makes the default run directory too long for the sockets. */
    pw_agent_config_init(&c);
    assert_int_equal(pw_agent_config_set(&c, "id",
                                         "a-very-long-host-name-of-sixty-three-"
                                         "characters-xxxxxxxxxxxxxx",
                                         err, sizeof(err)),
                     PW_OK);
    assert_int_equal(pw_agent_config_qemu_dirs(&c, run, snap, mem, err, sizeof(err)),
                     PW_ERR_INVAL);
    assert_non_null(strstr(err, "--qemu-run-dir"));
}

/* ---- guest images ---- */

static void test_image_parse(void **state)
{
    (void)state;
    struct pw_qemu_image img;
    char err[300];
    const char *good =
        "{\"name\":\"hello-b\",\"kernel\":\"vmlinux\",\"initrd\":\"initramfs.cpio.gz\","
        "\"handler\":{\"kind\":\"command\",\"command\":\"echo hi\"},\"hash\":\"4abe\","
        "\"ready_line\":\"PREWARM-READY hello-b\",\"http_port\":8080,"
        "\"cmdline\":\"console=ttyS0 quiet\"}";
    assert_int_equal(pw_qemu_image_parse("/img/b", good, strlen(good), &img, err, sizeof(err)),
                     PW_OK);
    assert_string_equal(img.name, "hello-b");
    assert_string_equal(img.kernel, "/img/b/vmlinux");
    assert_string_equal(img.initrd, "/img/b/initramfs.cpio.gz");
    assert_string_equal(img.cmdline, "console=ttyS0 quiet");
    assert_string_equal(img.hash, "4abe");
    assert_string_equal(img.dir, "/img/b");

    const char *minimal = "{\"name\":\"m\",\"kernel\":\"/k/vmlinux\",\"initrd\":\"sub/i.gz\"}";
    assert_int_equal(pw_qemu_image_parse("/img", minimal, strlen(minimal), &img, err,
                                         sizeof(err)),
                     PW_OK);
    assert_string_equal(img.kernel, "/k/vmlinux");
    assert_string_equal(img.initrd, "/img/sub/i.gz");
    assert_string_equal(img.cmdline, PW_QEMU_DEFAULT_CMDLINE);

    static const struct {
        const char *text, *why;
    } bad[] = {
        {"[1]", "not a JSON object"},
        {"{\"kernel\":\"k\",\"initrd\":\"i\"}", "\"name\""},
        {"{\"name\":\"a b\",\"kernel\":\"k\",\"initrd\":\"i\"}", "not a valid function name"},
        {"{\"name\":\"a\",\"initrd\":\"i\"}", "\"kernel\""},
        {"{\"name\":\"a\",\"kernel\":\"../k\",\"initrd\":\"i\"}", "\"..\""},
        {"{\"name\":\"a\",\"kernel\":\"k\",\"initrd\":\"x/../../i\"}", "\"..\""},
        {"{\"name\":\"a\",\"kernel\":\"k\",\"initrd\":\"\"}", "empty"},
        {"{\"name\":\"a\",\"kernel\":\"k\",\"initrd\":\"i\",\"http_port\":80}", "http_port"},
        {"{\"name\":\"a\",\"kernel\":\"k\",\"initrd\":\"i\",\"ready_line\":\"READY a\"}",
         "ready_line"},
        {"{\"name\":\"a\",\"kernel\":\"k\",\"initrd\":\"i\",\"cmdline\":\"a\\nb\"}", "cmdline"},
    };
    for (size_t i = 0; i < PW_ARRAY_LEN(bad); i++) {
        int rv = pw_qemu_image_parse("/img", bad[i].text, strlen(bad[i].text), &img, err,
                                     sizeof(err));
        if (rv != PW_ERR_PARSE || strstr(err, bad[i].why) == NULL)
            fail_msg("%s: rv %d, error \"%s\" (wanted \"%s\")", bad[i].text, rv, err,
                     bad[i].why);
        assert_string_equal(img.name, "");
    }
    /* A name with dots in ".." is not a path component: fine. */
    const char *dots = "{\"name\":\"a\",\"kernel\":\"k..x\",\"initrd\":\"i\"}";
    assert_int_equal(pw_qemu_image_parse("/img", dots, strlen(dots), &img, err, sizeof(err)),
                     PW_OK);
    assert_int_equal(pw_qemu_image_parse("img", dots, strlen(dots), &img, err, sizeof(err)),
                     PW_ERR_PARSE);
}

static void write_file(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

static void test_image_load(void **state)
{
    (void)state;
    char dir[] = "/tmp/pw-drvq-img-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[PATH_MAX], err[400];
    struct pw_qemu_image img;
    assert_int_equal(pw_qemu_image_load(dir, &img, err, sizeof(err)), PW_ERR_NOTFOUND);
    assert_non_null(strstr(err, "image.json"));
    snprintf(path, sizeof(path), "%s/image.json", dir);
    write_file(path, "{\"name\":\"x\",\"kernel\":\"vmlinux\",\"initrd\":\"initrd.gz\"}");
    assert_int_equal(pw_qemu_image_load(dir, &img, err, sizeof(err)), PW_ERR_NOTFOUND);
    assert_non_null(strstr(err, "vmlinux"));
    snprintf(path, sizeof(path), "%s/vmlinux", dir);
    write_file(path, "k");
    snprintf(path, sizeof(path), "%s/initrd.gz", dir);
    assert_int_equal(mkdir(path, 0755), 0); /* a directory is not an initrd */
    assert_int_equal(pw_qemu_image_load(dir, &img, err, sizeof(err)), PW_ERR_NOTFOUND);
    assert_non_null(strstr(err, "not a regular file"));
    rmdir(path);
    write_file(path, "i");
    assert_int_equal(pw_qemu_image_load(dir, &img, err, sizeof(err)), PW_OK);
    assert_string_equal(img.name, "x");
    assert_int_equal(pw_qemu_image_load("relative", &img, err, sizeof(err)), PW_ERR_INVAL);
    snprintf(path, sizeof(path), "%s/image.json", dir);
    write_file(path, "{\"name\":");
    assert_int_equal(pw_qemu_image_load(dir, &img, err, sizeof(err)), PW_ERR_PARSE);
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

/* ---- the driver on a loop, with QEMU ---- */

static struct {
    bool ready;
    char skip_why[512];
    char image[PATH_MAX];
    char run_dir[64];
    char mem_dir[64];
    struct pw_topology topo;
} G;

struct events {
    size_t n;
    struct {
        uint64_t vm_id;
        enum pw_avm_state state;
        int32_t restore_ms;
        char address[64];
        char error[PW_ERRMSG_MAX];
    } ev[64];
};

static void on_event(struct pw_driver *d, const struct pw_driver_event *ev, void *arg)
{
    (void)d;
    struct events *e = arg;
    assert_true(e->n < PW_ARRAY_LEN(e->ev));
    e->ev[e->n].vm_id = ev->vm_id;
    e->ev[e->n].state = ev->state;
    e->ev[e->n].restore_ms = ev->restore_ms;
    pw_strlcpy(e->ev[e->n].address, ev->address != NULL ? ev->address : "",
               sizeof(e->ev[e->n].address));
    pw_strlcpy(e->ev[e->n].error, ev->error != NULL ? ev->error : "", sizeof(e->ev[e->n].error));
    e->n++;
}

static int find_ev(const struct events *e, uint64_t vm_id, enum pw_avm_state st)
{
    for (size_t i = 0; i < e->n; i++)
        if (e->ev[i].vm_id == vm_id && e->ev[i].state == st)
            return (int)i;
    return -1;
}

static void on_wake(uv_timer_t *t) { (void)t; }

/* run_until runs the loop until pred holds or timeout_ms pass (then fails). */
static void run_until(uv_loop_t *loop, int (*pred)(void *), void *arg, int64_t timeout_ms,
                      const char *what)
{
    uv_timer_t wake;
    uv_timer_init(loop, &wake);
    uv_timer_start(&wake, on_wake, 20, 20);
    int64_t deadline = pw_now_mono_ms() + timeout_ms;
    while (!pred(arg) && pw_now_mono_ms() < deadline)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&wake, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    if (!pred(arg))
        fail_msg("timed out after %" PRId64 " ms waiting for %s", timeout_ms, what);
}

struct want {
    struct events *e;
    uint64_t vm_id;
    enum pw_avm_state state;
    struct pw_driver *d;
    size_t nsnaps;
};

static int has_ev(void *arg)
{
    struct want *w = arg;
    return find_ev(w->e, w->vm_id, w->state) >= 0;
}

static int has_snaps(void *arg)
{
    struct want *w = arg;
    char names[8][PW_NAME_MAX];
    return w->d->ops->snapshots(w->d, names, 8) == w->nsnaps;
}

static bool in_path(const char *name)
{
    const char *path = getenv("PATH");
    char buf[PATH_MAX];
    while (path != NULL && *path != '\0') {
        size_t n = strcspn(path, ":");
        snprintf(buf, sizeof(buf), "%.*s/%s", (int)n, path, name);
        if (n > 0 && access(buf, X_OK) == 0)
            return true;
        path += n + (path[n] == ':');
    }
    return false;
}

static int count_entries(const char *dir, const char *suffix)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name), sl = strlen(suffix);
        if (e->d_name[0] != '.' && l >= sl && strcmp(e->d_name + l - sl, suffix) == 0)
            n++;
    }
    closedir(d);
    return n;
}

/* vm_dirs counts VM directories (16 hex digits) in the run dir. */
static int vm_dirs(void)
{
    DIR *d = opendir(G.run_dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += strlen(e->d_name) == 16 && strspn(e->d_name, "0123456789abcdef") == 16;
    closedir(d);
    return n;
}

/* qemus counts processes whose command line names our run directory. */
static int qemus(void)
{
    DIR *d = opendir("/proc");
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char path[300], buf[8192];
        snprintf(path, sizeof(path), "/proc/%s/cmdline", e->d_name);
        FILE *fp = fopen(path, "r");
        if (fp == NULL)
            continue;
        size_t len = fread(buf, 1, sizeof(buf) - 1, fp);
        fclose(fp);
        buf[len] = '\0';
        for (size_t i = 0; i < len; i += strlen(buf + i) + 1)
            if (strstr(buf + i, G.run_dir) != NULL && strncmp(buf + i, "unix:", 5) == 0) {
                n++;
                break;
            }
    }
    closedir(d);
    return n;
}

static int http_body(const char *address, char *body, size_t bodylen, char *instance,
                     size_t instlen)
{
    unsigned port = 0;
    if (sscanf(address, "127.0.0.1:%u", &port) != 1)
        return -1;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    const char req[] = "GET / HTTP/1.0\r\n\r\n";
    if (write(fd, req, sizeof(req) - 1) != (ssize_t)sizeof(req) - 1) {
        close(fd);
        return -1;
    }
    char buf[4096];
    size_t len = 0;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    while (len < sizeof(buf) - 1 && poll(&p, 1, 10000) > 0) {
        ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    buf[len] = '\0';
    const char *b = strstr(buf, "\r\n\r\n");
    const char *h = strstr(buf, "X-Prewarm-Instance: ");
    snprintf(body, bodylen, "%s", b != NULL ? b + 4 : "");
    instance[0] = '\0';
    if (h != NULL)
        sscanf(h + 20, "%63[^\r\n]", instance);
    (void)instlen;
    return strncmp(buf, "HTTP/1.1 200", 12) == 0 ? 0 : -1;
}

static int setup(void **state)
{
    (void)state;
    if (!in_path("qemu-system-x86_64"))
        snprintf(G.skip_why, sizeof(G.skip_why), "no qemu-system-x86_64 in PATH");
    else if (access(BUILDER, R_OK) != 0)
        snprintf(G.skip_why, sizeof(G.skip_why), "no guest image builder at %s", BUILDER);
    if (G.skip_why[0] != '\0')
        return 0;
    char cmd[1024], log[64];
    snprintf(log, sizeof(log), "/tmp/pw-drvq-build-%d.log", (int)getpid());
    snprintf(cmd, sizeof(cmd), "bash '%s' function " FN " --static '" BODY "' 2>%s", BUILDER,
             log);
    FILE *p = popen(cmd, "r");
    char line[PATH_MAX];
    while (p != NULL && fgets(line, sizeof(line), p) != NULL)
        if (line[0] == '/')
            snprintf(G.image, sizeof(G.image), "%.*s", (int)strcspn(line, "\n"), line);
    if (p == NULL || pclose(p) != 0 || G.image[0] == '\0') {
        snprintf(G.skip_why, sizeof(G.skip_why), "the guest image builder failed (see %s)", log);
        return -1;
    }
    unlink(log);
    char why[256];
    if (pw_topology_load(&G.topo, "/", 16.0, why, sizeof(why)) != PW_OK) {
        fprintf(stderr, "topology: %s\n", why);
        return -1;
    }
    snprintf(G.run_dir, sizeof(G.run_dir), "/tmp/pw-drvq-%d", (int)getpid());
    snprintf(G.mem_dir, sizeof(G.mem_dir), "/dev/shm/pw-drvq-%d", (int)getpid());
    G.ready = true;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[256];
    if (G.run_dir[0] != '\0') {
        snprintf(cmd, sizeof(cmd), "rm -rf '%s' '%s'", G.run_dir, G.mem_dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", G.run_dir);
    }
    return 0;
}

#define NEED_QEMU()                                                  \
    do {                                                             \
        if (!G.ready) {                                              \
            fprintf(stderr, "** test_driver_qemu: SKIPPING: %s\n", G.skip_why); \
            if (getenv("PREWARM_REQUIRE_QEMU") != NULL &&            \
                strcmp(getenv("PREWARM_REQUIRE_QEMU"), "1") == 0)    \
                fail_msg("PREWARM_REQUIRE_QEMU=1: %s", G.skip_why);  \
            skip();                                                  \
        }                                                            \
    } while (0)

static void driver_start(struct pw_driver *d, uv_loop_t *loop, struct events *e, int keep)
{
    struct pw_agent_config c;
    char err[600];
    pw_agent_config_init(&c);
    assert_int_equal(pw_agent_config_set(&c, "id", "drvtest", err, sizeof(err)), PW_OK);
    assert_int_equal(pw_agent_config_set(&c, "driver", "qemu", err, sizeof(err)), PW_OK);
    assert_int_equal(pw_agent_config_set(&c, "qemu_accel", "tcg", err, sizeof(err)), PW_OK);
    assert_int_equal(pw_agent_config_set(&c, "qemu_run_dir", G.run_dir, err, sizeof(err)), PW_OK);
    assert_int_equal(pw_agent_config_set(&c, "qemu_mem_dir", G.mem_dir, err, sizeof(err)), PW_OK);
    c.qemu_keep_vms = keep;
    memset(d, 0, sizeof(*d));
    d->ops = pw_driver_find("qemu");
    assert_non_null(d->ops);
    d->topo = &G.topo;
    d->event_cb = on_event;
    d->event_arg = e;
    int rv = d->ops->init(d, loop, &c, err, sizeof(err));
    if (rv != PW_OK)
        fail_msg("init: %s", err);
}

/* driver_stop stops the driver and runs the loop until it is empty, as the agent does. */
static void driver_stop(struct pw_driver *d, uv_loop_t *loop)
{
    int64_t t0 = pw_now_mono_ms();
    d->ops->fini(d);
    uv_run(loop, UV_RUN_DEFAULT);
    printf("test_driver_qemu: stop took %" PRId64 " ms\n", pw_now_mono_ms() - t0);
}

static struct pw_cmd cmd_of(enum pw_cmd_type type, uint64_t vm_id, const char *image)
{
    struct pw_cmd c;
    memset(&c, 0, sizeof(c));
    c.type = type;
    c.vm_id = vm_id;
    pw_strlcpy(c.function, FN, sizeof(c.function));
    pw_strlcpy(c.image, image, sizeof(c.image));
    c.memory_mb = 128;
    c.vcpus = 1;
    c.numa_node = -1;
    return c;
}

static void prewarm(struct pw_driver *d, uint64_t vm_id, const char *image)
{
    struct pw_cmd c = cmd_of(PW_CMD_PREWARM, vm_id, image);
    int32_t node = -2;
    char err[300];
    int rv = d->ops->prewarm(d, &c, NULL, &node, err, sizeof(err));
    if (rv != PW_OK)
        fail_msg("prewarm %" PRIu64 ": %s", vm_id, err);
    assert_int_equal(node, G.topo.nodes[0].id);
}

static void test_driver(void **state)
{
    (void)state;
    NEED_QEMU();
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct events e = {0};
    struct pw_driver d;
    char err[300], names[8][PW_NAME_MAX];
    driver_start(&d, &loop, &e, 0);
    struct pw_label l[4];
    assert_int_equal(d.ops->labels(&d, l, 4), 1);
    assert_string_equal(l[0].key, "accelerator");
    assert_string_equal(l[0].value, "tcg");
    assert_int_equal(d.ops->snapshots(&d, names, 8), 0);

    /* The snapshot command makes the golden snapshot; it shows in the list once usable. */
    struct pw_cmd sc = cmd_of(PW_CMD_SNAPSHOT, 0, G.image);
    sc.numa_node = G.topo.nodes[0].id;
    int64_t t0 = pw_now_mono_ms();
    assert_int_equal(d.ops->snapshot(&d, &sc, err, sizeof(err)), PW_OK);
    assert_int_equal(d.ops->snapshot(&d, &sc, err, sizeof(err)), PW_OK); /* being made: no-op */
    struct want w = {.e = &e, .d = &d, .nsnaps = 1};
    run_until(&loop, has_snaps, &w, 90000, "the golden snapshot");
    printf("test_driver_qemu: MEASURED golden snapshot on command: %" PRId64 " ms\n",
           pw_now_mono_ms() - t0);
    assert_int_equal(d.ops->snapshots(&d, names, 8), 1);
    assert_string_equal(names[0], FN);
    assert_int_equal(count_entries(G.mem_dir, ".mem"), 1);

    /* Two restores: RUNNING with a restore time and an address that answers. */
    struct pw_numa_node nodes[1] = {G.topo.nodes[0]};
    d.ops->usage(&d, nodes, 1);
    uint64_t free0 = nodes[0].mem_free_mb;
    prewarm(&d, 1, G.image);
    prewarm(&d, 2, G.image);
    struct pw_cmd dup = cmd_of(PW_CMD_PREWARM, 2, G.image);
    int32_t node;
    assert_int_equal(d.ops->prewarm(&d, &dup, NULL, &node, err, sizeof(err)), PW_ERR_EXISTS);
    d.ops->usage(&d, nodes, 1);
    assert_int_equal(nodes[0].mem_free_mb, free0 - 256);
    for (uint64_t id = 1; id <= 2; id++) {
        w.vm_id = id;
        w.state = PW_AVM_RUNNING;
        run_until(&loop, has_ev, &w, 30000, "RUNNING");
    }
    assert_int_equal(qemus(), 2);
    for (uint64_t id = 1; id <= 2; id++) {
        int i = find_ev(&e, id, PW_AVM_RUNNING);
        char body[256], inst[64], want_inst[32];
        printf("test_driver_qemu: MEASURED vm %" PRIu64 " restore (start -> identity) %d ms, "
               "at %s\n", id, e.ev[i].restore_ms, e.ev[i].address);
        assert_true(e.ev[i].restore_ms > 0);
        assert_int_equal(http_body(e.ev[i].address, body, sizeof(body), inst, sizeof(inst)), 0);
        assert_string_equal(body, BODY);
        snprintf(want_inst, sizeof(want_inst), "%016" PRIx64, id);
        assert_string_equal(inst, want_inst);
    }

    /* Destroy: RUNNING -> GONE; a destroy right after a prewarm (waiting or restoring) ->
     * GONE without RUNNING. */
    assert_int_equal(d.ops->destroy(&d, 1), PW_OK);
    assert_int_equal(d.ops->destroy(&d, 1), PW_OK); /* already stopping */
    prewarm(&d, 3, G.image);
    assert_int_equal(d.ops->destroy(&d, 3), PW_OK);
    assert_int_equal(d.ops->destroy(&d, 99), PW_ERR_NOTFOUND);
    w.state = PW_AVM_GONE;
    w.vm_id = 1;
    run_until(&loop, has_ev, &w, 10000, "vm 1 GONE");
    w.vm_id = 3;
    run_until(&loop, has_ev, &w, 10000, "vm 3 GONE");
    assert_int_equal(find_ev(&e, 3, PW_AVM_RUNNING), -1);
    assert_int_equal(qemus(), 1);
    assert_int_equal(vm_dirs(), 1);

    /* A bad image: FAILED with the reason; a second prewarm soon after fails too (after a
     * pause, not at once), and nothing is left. */
    prewarm(&d, 4, "/nonexistent/image");
    w.vm_id = 4;
    w.state = PW_AVM_FAILED;
    run_until(&loop, has_ev, &w, 10000, "vm 4 FAILED");
    int i4 = find_ev(&e, 4, PW_AVM_FAILED);
    printf("test_driver_qemu: bad image: %s\n", e.ev[i4].error);
    assert_non_null(strstr(e.ev[i4].error, "/nonexistent/image"));
    t0 = pw_now_mono_ms();
    prewarm(&d, 5, "/nonexistent/image");
    w.vm_id = 5;
    run_until(&loop, has_ev, &w, 10000, "vm 5 FAILED");
    assert_true(pw_now_mono_ms() - t0 >= 900);
    assert_non_null(strstr(e.ev[find_ev(&e, 5, PW_AVM_FAILED)].error, "s ago"));
    struct pw_cmd rel = cmd_of(PW_CMD_PREWARM, 6, "relative/image");
    assert_int_equal(d.ops->prewarm(&d, &rel, NULL, &node, err, sizeof(err)), PW_ERR_INVAL);
    d.ops->usage(&d, nodes, 1);
    assert_int_equal(nodes[0].mem_free_mb, free0 - 128);

    /* The stop destroys vm 2: no process, no VM directory, only the snapshot's RAM file. */
    driver_stop(&d, &loop);
    assert_int_equal(qemus(), 0);
    assert_int_equal(vm_dirs(), 0);
    assert_int_equal(count_entries(G.mem_dir, ".mem"), 1);

    /* Kept at a stop (qemu_keep_vms), adopted at the next start with the snapshot found on
     * disk, destroyed at the stop after. */
    driver_start(&d, &loop, &e, 1);
    assert_int_equal(d.ops->snapshots(&d, names, 8), 1);
    prewarm(&d, 7, G.image);
    w.vm_id = 7;
    w.state = PW_AVM_RUNNING;
    run_until(&loop, has_ev, &w, 30000, "vm 7 RUNNING");
    driver_stop(&d, &loop);
    assert_int_equal(qemus(), 1);
    driver_start(&d, &loop, &e, 0);
    struct pw_vm_info v[4];
    assert_int_equal(d.ops->adopted(&d, v, 4), 1);
    assert_int_equal(v[0].vm_id, 7);
    assert_string_equal(v[0].function, FN);
    assert_int_equal(v[0].state, PW_AVM_RUNNING);
    assert_int_equal(v[0].memory_mb, 128);
    assert_string_equal(v[0].address, e.ev[find_ev(&e, 7, PW_AVM_RUNNING)].address);
    char body[256], inst[64];
    assert_int_equal(http_body(v[0].address, body, sizeof(body), inst, sizeof(inst)), 0);
    assert_string_equal(inst, "0000000000000007");
    driver_stop(&d, &loop);
    assert_int_equal(qemus(), 0);
    assert_int_equal(vm_dirs(), 0);
    assert_int_equal(count_entries(G.mem_dir, ".mem"), 1);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    pw_log_set_level(PW_LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_keys),
        cmocka_unit_test(test_dirs),
        cmocka_unit_test(test_image_parse),
        cmocka_unit_test(test_image_load),
        cmocka_unit_test(test_driver),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
