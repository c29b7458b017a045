/* agent_config.c — defaults, key/value setting, JSON config file and environment for the
 * agent. Flags in main.c go through the same pw_agent_config_set. */
#include "pw/agent_config.h"

#include "pw/driver.h"
#include "pw/error.h"
#include "pw/qemu_vm.h"
#include "pw/util.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CONFIG_FILE_MAX (256 * 1024)

void pw_agent_config_init(struct pw_agent_config *c)
{
    memset(c, 0, sizeof(*c));
    pw_strlcpy(c->scheduler_url, PW_AGENT_DEFAULT_SCHEDULER, sizeof(c->scheduler_url));
    pw_strlcpy(c->driver, "sim", sizeof(c->driver));
    pw_strlcpy(c->topology_root, "/", sizeof(c->topology_root));
    c->vcpu_overcommit = 1.0;
    c->log_level = PW_LOG_INFO;
    c->sim_restore_ms = 200;
    c->sim_jitter_ms = 0;
    c->sim_stop_max_ms = 10;
    c->sim_fail_rate = 0.0;
    c->sim_seed = 1;
    pw_strlcpy(c->qemu_bin, "qemu-system-x86_64", sizeof(c->qemu_bin));
    pw_strlcpy(c->qemu_accel, "auto", sizeof(c->qemu_accel));
    c->qemu_boot_timeout_ms = 60000;
    c->qemu_restore_timeout_ms = 30000;
    c->qemu_probe_timeout_ms = 3000;
    c->qemu_stop_timeout_ms = 3000;
    c->qemu_log_max_kb = 1024;
    c->qemu_jobs = 4;
    c->initial_heartbeat_ms = 1000;
    c->error_backoff_ms = 1000;
    c->outbox_max = 4096;
    c->handle_signals = 1;
}

/* parse_ms accepts a bare integer (milliseconds) or a duration with a unit ("250ms", "2s"). */
static int parse_ms(const char *s, int64_t max, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end != s && *end == '\0' && errno == 0) {
        if (v < 0 || v > max)
            return PW_ERR_INVAL;
        *out = v;
        return PW_OK;
    }
    int64_t d;
    if (strchr(s, '-') != NULL || pw_parse_duration_ms(s, &d) != PW_OK || d < 0 || d > max)
        return PW_ERR_INVAL;
    *out = d;
    return PW_OK;
}

static int parse_double(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || errno != 0 || !isfinite(v))
        return PW_ERR_INVAL;
    *out = v;
    return PW_OK;
}

/* parse_bool accepts true/false, 1/0, yes/no and on/off. */
static int parse_bool(const char *s, int *out)
{
    static const char *const yes[] = {"true", "1", "yes", "on"};
    static const char *const no[] = {"false", "0", "no", "off"};
    for (size_t i = 0; i < PW_ARRAY_LEN(yes); i++) {
        if (strcmp(s, yes[i]) == 0) {
            *out = 1;
            return PW_OK;
        }
        if (strcmp(s, no[i]) == 0) {
            *out = 0;
            return PW_OK;
        }
    }
    return PW_ERR_INVAL;
}

static int cmp_name(const void *a, const void *b) { return strcmp(a, b); }

/* set_sim_snapshots replaces the list with the comma-separated names in value (blanks around a
 * name are ignored; duplicates count once); the list is kept sorted. */
