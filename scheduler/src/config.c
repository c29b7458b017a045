/* config.c — prewarmd configuration from a JSON file, PREWARM_* environment variables and
 * flags, in increasing precedence. Every value is validated; a bad one is a clear error. */
#include "config.h"

#include "pw/error.h"
#include "pw/log.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef PW_VERSION
#define PW_VERSION "0.1.0"
#endif

void pw_sched_config_default(struct pw_sched_config *c)
{
    memset(c, 0, sizeof(*c));
    pw_strlcpy(c->http_host, "127.0.0.1", sizeof(c->http_host));
    c->http_port = 8080;
    pw_strlcpy(c->agents_url, "tcp://127.0.0.1:7070", sizeof(c->agents_url));
    c->heartbeat_ms = 1000;
    c->lease_ttl_ms = 60000;
    c->adopt_grace_ms = -1;
    c->acquire_timeout_ms = 10000;
    c->acquire_timeout_max_ms = 120000;
    c->max_waiters_per_fn = 1000;
    c->max_functions = 100000;
    c->cordon_ms = 30000;
    c->leader_renew_ms = 500;
    c->leader_lease_ms = 2000;
    c->leader_takeover_ms = 4000;
    if (gethostname(c->replica_name, sizeof(c->replica_name)) != 0 || c->replica_name[0] == '\0')
        pw_strlcpy(c->replica_name, "prewarmd", sizeof(c->replica_name));
    c->replica_name[sizeof(c->replica_name) - 1] = '\0';
    c->max_body_bytes = 1024 * 1024;
    c->max_connections = 1024;
    c->max_agents = 10000;
    c->telemetry_max_rows = 100000;
    c->log_level = PW_LOG_INFO;
    pw_strlcpy(c->model_path, "models/default.json", sizeof(c->model_path));
    c->restore_ms = 200;
    c->retrain_every_ms = 6 * 3600 * 1000LL;
    c->retrain_minutes = 360;
    pw_strlcpy(c->model_dir, "models/trained", sizeof(c->model_dir));
    c->model_keep = 20;
    pw_placer_config_default(&c->placement);
}

/* One table of settings: key (JSON and flag name), environment variable, kind, where. */
enum kind { K_STR, K_MS, K_COUNT, K_LEVEL, K_HOSTPORT, K_WEIGHTS };

struct setting {
    const char *key;
    const char *env;
    enum kind kind;
    size_t off;
    size_t size; /* for strings */
    int64_t min, max;
    const char *help;
};

#define OFF(f) offsetof(struct pw_sched_config, f)
#define SZ(f) sizeof(((struct pw_sched_config *)0)->f)