static int set_sim_snapshots(struct pw_agent_config *c, const char *value, char *errbuf,
                             size_t errlen)
{
    char names[PW_AGENT_SIM_SNAPSHOTS_MAX][PW_NAME_MAX];
    size_t n = 0;
    const char *p = value;
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p == '\0') {
        c->nsim_snapshots = 0;
        return PW_OK;
    }
    for (;;) {
        const char *end = strchr(p, ',');
        if (end == NULL)
            end = p + strlen(p);
        const char *a = p, *b = end;
        while (a < b && (*a == ' ' || *a == '\t'))
            a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
            b--;
        char name[PW_NAME_MAX];
        size_t len = (size_t)(b - a);
        if (len == 0) {
            pw_errf(errbuf, errlen, "sim_snapshots \"%s\": empty name at offset %td", value,
                    a - value);
            return PW_ERR_INVAL;
        }
        if (len >= sizeof(name)) {
            pw_errf(errbuf, errlen, "sim_snapshots: name at offset %td longer than %d bytes",
                    a - value, PW_NAME_MAX - 1);
            return PW_ERR_INVAL;
        }
        memcpy(name, a, len);
        name[len] = '\0';
        if (!pw_name_valid(name)) {
            pw_errf(errbuf, errlen,
                    "sim_snapshots: \"%s\" is not a function name ([A-Za-z0-9._-], starting "
                    "alphanumeric)",
                    name);
            return PW_ERR_INVAL;
        }
        size_t i = 0;
        while (i < n && strcmp(names[i], name) != 0)
            i++;
        if (i == n) {
            if (n == PW_AGENT_SIM_SNAPSHOTS_MAX) {
                pw_errf(errbuf, errlen, "sim_snapshots: more than %d names",
                        PW_AGENT_SIM_SNAPSHOTS_MAX);
                return PW_ERR_INVAL;
            }
            memcpy(names[n++], name, len + 1);
        }
        if (*end == '\0')
            break;
        p = end + 1;
    }
    qsort(names, n, sizeof(names[0]), cmp_name);
    memcpy(c->sim_snapshots, names, n * sizeof(names[0]));
    c->nsim_snapshots = n;
    return PW_OK;
}

static int set_label(struct pw_agent_config *c, const char *kv, char *errbuf, size_t errlen)
{
    const char *eq = strchr(kv, '=');
    if (eq == NULL) {
        pw_errf(errbuf, errlen, "label \"%s\": expected key=value", kv);
        return PW_ERR_INVAL;
    }
    char key[PW_NAME_MAX];
    size_t klen = (size_t)(eq - kv);
    if (klen == 0 || klen >= sizeof(key)) {
        pw_errf(errbuf, errlen, "label \"%s\": key must be 1..%d bytes", kv, PW_NAME_MAX - 1);
        return PW_ERR_INVAL;
    }
    memcpy(key, kv, klen);
    key[klen] = '\0';
    if (!pw_name_valid(key)) {
        pw_errf(errbuf, errlen, "label key \"%s\": use [A-Za-z0-9._-], starting alphanumeric",
                key);
        return PW_ERR_INVAL;
    }
    const char *value = eq + 1;
    size_t vlen = strlen(value);
    if (vlen >= PW_LABEL_VALUE_MAX) {
        pw_errf(errbuf, errlen, "label \"%s\": value longer than %d bytes", key,
                PW_LABEL_VALUE_MAX - 1);
        return PW_ERR_INVAL;
    }
    for (size_t i = 0; i < vlen; i++) {
        unsigned char ch = (unsigned char)value[i];
        if (ch < 0x20 || ch == 0x7f) {
            pw_errf(errbuf, errlen, "label \"%s\": value has a control character", key);
            return PW_ERR_INVAL;
        }
    }
    double cost;
    if (strcmp(key, PW_LABEL_COST) == 0 &&
        (parse_double(value, &cost) != PW_OK || cost < 0 || value[0] == ' ' ||
         strpbrk(value, "xXpP") != NULL)) {
        pw_errf(errbuf, errlen, "label %s \"%s\": expected a decimal number >= 0, e.g. 0.0125",
                key, value);
        return PW_ERR_INVAL;
    }
    size_t i;
    for (i = 0; i < c->nlabels; i++)
        if (strcmp(c->labels[i].key, key) == 0)
            break;
    if (i == c->nlabels) {
        if (c->nlabels == PW_PROTO_MAX_LABELS) {
            pw_errf(errbuf, errlen, "more than %d labels", PW_PROTO_MAX_LABELS);
            return PW_ERR_INVAL;
        }
        c->nlabels++;
    }
    pw_strlcpy(c->labels[i].key, key, sizeof(c->labels[i].key));
    pw_strlcpy(c->labels[i].value, value, sizeof(c->labels[i].value));
    return PW_OK;
}

static int set_str(char *dst, size_t size, const char *key, const char *value, char *errbuf,
                   size_t errlen)
{
    if (value[0] == '\0' || strlen(value) >= size) {
        pw_errf(errbuf, errlen, "%s: must be 1..%zu bytes", key, size - 1);
        return PW_ERR_INVAL;
    }
    pw_strlcpy(dst, value, size);
    return PW_OK;
}

/* qemu_path_key returns the buffer of a qemu path key (NULL for other keys) and whether the
 * path goes into QEMU's comma-separated options. */
static char *qemu_path_key(struct pw_agent_config *c, const char *key, size_t *size, int *opt)
{
    static const struct {
        const char *key;
        size_t off;
        int opt;
    } keys[] = {
        {"qemu_run_dir", offsetof(struct pw_agent_config, qemu_run_dir), 1},
        {"qemu_mem_dir", offsetof(struct pw_agent_config, qemu_mem_dir), 1},
        {"qemu_snapshot_dir", offsetof(struct pw_agent_config, qemu_snapshot_dir), 0},
        {"qemu_probe_image", offsetof(struct pw_agent_config, qemu_probe_image), 0},
    };
    for (size_t i = 0; i < PW_ARRAY_LEN(keys); i++) {
        if (strcmp(key, keys[i].key) == 0) {
            *size = PW_AGENT_PATH_MAX;
            *opt = keys[i].opt;
            return (char *)c + keys[i].off;
        }
    }
    return NULL;
}

/* set_metrics_listen parses "HOST:PORT" for the /metrics listener ("" turns it off). */
static int set_metrics_listen(struct pw_agent_config *c, const char *value, char *errbuf, size_t errlen)
{
    if (value[0] == '\0') {
        c->metrics_host[0] = '\0';
        c->metrics_port = 0;
        return PW_OK;
    }
    const char *colon = strrchr(value, ':');
    char *end = NULL;
    errno = 0;
    long port = colon != NULL ? strtol(colon + 1, &end, 10) : 0;
    if (colon == NULL || colon == value || (size_t)(colon - value) >= sizeof(c->metrics_host) ||
        colon[1] == '\0' || *end != '\0' || errno != 0 || port < 1 || port > 65535) {
        pw_errf(errbuf, errlen, "metrics_listen \"%s\": expected HOST:PORT (port 1..65535)", value);
        return PW_ERR_INVAL;
    }
    memcpy(c->metrics_host, value, (size_t)(colon - value));
    c->metrics_host[colon - value] = '\0';
    c->metrics_port = (int)port;
    return PW_OK;
}