static const struct setting settings[] = {
    {"http", "PREWARM_HTTP", K_HOSTPORT, 0, 0, 0, 0, "HTTP API listen address HOST:PORT (127.0.0.1:8080)"},
    {"agents", "PREWARM_AGENTS", K_STR, OFF(agents_url), SZ(agents_url), 0, 0,
     "NNG listen URL for agents (tcp://127.0.0.1:7070)"},
    {"pg", "PREWARM_PG", K_STR, OFF(pg_conninfo), SZ(pg_conninfo), 0, 0,
     "libpq connection string; empty uses the PG* environment"},
    {"heartbeat-ms", "PREWARM_HEARTBEAT_MS", K_MS, OFF(heartbeat_ms), 0, 50, 600000,
     "agents report at least this often; dead after 3 missed (1000)"},
    {"lease-ttl-ms", "PREWARM_LEASE_TTL_MS", K_MS, OFF(lease_ttl_ms), 0, 100, 86400000,
     "a lease not released within this is reclaimed (60000)"},
    {"adopt-grace-ms", "PREWARM_ADOPT_GRACE_MS", K_MS, OFF(adopt_grace_ms), 0, -1, 600000,
     "after a restart, wait this long for known agents before creating pool VMs (3 heartbeats)"},
    {"acquire-timeout-ms", "PREWARM_ACQUIRE_TIMEOUT_MS", K_MS, OFF(acquire_timeout_ms), 0, 1, 600000,
     "default deadline of an acquire (10000)"},
    {"max-waiters", "PREWARM_MAX_WAITERS", K_COUNT, OFF(max_waiters_per_fn), sizeof(uint32_t), 1, 1000000,
     "parked acquires per function (1000)"},
    {"cordon", "PREWARM_CORDON", K_MS, OFF(cordon_ms), 0, 0, 3600000,
     "self-healing: cordon a host whose restores fail or are slow against the fleet for this long "
     "(doubling on repeats), then try it again; 0 = off (30s)"},
    {"max-functions", "PREWARM_MAX_FUNCTIONS", K_COUNT, OFF(max_functions), sizeof(size_t), 1, 10000000,
     "functions registered at once; a PUT of one more is refused with 429 (100000)"},
    {"max-body-bytes", "PREWARM_MAX_BODY_BYTES", K_COUNT, OFF(max_body_bytes), sizeof(size_t), 1024, 64 << 20,
     "HTTP request body cap (1048576)"},
    {"max-connections", "PREWARM_MAX_CONNECTIONS", K_COUNT, OFF(max_connections), sizeof(size_t), 1, 1000000,
     "HTTP connection cap (1024)"},
    {"max-agents", "PREWARM_MAX_AGENTS", K_COUNT, OFF(max_agents), sizeof(size_t), 1, 1000000,
     "agent sessions (10000)"},
    {"telemetry-max-rows", "PREWARM_TELEMETRY_MAX_ROWS", K_COUNT, OFF(telemetry_max_rows), sizeof(size_t), 100,
     100000000, "telemetry rows buffered while PostgreSQL is away (100000)"},
    {"log-level", "PREWARM_LOG_LEVEL", K_LEVEL, OFF(log_level), 0, 0, 0, "debug|info|warn|error (info)"},
    {"model", "PREWARM_MODEL", K_STR, OFF(model_path), SZ(model_path), 0, 0,
     "predictor model file; empty or missing: recent-rate heuristic (models/default.json)"},
    {"restore-ms", "PREWARM_RESTORE_MS", K_MS, OFF(restore_ms), 0, 1, 600000,
     "expected restore time, used to size predictive pools (200)"},
    {"retrain-every", "PREWARM_RETRAIN_EVERY", K_MS, OFF(retrain_every_ms), 0, 0, 7 * 24 * 3600 * 1000LL,
     "retrain the model in the background this often, from recent history; 0 = never (6h)"},
    {"retrain-minutes", "PREWARM_RETRAIN_MINUTES", K_COUNT, OFF(retrain_minutes), sizeof(size_t), 240, 10080,
     "minutes of per-function history kept for retraining, 2 bytes each (360)"},
    {"replica-name", "PREWARM_REPLICA_NAME", K_STR, OFF(replica_name), SZ(replica_name), 0, 0,
     "this replica's name in the leader record and logs (host name)"},
    {"leader-renew", "PREWARM_LEADER_RENEW", K_MS, OFF(leader_renew_ms), 0, 50, 60000,
     "the leader renews its lease in PostgreSQL this often (500ms)"},
    {"leader-lease", "PREWARM_LEADER_LEASE", K_MS, OFF(leader_lease_ms), 0, 100, 600000,
     "a leader acts at most this long after its last renewal (2s)"},
    {"leader-takeover", "PREWARM_LEADER_TAKEOVER", K_MS, OFF(leader_takeover_ms), 0, 200, 600000,
     "a follower deposes a leader silent this long (4s; more than the lease)"},
    {"https", "PREWARM_HTTPS", K_STR, OFF(https), SZ(https), 0, 0,
     "also serve the HTTP API over TLS on IPV4:PORT (needs --https-cert); plain --http stays, "
     "bind it to 127.0.0.1 to offer TLS only"},
    {"https-cert", "PREWARM_HTTPS_CERT", K_STR, OFF(https_cert), SZ(https_cert), 0, 0,
     "the HTTPS listener's certificate and unencrypted key, one PEM file"},
    {"agents-tls-cert", "PREWARM_AGENTS_TLS_CERT", K_STR, OFF(agents_tls_cert), SZ(agents_tls_cert), 0, 0,
     "with a tls+tcp:// --agents URL: the scheduler's certificate and key, one PEM file"},
    {"agents-tls-ca", "PREWARM_AGENTS_TLS_CA", K_STR, OFF(agents_tls_ca), SZ(agents_tls_ca), 0, 0,
     "with a tls+tcp:// --agents URL: the CA that signs agents' certificates (each must name its agent id)"},
    {"tokens-file", "PREWARM_TOKENS_FILE", K_STR, OFF(tokens_file), SZ(tokens_file), 0, 0,
     "API bearer tokens, one \"ROLE TOKEN [NAME]\" per line (viewer|gateway|operator); also "
     "PREWARM_TOKENS (entries split by ';'); none: the API is open"},
    {"model-dir", "PREWARM_MODEL_DIR", K_STR, OFF(model_dir), SZ(model_dir), 0, 0,
     "trained models are kept here as VERSION.json and registered in PostgreSQL (models/trained)"},
    {"model-keep", "PREWARM_MODEL_KEEP", K_COUNT, OFF(model_keep), sizeof(size_t), 0, 100000,
     "after each training, keep the files of this many newest models besides the active one and "
     "the one in use, delete older ones (their registry rows stay); 0 = keep all (20)"},
    {"placement-weights", "PREWARM_PLACEMENT_WEIGHTS", K_WEIGHTS, OFF(placement.w), 0, 0, 0,
     "placement score weights, any of cost=,fit=,spread=,snapshot=,load= (cost=4,fit=1,spread=1,"
     "snapshot=0.5,load=0.5)"},
    {"placement-candidates", "PREWARM_PLACEMENT_CANDIDATES", K_COUNT, OFF(placement.candidates), sizeof(uint32_t),
     1, 4096, "feasible NUMA nodes scored per host class (8)"},
    {"placement-scan-budget", "PREWARM_PLACEMENT_SCAN_BUDGET", K_COUNT, OFF(placement.scan_budget),
     sizeof(uint32_t), 1, 1000000, "NUMA nodes looked at per host class before moving on (64)"},
};

/* The placement weights by name, for the "cost=4,fit=1" form and the file's object. */
static const struct {
    const char *name;
    size_t off;
} weights[] = {
    {"cost", offsetof(struct pw_placer_weights, cost)},
    {"fit", offsetof(struct pw_placer_weights, fit)},
    {"spread", offsetof(struct pw_placer_weights, spread)},
    {"snapshot", offsetof(struct pw_placer_weights, snapshot)},
    {"load", offsetof(struct pw_placer_weights, load)},
};

/* weight_index returns the index in weights[] of the weight called name (len bytes), or -1. */
static int weight_index(const char *name, size_t len)
{
    for (size_t i = 0; i < PW_ARRAY_LEN(weights); i++)
        if (strlen(weights[i].name) == len && memcmp(weights[i].name, name, len) == 0)
            return (int)i;
    return -1;
}

static double *weight_field(struct pw_placer_weights *w, int i)
{
    return (double *)(void *)((char *)w + weights[i].off);
}

/* set_weight checks one weight's value (finite, >= 0) and stores it. */
static int set_weight(double *field, const char *name, int name_len, double v, const char *from, char *errbuf,
                      size_t errlen)
{
    if (!isfinite(v) || v < 0) {
        snprintf(errbuf, errlen, "%s: placement weight %.*s must be a finite number >= 0, got %g", from, name_len,
                 name, v);
        return PW_ERR_INVAL;
    }
    *field = v;
    return PW_OK;
}

/* parse_weights applies "name=value,..." to a copy of *w and stores it only when all of it is
 * valid: each name once, one of the five, each value a finite number >= 0. */