/* set_qemu sets the qemu driver's keys; PW_ERR_NOTFOUND for a key that is not one of them. */
static int set_qemu(struct pw_agent_config *c, const char *key, const char *value,
                    char *errbuf, size_t errlen)
{
    static const struct {
        const char *key;
        size_t off;
        int64_t min, max;
    } times[] = {
        {"qemu_boot_timeout_ms", offsetof(struct pw_agent_config, qemu_boot_timeout_ms), 1000,
         3600 * 1000},
        {"qemu_restore_timeout_ms", offsetof(struct pw_agent_config, qemu_restore_timeout_ms),
         1000, 3600 * 1000},
        {"qemu_probe_timeout_ms", offsetof(struct pw_agent_config, qemu_probe_timeout_ms), 100,
         600 * 1000},
        {"qemu_stop_timeout_ms", offsetof(struct pw_agent_config, qemu_stop_timeout_ms), 100,
         600 * 1000},
    };
    size_t size;
    int opt;
    char *path = qemu_path_key(c, key, &size, &opt);
    if (path != NULL) {
        if (value[0] != '/' || strlen(value) >= size || (opt && strchr(value, ',') != NULL)) {
            pw_errf(errbuf, errlen, "%s \"%s\": expected an absolute path%s", key, value,
                    opt ? " without commas" : "");
            return PW_ERR_INVAL;
        }
        if (strcmp(key, "qemu_run_dir") == 0 && strlen(value) >= PW_QEMU_RUN_DIR_MAX) {
            pw_errf(errbuf, errlen, "qemu_run_dir \"%s\": longer than %d bytes (the VMs' unix "
                    "sockets live there)", value, PW_QEMU_RUN_DIR_MAX - 1);
            return PW_ERR_INVAL;
        }
        pw_strlcpy(path, value, size);
        return PW_OK;
    }
    for (size_t i = 0; i < PW_ARRAY_LEN(times); i++) {
        if (strcmp(key, times[i].key) != 0)
            continue;
        int64_t ms;
        if (parse_ms(value, times[i].max, &ms) != PW_OK || ms < times[i].min) {
            pw_errf(errbuf, errlen, "%s \"%s\": expected milliseconds in %lld..%lld", key,
                    value, (long long)times[i].min, (long long)times[i].max);
            return PW_ERR_INVAL;
        }
        *(int64_t *)(void *)((char *)c + times[i].off) = ms;
        return PW_OK;
    }
    if (strcmp(key, "qemu_bin") == 0)
        return set_str(c->qemu_bin, sizeof(c->qemu_bin), key, value, errbuf, errlen);
    if (strcmp(key, "qemu_accel") == 0) {
        enum pw_qemu_accel a;
        if (pw_qemu_accel_parse(value, &a) != PW_OK) {
            pw_errf(errbuf, errlen, "qemu_accel \"%s\": expected auto, kvm or tcg", value);
            return PW_ERR_INVAL;
        }
        pw_strlcpy(c->qemu_accel, value, sizeof(c->qemu_accel));
        return PW_OK;
    }
    if (strcmp(key, "qemu_keep_vms") == 0) {
        if (parse_bool(value, &c->qemu_keep_vms) != PW_OK) {
            pw_errf(errbuf, errlen, "%s \"%s\": expected true or false", key, value);
            return PW_ERR_INVAL;
        }
        return PW_OK;
    }
    if (strcmp(key, "qemu_uid_base") == 0 || strcmp(key, "qemu_uids") == 0) {
        int is_base = key[8] == '_';
        unsigned long long lo = is_base ? 1 : 0, hi = is_base ? 4294967294ULL : 65536;
        char *end;
        errno = 0;
        unsigned long long v = strtoull(value, &end, 10);
        if (end == value || *end != '\0' || errno != 0 || value[0] == '-' || v < lo || v > hi) {
            pw_errf(errbuf, errlen, "%s \"%s\": expected an integer in %llu..%llu", key, value,
                    lo, hi);
            return PW_ERR_INVAL;
        }
        if (is_base)
            c->qemu_uid_base = (uint32_t)v;
        else
            c->qemu_uids = (uint32_t)v;
        return PW_OK;
    }
    if (strcmp(key, "qemu_log_max_kb") == 0 || strcmp(key, "qemu_jobs") == 0) {
        int is_jobs = key[5] == 'j';
        long long lo = is_jobs ? 1 : 16, hi = is_jobs ? 64 : 1024 * 1024;
        char *end;
        errno = 0;
        long long v = strtoll(value, &end, 10);
        if (end == value || *end != '\0' || errno != 0 || v < lo || v > hi) {
            pw_errf(errbuf, errlen, "%s \"%s\": expected an integer in %lld..%lld", key, value,
                    lo, hi);
            return PW_ERR_INVAL;
        }
        if (is_jobs)
            c->qemu_jobs = (int)v;
        else
            c->qemu_log_max_kb = v;
        return PW_OK;
    }
    return PW_ERR_NOTFOUND;
}