static int parse_weights(struct pw_placer_weights *w, const char *val, const char *from, char *errbuf,
                         size_t errlen)
{
    struct pw_placer_weights nw = *w;
    unsigned seen = 0;
    const char *p = val;
    for (;;) {
        while (*p == ' ')
            p++;
        const char *name = p;
        while (*p != '\0' && *p != '=' && *p != ',' && *p != ' ')
            p++;
        const char *name_end = p;
        while (*p == ' ')
            p++;
        int name_len = (int)(name_end - name);
        if (*p != '=' || name_len == 0) {
            snprintf(errbuf, errlen, "%s: placement weights must look like cost=4,fit=1,spread=1,snapshot=0.5,"
                                     "load=0.5, got \"%s\"", from, val);
            return PW_ERR_INVAL;
        }
        int wi = weight_index(name, (size_t)name_len);
        if (wi < 0) {
            snprintf(errbuf, errlen, "%s: unknown placement weight \"%.*s\" (cost, fit, spread, snapshot or load)",
                     from, name_len, name);
            return PW_ERR_INVAL;
        }
        unsigned bit = 1u << wi;
        if (seen & bit) {
            snprintf(errbuf, errlen, "%s: placement weight %.*s given twice", from, name_len, name);
            return PW_ERR_INVAL;
        }
        seen |= bit;
        p++;
        char *end;
        errno = 0;
        double v = strtod(p, &end);
        if (end == p || errno != 0) {
            snprintf(errbuf, errlen, "%s: placement weight %.*s needs a number, got \"%s\"", from, name_len, name,
                     p);
            return PW_ERR_INVAL;
        }
        if (set_weight(weight_field(&nw, wi), name, name_len, v, from, errbuf, errlen) != PW_OK)
            return PW_ERR_INVAL;
        p = end;
        while (*p == ' ')
            p++;
        if (*p == '\0')
            break;
        if (*p != ',') {
            snprintf(errbuf, errlen, "%s: placement weights are separated by commas, got \"%s\"", from, val);
            return PW_ERR_INVAL;
        }
        p++;
    }
    *w = nw;
    return PW_OK;
}

static int set_value(struct pw_sched_config *c, const struct setting *s, const char *val, const char *from,
                     char *errbuf, size_t errlen)
{
    char *base = (char *)c;
    switch (s->kind) {
    case K_STR:
        if (strlen(val) >= s->size) {
            snprintf(errbuf, errlen, "%s: %s is too long (max %zu bytes)", from, s->key, s->size - 1);
            return PW_ERR_INVAL;
        }
        pw_strlcpy(base + s->off, val, s->size);
        return PW_OK;
    case K_HOSTPORT: {
        const char *colon = strrchr(val, ':');
        char *end;
        errno = 0;
        long port = colon ? strtol(colon + 1, &end, 10) : -1;
        if (colon == NULL || colon == val || (size_t)(colon - val) >= sizeof(c->http_host) || errno != 0 ||
            *end != '\0' || port < 1 || port > 65535) {
            snprintf(errbuf, errlen, "%s: %s must be HOST:PORT with a port in 1..65535, got \"%s\"", from, s->key, val);
            return PW_ERR_INVAL;
        }
        const char *h = val;
        size_t hl = (size_t)(colon - val);
        if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
            h++;
            hl -= 2;
        }
        memcpy(c->http_host, h, hl);
        c->http_host[hl] = '\0';
        c->http_port = (int)port;
        return PW_OK;
    }
    case K_MS:
    case K_COUNT: {
        int64_t v;
        if (s->kind == K_MS) {
            /* A bare integer means milliseconds, as the name says; "5s", "2m" also work. */
            char *end;
            errno = 0;
            long long n = strtoll(val, &end, 10);
            if (errno == 0 && *end == '\0' && end != val) {
                v = n;
            } else if (pw_parse_duration_ms(val, &v) != PW_OK) {
                snprintf(errbuf, errlen, "%s: %s must be milliseconds or a duration like 5s, got \"%s\"", from,
                         s->key, val);
                return PW_ERR_INVAL;
            }
        } else {
            char *end;
            errno = 0;
            long long n = strtoll(val, &end, 10);
            if (errno != 0 || *end != '\0' || end == val) {
                snprintf(errbuf, errlen, "%s: %s must be an integer, got \"%s\"", from, s->key, val);
                return PW_ERR_INVAL;
            }
            v = n;
        }
        if (v < s->min || v > s->max) {
            snprintf(errbuf, errlen, "%s: %s must be in %lld..%lld, got %lld", from, s->key, (long long)s->min,
                     (long long)s->max, (long long)v);
            return PW_ERR_INVAL;
        }
        if (s->kind == K_MS)
            *(int64_t *)(void *)(base + s->off) = v;
        else if (s->size == sizeof(uint32_t))
            *(uint32_t *)(void *)(base + s->off) = (uint32_t)v;
        else
            *(size_t *)(void *)(base + s->off) = (size_t)v;
        return PW_OK;
    }
    case K_WEIGHTS:
        return parse_weights(&c->placement.w, val, from, errbuf, errlen);
    case K_LEVEL: {
        int l = pw_log_parse_level(val);
        if (l < 0) {
            snprintf(errbuf, errlen, "%s: %s must be debug, info, warn or error, got \"%s\"", from, s->key, val);
            return PW_ERR_INVAL;
        }
        c->log_level = l;
        return PW_OK;
    }
    }
    return PW_ERR_INVAL;
}

/* json_scalar renders a file value as the text a flag would carry: a string as is, an integer
 * in decimal. Returns -1 for anything else. */
static int json_scalar(const cJSON *it, char *val, size_t n)
{
    if (cJSON_IsString(it))
        pw_strlcpy(val, it->valuestring, n);
    else if (cJSON_IsNumber(it) && fabs(it->valuedouble) < 9.0e18 && it->valuedouble == floor(it->valuedouble))
        snprintf(val, n, "%lld", (long long)it->valuedouble); /* in range: the cast is defined */
    else
        return -1;
    return 0;
}

static const struct setting *setting_find(const char *key)
{
    for (size_t i = 0; i < PW_ARRAY_LEN(settings); i++)
        if (strcmp(settings[i].key, key) == 0)
            return &settings[i];
    return NULL;
}

/* load_placement reads the file's "placement" object: "weights" (an object of numbers, or the
 * flag's string form), "candidates" and "scan_budget". */
static int load_placement(struct pw_sched_config *c, const cJSON *obj, const char *from, char *errbuf,
                          size_t errlen)
{
    if (!cJSON_IsObject(obj)) {
        snprintf(errbuf, errlen, "%s: \"placement\" must be an object", from);
        return PW_ERR_INVAL;
    }
    for (const cJSON *it = obj->child; it != NULL; it = it->next) {
        int rv;
        if (strcmp(it->string, "weights") == 0 && cJSON_IsObject(it)) {
            struct pw_placer_weights nw = c->placement.w;
            for (const cJSON *w = it->child; w != NULL; w = w->next) {
                int wi = weight_index(w->string, strlen(w->string));
                if (wi < 0) {
                    snprintf(errbuf, errlen,
                             "%s: unknown placement weight \"%s\" (cost, fit, spread, snapshot or load)", from,
                             w->string);
                    return PW_ERR_INVAL;
                }
                if (!cJSON_IsNumber(w)) {
                    snprintf(errbuf, errlen, "%s: placement weight %s must be a number", from, w->string);
                    return PW_ERR_INVAL;
                }
                rv = set_weight(weight_field(&nw, wi), w->string, (int)strlen(w->string), w->valuedouble, from,
                                errbuf, errlen);
                if (rv != PW_OK)
                    return rv;
            }
            c->placement.w = nw;
            continue;
        }
        const struct setting *s = NULL;
        if (strcmp(it->string, "weights") == 0)
            s = setting_find("placement-weights");
        else if (strcmp(it->string, "candidates") == 0)
            s = setting_find("placement-candidates");
        else if (strcmp(it->string, "scan_budget") == 0)
            s = setting_find("placement-scan-budget");
        if (s == NULL) {
            snprintf(errbuf, errlen, "%s: unknown key \"placement.%s\" (weights, candidates or scan_budget)", from,
                     it->string);
            return PW_ERR_INVAL;
        }
        char val[1100];
        if (json_scalar(it, val, sizeof(val)) != 0) {
            snprintf(errbuf, errlen, "%s: \"placement.%s\" must be %s", from, it->string,
                     s->kind == K_WEIGHTS ? "an object of numbers or a string" : "an integer");
            return PW_ERR_INVAL;
        }
        rv = set_value(c, s, val, from, errbuf, errlen);
        if (rv != PW_OK)
            return rv;
    }
    return PW_OK;
}