int pw_agent_config_set(struct pw_agent_config *c, const char *key, const char *value,
                        char *errbuf, size_t errlen)
{
    int64_t ms;
    double d;
    if (strcmp(key, "id") == 0) {
        if (!pw_name_valid(value)) {
            pw_errf(errbuf, errlen,
                    "id \"%s\": must be 1..63 bytes of [A-Za-z0-9._-], starting alphanumeric",
                    value);
            return PW_ERR_INVAL;
        }
        pw_strlcpy(c->id, value, sizeof(c->id));
        return PW_OK;
    }
    if (strcmp(key, "scheduler") == 0) {
        if (strstr(value, "://") == NULL) {
            pw_errf(errbuf, errlen, "scheduler \"%s\": expected a URL like %s", value,
                    PW_AGENT_DEFAULT_SCHEDULER);
            return PW_ERR_INVAL;
        }
        return set_str(c->scheduler_url, sizeof(c->scheduler_url), key, value, errbuf, errlen);
    }
    if (strcmp(key, "driver") == 0) {
        if (pw_driver_find(value) == NULL) {
            pw_errf(errbuf, errlen, "driver \"%s\": unknown (available: sim, qemu)", value);
            return PW_ERR_INVAL;
        }
        return set_str(c->driver, sizeof(c->driver), key, value, errbuf, errlen);
    }
    if (strcmp(key, "topology_root") == 0)
        return set_str(c->topology_root, sizeof(c->topology_root), key, value, errbuf, errlen);
    if (strcmp(key, "label") == 0)
        return set_label(c, value, errbuf, errlen);
    if (strcmp(key, "vcpu_overcommit") == 0) {
        if (parse_double(value, &d) != PW_OK || !(d > 0.0) || d > 1000.0) {
            pw_errf(errbuf, errlen, "vcpu_overcommit \"%s\": expected a number in (0, 1000]",
                    value);
            return PW_ERR_INVAL;
        }
        c->vcpu_overcommit = d;
        return PW_OK;
    }
    if (strcmp(key, "draining") == 0 || strcmp(key, "sim_process") == 0) {
        int v;
        if (parse_bool(value, &v) != PW_OK) {
            pw_errf(errbuf, errlen, "%s \"%s\": expected true or false", key, value);
            return PW_ERR_INVAL;
        }
        if (key[0] == 'd')
            c->draining = v;
        else
            c->sim_process = v;
        return PW_OK;
    }
    if (strcmp(key, "sim_snapshots") == 0)
        return set_sim_snapshots(c, value, errbuf, errlen);
    if (strcmp(key, "log_level") == 0) {
        int l = pw_log_parse_level(value);
        if (l < 0) {
            pw_errf(errbuf, errlen, "log_level \"%s\": expected debug, info, warn or error",
                    value);
            return PW_ERR_INVAL;
        }
        c->log_level = (enum pw_log_level)l;
        return PW_OK;
    }
    if (strcmp(key, "sim_restore_ms") == 0 || strcmp(key, "sim_jitter_ms") == 0 ||
        strcmp(key, "sim_stop_ms") == 0) {
        if (parse_ms(value, 3600 * 1000, &ms) != PW_OK) {
            pw_errf(errbuf, errlen, "%s \"%s\": expected milliseconds in 0..3600000", key,
                    value);
            return PW_ERR_INVAL;
        }
        if (key[4] == 'r')
            c->sim_restore_ms = ms;
        else if (key[4] == 'j')
            c->sim_jitter_ms = ms;
        else
            c->sim_stop_max_ms = ms;
        return PW_OK;
    }
    if (strcmp(key, "sim_fail_rate") == 0) {
        if (parse_double(value, &d) != PW_OK || d < 0.0 || d > 1.0) {
            pw_errf(errbuf, errlen, "sim_fail_rate \"%s\": expected a number in [0, 1]", value);
            return PW_ERR_INVAL;
        }
        c->sim_fail_rate = d;
        return PW_OK;
    }
    if (strcmp(key, "sim_seed") == 0) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(value, &end, 10);
        if (end == value || *end != '\0' || errno != 0 || value[0] == '-') {
            pw_errf(errbuf, errlen, "sim_seed \"%s\": expected an unsigned integer", value);
            return PW_ERR_INVAL;
        }
        c->sim_seed = v;
        return PW_OK;
    }
    if (strcmp(key, "metrics_listen") == 0)
        return set_metrics_listen(c, value, errbuf, errlen);
    if (strcmp(key, "tls_cert") == 0 || strcmp(key, "tls_ca") == 0 || strcmp(key, "tls_server_name") == 0) {
        char *dst = key[4] == 'c' && key[5] == 'e' ? c->tls_cert : key[4] == 'c' ? c->tls_ca : c->tls_server_name;
        size_t n = key[4] == 's' ? sizeof(c->tls_server_name) : sizeof(c->tls_cert);
        if (pw_strlcpy(dst, value, n) >= n) {
            pw_errf(errbuf, errlen, "%s: longer than %zu bytes", key, n - 1);
            return PW_ERR_INVAL;
        }
        return PW_OK;
    }
    if (strncmp(key, "qemu_", 5) == 0) {
        int rv = set_qemu(c, key, value, errbuf, errlen);
        if (rv != PW_ERR_NOTFOUND)
            return rv;
    }
    pw_errf(errbuf, errlen, "unknown key \"%s\"", key);
    return PW_ERR_INVAL;
}