static int load_file(struct pw_sched_config *c, const char *path, char *errbuf, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(errbuf, errlen, "config %s: %s", path, strerror(errno));
        return PW_ERR_INVAL;
    }
    struct pw_buf b;
    pw_buf_init(&b, 1 << 20);
    char chunk[4096];
    size_t n;
    int rv = PW_OK;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (pw_buf_add(&b, chunk, n) != PW_OK) {
            snprintf(errbuf, errlen, "config %s: larger than 1 MiB", path);
            rv = PW_ERR_INVAL;
            break;
        }
    }
    fclose(f);
    cJSON *root = NULL;
    if (rv == PW_OK) {
        root = cJSON_ParseWithLength(b.data ? b.data : "", b.len);
        if (root == NULL || !cJSON_IsObject(root)) {
            snprintf(errbuf, errlen, "config %s: not a JSON object", path);
            rv = PW_ERR_INVAL;
        }
    }
    char from[300];
    snprintf(from, sizeof(from), "config %s", path);
    for (cJSON *it = root ? root->child : NULL; rv == PW_OK && it != NULL; it = it->next) {
        if (strcmp(it->string, "placement") == 0) {
            rv = load_placement(c, it, from, errbuf, errlen);
            continue;
        }
        const struct setting *s = NULL;
        for (size_t i = 0; i < PW_ARRAY_LEN(settings); i++) {
            /* JSON keys use underscores where flags use dashes. */
            char key[64];
            pw_strlcpy(key, settings[i].key, sizeof(key));
            for (char *p = key; *p; p++)
                if (*p == '-')
                    *p = '_';
            if (strcmp(key, it->string) == 0)
                s = &settings[i];
        }
        if (s == NULL) {
            snprintf(errbuf, errlen, "config %s: unknown key \"%s\"", path, it->string);
            rv = PW_ERR_INVAL;
            break;
        }
        char val[1100];
        if (json_scalar(it, val, sizeof(val)) != 0) {
            snprintf(errbuf, errlen, "config %s: \"%s\" must be a string or an integer", path, it->string);
            rv = PW_ERR_INVAL;
            break;
        }
        rv = set_value(c, s, val, from, errbuf, errlen);
    }
    cJSON_Delete(root);
    pw_buf_fini(&b);
    return rv;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: prewarmd [--config FILE] [options]\n\n"
                 "Prewarm scheduler: keeps pools of snapshot-restored microVMs warm.\n"
                 "Precedence: defaults < --config FILE (JSON, keys with underscores) < PREWARM_* env < flags.\n"
                 "The file may also nest {\"placement\": {\"weights\": {\"cost\": 4, ...}, \"candidates\": 8, "
                 "\"scan_budget\": 64}}.\n\n");
    fprintf(out, "  %-25s %s\n", "--config FILE", "JSON configuration file (env PREWARM_CONFIG)");
    for (size_t i = 0; i < PW_ARRAY_LEN(settings); i++) {
        char flag[64];
        snprintf(flag, sizeof(flag), "--%s V", settings[i].key);
        fprintf(out, "  %-25s %s (env %s)\n", flag, settings[i].help, settings[i].env);
    }
    fprintf(out, "  %-25s %s\n", "--help", "this text");
    fprintf(out, "  %-25s %s\n", "--version", "print the version");
}

static int config_load(struct pw_sched_config *c, int argc, char **argv, char *errbuf, size_t errlen);

/* pw_sched_config_load: see config.h. Reasons quote what the operator wrote; control
 * characters in it are shown as '?', so a reason is always one printable line. */