/* json_scalar turns a JSON string, number or boolean into text for pw_agent_config_set. */
static int json_scalar(const cJSON *v, char *out, size_t outlen)
{
    if (cJSON_IsBool(v)) {
        pw_strlcpy(out, cJSON_IsTrue(v) ? "true" : "false", outlen);
        return PW_OK;
    }
    if (cJSON_IsString(v)) {
        if (strlen(v->valuestring) >= outlen)
            return PW_ERR_INVAL;
        pw_strlcpy(out, v->valuestring, outlen);
        return PW_OK;
    }
    if (cJSON_IsNumber(v)) {
        double x = v->valuedouble;
        if (x == floor(x) && fabs(x) < 9e15)
            snprintf(out, outlen, "%.0f", x);
        else
            snprintf(out, outlen, "%.17g", x);
        return PW_OK;
    }
    return PW_ERR_INVAL;
}

/* apply_json_names sets a list key from a JSON array of strings, joined with commas. */
static int apply_json_names(struct pw_agent_config *c, const char *key, const cJSON *arr,
                            const char *path, char *errbuf, size_t errlen)
{
    char why[256];
    struct pw_buf b;
    int rv = PW_OK;
    pw_buf_init(&b, CONFIG_FILE_MAX);
    const cJSON *it;
    size_t i = 0;
    cJSON_ArrayForEach(it, arr)
    {
        /* Each element is one name: a comma or an empty string would be misread once joined. */
        if (!cJSON_IsString(it) || it->valuestring[0] == '\0' ||
            strchr(it->valuestring, ',') != NULL) {
            pw_errf(errbuf, errlen, "%s: %s[%zu]: expected a function name", path, key, i);
            rv = PW_ERR_INVAL;
            goto out;
        }
        if ((i > 0 && pw_buf_adds(&b, ",") != PW_OK) ||
            pw_buf_adds(&b, it->valuestring) != PW_OK) {
            pw_errf(errbuf, errlen, "%s: %s: too long", path, key);
            rv = PW_ERR_INVAL;
            goto out;
        }
        i++;
    }
    if (pw_agent_config_set(c, key, b.data != NULL ? b.data : "", why, sizeof(why)) != PW_OK) {
        pw_errf(errbuf, errlen, "%s: %s", path, why);
        rv = PW_ERR_INVAL;
    }
out:
    pw_buf_fini(&b);
    return rv;
}