int pw_sched_config_load(struct pw_sched_config *c, int argc, char **argv, char *errbuf, size_t errlen)
{
    if (errlen > 0)
        errbuf[0] = '\0';
    int rv = config_load(c, argc, argv, errbuf, errlen);
    for (char *p = errbuf; rv > 0 && errlen > 0 && *p != '\0'; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    return rv;
}

static int config_load(struct pw_sched_config *c, int argc, char **argv, char *errbuf, size_t errlen)
{
    pw_sched_config_default(c);
    enum { N = PW_ARRAY_LEN(settings) };
    struct option opts[N + 4];
    for (size_t i = 0; i < N; i++)
        opts[i] = (struct option){settings[i].key, required_argument, NULL, (int)(256 + i)};
    opts[N] = (struct option){"config", required_argument, NULL, 'c'};
    opts[N + 1] = (struct option){"help", no_argument, NULL, 'h'};
    opts[N + 2] = (struct option){"version", no_argument, NULL, 'V'};
    opts[N + 3] = (struct option){NULL, 0, NULL, 0};

    /* Pass 1: find --config, --help, --version and reject unknown flags. */
    const char *config_path = getenv("PREWARM_CONFIG");
    opterr = 0;
    optind = 1;
    int ch;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (ch == 'c') {
            config_path = optarg;
        } else if (ch == 'h') {
            usage(stdout);
            return -1;
        } else if (ch == 'V') {
            printf("prewarmd %s\n", PW_VERSION);
            return -1;
        } else if (ch == '?' || ch == ':') {
            if (optopt >= 256 || optopt == 'c')
                snprintf(errbuf, errlen, "flag %s needs a value", argv[optind - 1]);
            else
                snprintf(errbuf, errlen, "unknown flag %s (see --help)", argv[optind - 1]);
            return PW_ERR_INVAL;
        }
    }
    if (optind < argc) {
        snprintf(errbuf, errlen, "unexpected argument \"%s\" (see --help)", argv[optind]);
        return PW_ERR_INVAL;
    }
    if (config_path != NULL && config_path[0] != '\0') {
        int rv = load_file(c, config_path, errbuf, errlen);
        if (rv != PW_OK)
            return rv;
    }
    for (size_t i = 0; i < N; i++) {
        const char *v = getenv(settings[i].env);
        if (v != NULL) {
            int rv = set_value(c, &settings[i], v, settings[i].env, errbuf, errlen);
            if (rv != PW_OK)
                return rv;
        }
    }
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (ch >= 256) {
            const struct setting *s = &settings[ch - 256];
            char from[80];
            snprintf(from, sizeof(from), "flag --%s", s->key);
            int rv = set_value(c, s, optarg, from, errbuf, errlen);
            if (rv != PW_OK)
                return rv;
        }
    }
    if (c->adopt_grace_ms < 0)
        c->adopt_grace_ms = 3 * c->heartbeat_ms;
    if (c->acquire_timeout_ms > c->acquire_timeout_max_ms)
        c->acquire_timeout_ms = c->acquire_timeout_max_ms;
    char why[200];
    if (pw_placer_config_validate(&c->placement, why, sizeof(why)) != PW_OK) {
        snprintf(errbuf, errlen, "placement configuration: %s", why);
        return PW_ERR_INVAL;
    }
    if ((c->https[0] != '\0') != (c->https_cert[0] != '\0')) {
        snprintf(errbuf, errlen, "--https and --https-cert go together");
        return PW_ERR_INVAL;
    }
    int tls = strncmp(c->agents_url, "tls+tcp://", 10) == 0;
    if (tls && (c->agents_tls_cert[0] == '\0' || c->agents_tls_ca[0] == '\0')) {
        snprintf(errbuf, errlen, "--agents %s is TLS: --agents-tls-cert and --agents-tls-ca are required", c->agents_url);
        return PW_ERR_INVAL;
    }
    if (!tls && (c->agents_tls_cert[0] != '\0' || c->agents_tls_ca[0] != '\0')) {
        snprintf(errbuf, errlen, "--agents-tls-cert/--agents-tls-ca need a tls+tcp:// --agents URL, not %s",
                 c->agents_url);
        return PW_ERR_INVAL;
    }
    if (!(c->leader_renew_ms < c->leader_lease_ms && c->leader_lease_ms < c->leader_takeover_ms)) {
        snprintf(errbuf, errlen, "leader timing: need --leader-renew < --leader-lease < --leader-takeover");
        return PW_ERR_INVAL;
    }
    if (c->tokens_file[0] != '\0' && pw_auth_load_file(&c->auth, c->tokens_file, errbuf, errlen) != PW_OK)
        return PW_ERR_INVAL;
    const char *env_tokens = getenv("PREWARM_TOKENS");
    if (env_tokens != NULL && pw_auth_parse(&c->auth, env_tokens, "PREWARM_TOKENS", errbuf, errlen) != PW_OK)
        return PW_ERR_INVAL;
    return PW_OK;
}