static int apply_json(struct pw_agent_config *c, const cJSON *root, const char *path,
                      char *errbuf, size_t errlen)
{
    char why[256];
    char text[PW_AGENT_PATH_MAX + PW_NAME_MAX + 2];
    if (!cJSON_IsObject(root)) {
        pw_errf(errbuf, errlen, "%s: expected a JSON object", path);
        return PW_ERR_PARSE;
    }
    const cJSON *item;
    cJSON_ArrayForEach(item, root)
    {
        const char *key = item->string;
        if (strcmp(key, "labels") == 0) {
            if (!cJSON_IsObject(item)) {
                pw_errf(errbuf, errlen, "%s: labels: expected an object", path);
                return PW_ERR_INVAL;
            }
            const cJSON *l;
            cJSON_ArrayForEach(l, item)
            {
                if (!cJSON_IsString(l)) {
                    pw_errf(errbuf, errlen, "%s: label %s: expected a string", path, l->string);
                    return PW_ERR_INVAL;
                }
                snprintf(text, sizeof(text), "%s=%s", l->string, l->valuestring);
                if (pw_agent_config_set(c, "label", text, why, sizeof(why)) != PW_OK) {
                    pw_errf(errbuf, errlen, "%s: %s", path, why);
                    return PW_ERR_INVAL;
                }
            }
            continue;
        }
        if (strcmp(key, "sim_snapshots") == 0 && cJSON_IsArray(item)) {
            int rv = apply_json_names(c, key, item, path, errbuf, errlen);
            if (rv != PW_OK)
                return rv;
            continue;
        }
        if (json_scalar(item, text, sizeof(text)) != PW_OK) {
            pw_errf(errbuf, errlen, "%s: %s: expected a string, number or boolean", path, key);
            return PW_ERR_INVAL;
        }
        if (pw_agent_config_set(c, key, text, why, sizeof(why)) != PW_OK) {
            pw_errf(errbuf, errlen, "%s: %s", path, why);
            return PW_ERR_INVAL;
        }
    }
    return PW_OK;
}

int pw_agent_config_load_file(struct pw_agent_config *c, const char *path, char *errbuf,
                              size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        pw_errf(errbuf, errlen, "cannot open %s: %s", path, strerror(errno));
        return PW_ERR_IO;
    }
    char *data = pw_xmalloc(CONFIG_FILE_MAX + 1);
    size_t n = fread(data, 1, CONFIG_FILE_MAX + 1, f);
    int bad = ferror(f);
    fclose(f);
    int rv = PW_OK;
    cJSON *root = NULL;
    /* Apply to a copy so a half-applied file never leaks into the config. */
    struct pw_agent_config tmp = *c;
    if (bad) {
        pw_errf(errbuf, errlen, "cannot read %s", path);
        rv = PW_ERR_IO;
        goto out;
    }
    if (n > CONFIG_FILE_MAX) {
        pw_errf(errbuf, errlen, "%s: larger than %d bytes", path, CONFIG_FILE_MAX);
        rv = PW_ERR_PARSE;
        goto out;
    }
    data[n] = '\0';
    root = cJSON_ParseWithLength(data, n);
    if (root == NULL) {
        pw_errf(errbuf, errlen, "%s: not valid JSON", path);
        rv = PW_ERR_PARSE;
        goto out;
    }
    rv = apply_json(&tmp, root, path, errbuf, errlen);
    if (rv == PW_OK)
        *c = tmp;
out:
    /* Reasons quote the file; its control characters show as '?', so a reason is one line. */
    for (char *p = errbuf; rv != PW_OK && errlen > 0 && *p != '\0'; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    cJSON_Delete(root);
    free(data);
    return rv;
}

int pw_agent_config_load_env(struct pw_agent_config *c, char *errbuf, size_t errlen)
{
    static const struct {
        const char *env, *key;
    } map[] = {
        {"PREWARM_AGENT_ID", "id"},
        {"PREWARM_SCHEDULER", "scheduler"},
        {"PREWARM_DRIVER", "driver"},
    };
    char why[256];
    for (size_t i = 0; i < PW_ARRAY_LEN(map); i++) {
        const char *v = getenv(map[i].env);
        if (v == NULL || v[0] == '\0')
            continue;
        if (pw_agent_config_set(c, map[i].key, v, why, sizeof(why)) != PW_OK) {
            pw_errf(errbuf, errlen, "%s: %s", map[i].env, why);
            return PW_ERR_INVAL;
        }
    }
    return PW_OK;
}

int pw_agent_config_qemu_dirs(const struct pw_agent_config *c, char *run_dir, char *snap_dir,
                              char *mem_dir, char *errbuf, size_t errlen)
{
    const size_t size = PW_AGENT_PATH_MAX;
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    int n;
    if (c->qemu_run_dir[0] != '\0')
        n = snprintf(run_dir, size, "%s", c->qemu_run_dir);
    else if (geteuid() == 0)
        n = snprintf(run_dir, size, "/run/prewarm/%s", c->id);
    else if (xdg != NULL && xdg[0] == '/' && strchr(xdg, ',') == NULL)
        n = snprintf(run_dir, size, "%s/prewarm/%s", xdg, c->id);
    else
        n = snprintf(run_dir, size, "/tmp/prewarm-%u/%s", (unsigned)geteuid(), c->id);
    if (n < 0 || (size_t)n >= PW_QEMU_RUN_DIR_MAX) {
        pw_errf(errbuf, errlen, "qemu run directory \"%s\" is longer than %d bytes: set a shorter "
                "one with --qemu-run-dir", run_dir, PW_QEMU_RUN_DIR_MAX - 1);
        return PW_ERR_INVAL;
    }
    if (c->qemu_snapshot_dir[0] != '\0')
        snprintf(snap_dir, size, "%s", c->qemu_snapshot_dir);
    else
        snprintf(snap_dir, size, "%s/snapshots", run_dir);
    if (c->qemu_mem_dir[0] != '\0')
        snprintf(mem_dir, size, "%s", c->qemu_mem_dir);
    else
        snprintf(mem_dir, size, "/dev/shm/prewarm-%s", c->id);
    return PW_OK;
}

int pw_agent_config_check(const struct pw_agent_config *c, char *errbuf, size_t errlen)
{
    if (c->id[0] == '\0') {
        pw_errf(errbuf, errlen, "no agent id: use --id NAME or PREWARM_AGENT_ID");
        return PW_ERR_INVAL;
    }
    if (pw_driver_find(c->driver) == NULL) {
        pw_errf(errbuf, errlen, "driver \"%s\": unknown", c->driver);
        return PW_ERR_INVAL;
    }
    int tls = strncmp(c->scheduler_url, "tls+tcp://", 10) == 0;
    if (tls && (c->tls_cert[0] == '\0' || c->tls_ca[0] == '\0')) {
        pw_errf(errbuf, errlen, "scheduler %s is TLS: --tls-cert (certificate and key) and --tls-ca are required",
                c->scheduler_url);
        return PW_ERR_INVAL;
    }
    if (!tls && (c->tls_cert[0] != '\0' || c->tls_ca[0] != '\0')) {
        pw_errf(errbuf, errlen, "--tls-cert/--tls-ca need a tls+tcp:// scheduler URL, not %s", c->scheduler_url);
        return PW_ERR_INVAL;
    }
    if (c->qemu_uids > 0 && c->qemu_uid_base == 0) {
        pw_errf(errbuf, errlen, "--qemu-uids %u needs --qemu-uid-base (the first uid of the VMs)",
                (unsigned)c->qemu_uids);
        return PW_ERR_INVAL;
    }
    if ((uint64_t)c->qemu_uid_base + c->qemu_uids > UINT64_C(4294967295)) {
        pw_errf(errbuf, errlen, "--qemu-uid-base %u + --qemu-uids %u goes past uid 4294967294",
                (unsigned)c->qemu_uid_base, (unsigned)c->qemu_uids);
        return PW_ERR_INVAL;
    }
    if (c->outbox_max == 0 || c->initial_heartbeat_ms <= 0 || c->error_backoff_ms < 0) {
        pw_errf(errbuf, errlen, "link settings out of range");
        return PW_ERR_INVAL;
    }
    return PW_OK;
}
