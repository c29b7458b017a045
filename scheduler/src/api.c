/* api.c — prewarmd's HTTP API: the gateway's acquire/release, operators' functions and pools,
 * hosts, VMs, health and metrics. Every error is {"error":{"code","message"}} with its status;
 * a request that fails changes nothing. */
#include "daemon.h"

#include "models.h"
#include "predict.h"

#include "pw/error.h"
#include "pw/json.h"
#include "pw/log.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROUTE_PARTS 6

enum { ERR_NOTFOUND, ERR_LIMIT, ERR_BAD, ERR_STORE };
enum { WRITE_PUT, WRITE_DELETE, WRITE_DRAIN };

/* ---- who is asking ---- */

/* actor names the caller in audit rows: its token's name, or "api" when authentication is off. */
static const char *actor(const struct pw_daemon *d, const struct pw_http_req *r)
{
    const struct pw_auth_token *who;
    if (d->cfg.auth.n > 0 && pw_auth_check(&d->cfg.auth, pw_http_req_header(r, "Authorization"), &who) == PW_AUTH_OK)
        return who->name;
    return "api";
}

/* ---- responses ---- */

static void respond_buf(struct pw_http_req *r, int status, struct pw_buf *b, const char *extra)
{
    pw_http_respond(r, status, NULL, b->data ? b->data : "{}", b->len, extra);
    pw_buf_fini(b);
}

static void respond_err(struct pw_http_req *r, enum pw_err err, const char *message)
{
    pw_http_respond_error(r, pw_err_http_status(err), pw_err_name(err), message, NULL);
}

/* add_num appends v in the shortest form that reads back as the same double (null when it is
 * not finite, which JSON cannot carry). */
static void add_num(struct pw_buf *b, double v)
{
    if (!isfinite(v)) {
        pw_buf_adds(b, "null");
        return;
    }
    char s[32];
    snprintf(s, sizeof(s), "%.15g", v);
    if (strtod(s, NULL) != v)
        snprintf(s, sizeof(s), "%.17g", v);
    pw_buf_adds(b, s);
}

static void names_json(struct pw_buf *b, const char *key, const char (*names)[PW_NAME_MAX], size_t n)
{
    pw_buf_printf(b, "\"%s\":[", key);
    for (size_t i = 0; i < n && i < PW_PLACE_MAX_SEL; i++) {
        if (i > 0)
            pw_buf_adds(b, ",");
        pw_buf_add_json_str(b, names[i]);
    }
    pw_buf_adds(b, "]");
}

static void placement_json(struct pw_buf *b, const struct pw_placement_spec *p)
{
    pw_buf_adds(b, "{");
    names_json(b, "clouds", p->clouds, p->nclouds);
    pw_buf_adds(b, ",");
    names_json(b, "regions", p->regions, p->nregions);
    pw_buf_adds(b, ",");
    names_json(b, "zones", p->zones, p->nzones);
    pw_buf_adds(b, ",\"max_host_share\":");
    add_num(b, p->max_host_share);
    pw_buf_adds(b, ",\"max_zone_share\":");
    add_num(b, p->max_zone_share);
    pw_buf_adds(b, "}");
}

static void function_json(struct pw_buf *b, const struct pw_function_spec *s)
{
    pw_buf_adds(b, "{\"name\":");
    pw_buf_add_json_str(b, s->name);
    pw_buf_adds(b, ",\"image\":");
    pw_buf_add_json_str(b, s->image);
    pw_buf_printf(b, ",\"memory_mb\":%u,\"vcpus\":%u,\"pool\":{\"policy\":\"%s\",\"min\":%u,\"max\":%u,"
                     "\"keepalive_ms\":%" PRId64 ",\"quantile\":%g},\"placement\":",
                  s->memory_mb, s->vcpus, pw_policy_str(s->pool.kind), s->pool.min, s->pool.max, s->pool.keepalive_ms,
                  s->pool.quantile);
    placement_json(b, &s->placement);
    pw_buf_adds(b, "}");
}

static void pool_json(struct pw_buf *b, const struct pw_pool_view *v)
{
    pw_buf_adds(b, "{\"function\":");
    pw_buf_add_json_str(b, v->spec.name);
    pw_buf_printf(b,
                  ",\"policy\":\"%s\",\"min\":%u,\"max\":%u,\"keepalive_ms\":%" PRId64 ",\"quantile\":%g,"
                  "\"target_idle\":%u,\"floor\":%u,"
                  "\"restoring\":%u,\"idle\":%u,\"leased\":%u,\"stopping\":%u,\"failed\":%u,\"waiters\":%u,"
                  "\"outgoing\":%u,\"restore_failures\":%u,"
                  "\"acquires\":%" PRIu64 ",\"warm\":%" PRIu64 ",\"cold\":%" PRIu64 ",\"timeouts\":%" PRIu64 "}",
                  pw_policy_str(v->spec.pool.kind), v->spec.pool.min, v->spec.pool.max, v->spec.pool.keepalive_ms,
                  v->spec.pool.quantile, v->target_idle, v->floor, v->restoring, v->idle, v->leased, v->stopping, v->failed, v->waiters,
                  v->outgoing, v->restore_failures, v->acquires, v->warm, v->cold, v->timeouts);
}

/* ---- body parsing ---- */

/* parse_body returns the JSON object of the body (an empty body is {}), or NULL after
 * answering 400. */
static cJSON *parse_body(struct pw_http_req *r)
{
    size_t len;
    const char *body = pw_http_req_body(r, &len);
    if (len == 0)
        return cJSON_CreateObject();
    cJSON *j = cJSON_ParseWithLength(body, len);
    if (j == NULL || !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        respond_err(r, PW_ERR_PARSE, "request body must be a JSON object");
        return NULL;
    }
    return j;
}

/* get_int reads an optional integer field into *out within [min, max]. Returns 0 after
 * answering 400 when present but wrong. */
static int get_int(struct pw_http_req *r, const cJSON *obj, const char *key, int64_t min, int64_t max, int64_t *out)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (it == NULL)
        return 1;
    double v = cJSON_IsNumber(it) ? it->valuedouble : NAN;
    if (!cJSON_IsNumber(it) || v != floor(v) || v < (double)min || v > (double)max) {
        char msg[160];
        snprintf(msg, sizeof(msg), "\"%s\" must be an integer in %" PRId64 "..%" PRId64, key, min, max);
        respond_err(r, PW_ERR_INVAL, msg);
        return 0;
    }
    *out = (int64_t)v;
    return 1;
}

static int get_str(struct pw_http_req *r, const cJSON *obj, const char *key, char *out, size_t size)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (it == NULL)
        return 1;
    if (!cJSON_IsString(it) || strlen(it->valuestring) >= size) {
        char msg[160];
        snprintf(msg, sizeof(msg), "\"%s\" must be a string of at most %zu bytes", key, size - 1);
        respond_err(r, PW_ERR_INVAL, msg);
        return 0;
    }
    pw_strlcpy(out, it->valuestring, size);
    return 1;
}

/* The hot bodies (acquire, release) are small flat objects: pw_json_flat reads them without a
 * cJSON tree, and flat_int/flat_str check a member as get_int/get_str do, with the same
 * answers. Other bodies fall back to parse_body. */
static int flat_int(struct pw_http_req *r, const struct pw_json_flat *f, const char *key, int64_t min, int64_t max,
                    int64_t *out)
{
    const struct pw_json_member *m = pw_json_flat_get(f, key);
    if (m == NULL)
        return 1;
    if (m->is_str || m->num < min || m->num > max) {
        char msg[160];
        snprintf(msg, sizeof(msg), "\"%s\" must be an integer in %" PRId64 "..%" PRId64, key, min, max);
        respond_err(r, PW_ERR_INVAL, msg);
        return 0;
    }
    *out = m->num;
    return 1;
}

static int flat_str(struct pw_http_req *r, const struct pw_json_flat *f, const char *key, char *out, size_t size)
{
    const struct pw_json_member *m = pw_json_flat_get(f, key);
    if (m == NULL)
        return 1;
    if (!m->is_str || m->slen >= size) {
        char msg[160];
        snprintf(msg, sizeof(msg), "\"%s\" must be a string of at most %zu bytes", key, size - 1);
        respond_err(r, PW_ERR_INVAL, msg);
        return 0;
    }
    memcpy(out, m->str, m->slen);
    out[m->slen] = '\0';
    return 1;
}

/* apply_pool merges a pool object's fields into p. Returns 0 after answering 400. */
static int apply_pool(struct pw_http_req *r, const cJSON *obj, struct pw_pool_policy *p)
{
    char policy[32] = "";
    if (!get_str(r, obj, "policy", policy, sizeof(policy)))
        return 0;
    if (policy[0] != '\0') {
        int k = pw_policy_parse(policy);
        if (k < 0) {
            respond_err(r, PW_ERR_INVAL, "\"policy\" must be \"fixed\", \"keepalive\" or \"predictive\"");
            return 0;
        }
        p->kind = (enum pw_policy_kind)k;
    }
    int64_t min = p->min, max = p->max, ka = p->keepalive_ms;
    if (!get_int(r, obj, "min", 0, PW_POOL_HARD_MAX, &min) || !get_int(r, obj, "max", 0, PW_POOL_HARD_MAX, &max) ||
        !get_int(r, obj, "keepalive_ms", 0, 7 * 24 * 3600 * 1000LL, &ka))
        return 0;
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(obj, "quantile");
    if (q != NULL) {
        if (!cJSON_IsNumber(q) || !(q->valuedouble >= 0.5 && q->valuedouble < 1.0)) {
            respond_err(r, PW_ERR_INVAL, "\"quantile\" must be a number in [0.5, 1)");
            return 0;
        }
        p->quantile = q->valuedouble;
    }
    p->min = (uint32_t)min;
    p->max = (uint32_t)max;
    p->keepalive_ms = ka;
    return 1;
}

/* get_names reads a placement list (an array of names, or null for none) into names. Returns 0
 * after answering 400. */
static int get_names(struct pw_http_req *r, const cJSON *it, char (*names)[PW_NAME_MAX], size_t *n)
{
    char msg[200];
    *n = 0;
    if (cJSON_IsNull(it))
        return 1;
    if (!cJSON_IsArray(it) || cJSON_GetArraySize(it) > PW_PLACE_MAX_SEL) {
        snprintf(msg, sizeof(msg), "\"placement.%s\" must be an array of at most %d names", it->string,
                 PW_PLACE_MAX_SEL);
        respond_err(r, PW_ERR_INVAL, msg);
        return 0;
    }
    const cJSON *e;
    cJSON_ArrayForEach(e, it) {
        if (!cJSON_IsString(e) || !pw_name_valid(e->valuestring)) {
            snprintf(msg, sizeof(msg),
                     "\"placement.%s\" entries must be names: 1-63 characters of [A-Za-z0-9._-] starting with a "
                     "letter or digit",
                     it->string);
            respond_err(r, PW_ERR_INVAL, msg);
            return 0;
        }
        pw_strlcpy(names[(*n)++], e->valuestring, PW_NAME_MAX);
    }
    return 1;
}

/* parse_placement reads a function's "placement" object into out, replacing it whole: a list
 * or share it does not name is no constraint, and null or {} clears them all. Returns 0 after
 * answering 400, leaving out untouched. */
static int parse_placement(struct pw_http_req *r, const cJSON *obj, struct pw_placement_spec *out)
{
    struct pw_placement_spec p;
    memset(&p, 0, sizeof(p));
    if (cJSON_IsNull(obj)) {
        *out = p;
        return 1;
    }
    if (!cJSON_IsObject(obj)) {
        respond_err(r, PW_ERR_INVAL, "\"placement\" must be an object");
        return 0;
    }
    for (const cJSON *it = obj->child; it != NULL; it = it->next) {
        int ok = 1;
        if (strcmp(it->string, "clouds") == 0) {
            ok = get_names(r, it, p.clouds, &p.nclouds);
        } else if (strcmp(it->string, "regions") == 0) {
            ok = get_names(r, it, p.regions, &p.nregions);
        } else if (strcmp(it->string, "zones") == 0) {
            ok = get_names(r, it, p.zones, &p.nzones);
        } else if (strcmp(it->string, "max_host_share") == 0 || strcmp(it->string, "max_zone_share") == 0) {
            if (!cJSON_IsNumber(it) || !(it->valuedouble >= 0 && it->valuedouble <= 1)) {
                char msg[160];
                snprintf(msg, sizeof(msg), "\"placement.%s\" must be a number in [0, 1] (0: no limit)", it->string);
                respond_err(r, PW_ERR_INVAL, msg);
                return 0;
            }
            if (strcmp(it->string, "max_host_share") == 0)
                p.max_host_share = it->valuedouble;
            else
                p.max_zone_share = it->valuedouble;
        } else {
            char msg[200];
            snprintf(msg, sizeof(msg),
                     "unknown key \"placement.%.63s\" (clouds, regions, zones, max_host_share, max_zone_share)",
                     it->string);
            respond_err(r, PW_ERR_INVAL, msg);
            return 0;
        }
        if (!ok)
            return 0;
    }
    char why[200];
    if (pw_placement_spec_validate(&p, why, sizeof(why)) != PW_OK) {
        respond_err(r, PW_ERR_INVAL, why);
        return 0;
    }
    *out = p;
    return 1;
}

/* ---- config writes: store first, then the core ---- */

static void host_json(struct pw_buf *b, const struct pw_host_view *h, int64_t now);

/* drained applies a committed drain or undrain to the core and answers with the host. */
static void drained(struct pw_daemon *d, struct pending_write *w, struct pw_buf *b)
{
    int64_t now = pw_daemon_now(d);
    /* The host was known when the request came and the core never forgets a host; should that
     * change, a drain is still remembered for its next hello. */
    if (pw_core_host_drain(d->core, now, w->host, w->drain) != PW_OK && w->drain)
        pw_core_host_remember_drain(d->core, w->host);
    pw_log_info("api", "host %s %s by the operator", w->host, w->drain ? "drained" : "undrained");
    pw_daemon_drain(d);
    struct pw_host_view v;
    if (pw_core_host_find(d->core, w->host, &v) != PW_OK) {
        pw_buf_fini(b);
        respond_err(w->http, PW_ERR_NOTFOUND, "no such host");
        return;
    }
    host_json(b, &v, now);
    respond_buf(w->http, 200, b, NULL);
}

static void on_written(void *arg, int err, const char *msg)
{
    struct pending_write *w = arg;
    struct pw_daemon *d = w->d;
    if (err != PW_OK) {
        pw_log_warn("api", "store write for %s failed: %s", w->kind == WRITE_DRAIN ? w->host : w->spec.name,
                    msg ? msg : "");
        d->acquire_errors[ERR_STORE]++;
        respond_err(w->http, PW_ERR_STORE, "the store is unavailable; nothing was changed");
        free(w);
        return;
    }
    int64_t now = pw_daemon_now(d);
    struct pw_buf b;
    pw_buf_init(&b, 1 << 16);
    if (w->kind == WRITE_DRAIN) {
        drained(d, w, &b);
        free(w);
        return;
    }
    if (w->kind == WRITE_PUT) {
        pw_core_function_put(d->core, now, &w->spec);
        if (w->spec.pool.kind != PW_POLICY_PREDICTIVE)
            pw_core_clear_dynamic(d->core, now, w->spec.name);
        struct pw_pool_view v;
        if (w->pool_only && pw_core_pool_view(d->core, w->spec.name, &v) == PW_OK)
            pool_json(&b, &v);
        else
            function_json(&b, &w->spec);
        pw_log_info("api", "function %s: policy %s min %u max %u keepalive %" PRId64 " ms", w->spec.name,
                    pw_policy_str(w->spec.pool.kind), w->spec.pool.min, w->spec.pool.max, w->spec.pool.keepalive_ms);
    } else {
        pw_core_function_delete(d->core, now, w->spec.name);
        pw_buf_adds(&b, "{\"deleted\":");
        pw_buf_add_json_str(&b, w->spec.name);
        pw_buf_adds(&b, "}");
        pw_log_info("api", "function %s deleted", w->spec.name);
    }
    pw_daemon_drain(d);
    respond_buf(w->http, 200, &b, NULL);
    free(w);
}

static void write_spec(struct pw_daemon *d, struct pw_http_req *r, const struct pw_function_spec *spec, int pool_only)
{
    char why[160];
    if (pw_function_spec_validate(spec, why, sizeof(why)) != PW_OK) {
        respond_err(r, PW_ERR_INVAL, why);
        return;
    }
    struct pending_write *w = pw_xcalloc(1, sizeof(*w));
    w->d = d;
    w->http = r;
    w->kind = WRITE_PUT;
    w->pool_only = pool_only;
    w->spec = *spec;
    pw_store_put_function(d->store, spec, actor(d, r), on_written, w);
}

static void put_function(struct pw_daemon *d, struct pw_http_req *r, const char *name)
{
    cJSON *j = parse_body(r);
    if (j == NULL)
        return;
    struct pw_function_spec s;
    if (pw_core_function_get(d->core, name, &s) != PW_OK) {
        if (pw_core_function_count(d->core) >= d->cfg.max_functions) {
            cJSON_Delete(j);
            d->functions_refused++;
            char msg[160];
            snprintf(msg, sizeof(msg), "at most %zu functions are registered (--max-functions); delete one first",
                     d->cfg.max_functions);
            respond_err(r, PW_ERR_LIMIT, msg);
            return;
        }
        memset(&s, 0, sizeof(s));
        pw_strlcpy(s.name, name, sizeof(s.name));
        s.memory_mb = 128;
        s.vcpus = 1;
        pw_pool_policy_default(&s.pool);
    }
    int64_t mem = s.memory_mb, vcpus = s.vcpus;
    int ok = get_str(r, j, "image", s.image, sizeof(s.image)) && get_int(r, j, "memory_mb", 1, 1048576, &mem) &&
             get_int(r, j, "vcpus", 1, 256, &vcpus);
    if (ok) {
        const cJSON *pool = cJSON_GetObjectItemCaseSensitive(j, "pool");
        if (pool != NULL && !cJSON_IsObject(pool)) {
            respond_err(r, PW_ERR_INVAL, "\"pool\" must be an object");
            ok = 0;
        } else if (pool != NULL) {
            ok = apply_pool(r, pool, &s.pool);
        }
    }
    if (ok) {
        /* Absent keeps what the function has (nothing for a new one), as for the pool. */
        const cJSON *placement = cJSON_GetObjectItemCaseSensitive(j, "placement");
        if (placement != NULL)
            ok = parse_placement(r, placement, &s.placement);
    }
    cJSON_Delete(j);
    if (!ok)
        return;
    s.memory_mb = (uint32_t)mem;
    s.vcpus = (uint32_t)vcpus;
    if (s.image[0] == '\0')
        pw_strlcpy(s.image, s.name, sizeof(s.image)); /* the image defaults to the function's name */
    write_spec(d, r, &s, 0);
}

static void put_pool(struct pw_daemon *d, struct pw_http_req *r, const char *name)
{
    struct pw_function_spec s;
    if (pw_core_function_get(d->core, name, &s) != PW_OK) {
        respond_err(r, PW_ERR_NOTFOUND, "no such function");
        return;
    }
    cJSON *j = parse_body(r);
    if (j == NULL)
        return;
    int ok = apply_pool(r, j, &s.pool);
    cJSON_Delete(j);
    if (ok)
        write_spec(d, r, &s, 1);
}

static void delete_function(struct pw_daemon *d, struct pw_http_req *r, const char *name)
{
    struct pw_function_spec s;
    if (pw_core_function_get(d->core, name, &s) != PW_OK) {
        respond_err(r, PW_ERR_NOTFOUND, "no such function");
        return;
    }
    struct pending_write *w = pw_xcalloc(1, sizeof(*w));
    w->d = d;
    w->http = r;
    w->kind = WRITE_DELETE;
    w->spec = s;
    pw_store_delete_function(d->store, name, actor(d, r), on_written, w);
}

/* host_drain: POST /v1/hosts/{id}/drain and /undrain. The store first, then the core. */
static void host_drain(struct pw_daemon *d, struct pw_http_req *r, const char *id, int drain)
{
    struct pw_host_view v;
    if (pw_core_host_find(d->core, id, &v) != PW_OK) {
        respond_err(r, PW_ERR_NOTFOUND, "no such host");
        return;
    }
    /* The body carries nothing yet, but it must be empty or a JSON object. */
    cJSON *j = parse_body(r);
    if (j == NULL)
        return;
    cJSON_Delete(j);
    struct pending_write *w = pw_xcalloc(1, sizeof(*w));
    w->d = d;
    w->http = r;
    w->kind = WRITE_DRAIN;
    pw_strlcpy(w->host, id, sizeof(w->host));
    w->drain = drain;
    pw_store_set_host_drain(d->store, id, drain, actor(d, r), on_written, w);
}

/* ---- acquire and release ---- */

static int parked_eq(const struct pw_hnode *n, const void *key)
{
    return pw_container_of(n, struct parked, hnode)->req_id == *(const uint64_t *)key;
}

static void acquire(struct pw_daemon *d, struct pw_http_req *r, const char *name)
{
    int64_t timeout = d->cfg.acquire_timeout_ms;
    size_t len;
    const char *body = pw_http_req_body(r, &len);
    struct pw_json_flat f;
    int ok;
    if (pw_json_flat_parse(body, len, &f)) {
        ok = flat_int(r, &f, "timeout_ms", 1, d->cfg.acquire_timeout_max_ms, &timeout);
    } else {
        cJSON *j = parse_body(r);
        if (j == NULL)
            return;
        ok = get_int(r, j, "timeout_ms", 1, d->cfg.acquire_timeout_max_ms, &timeout);
        cJSON_Delete(j);
    }
    if (!ok)
        return;
    int64_t now = pw_daemon_now(d);
    uint64_t req_id = ++d->next_req_id;
    /* Park first: the answer may be queued by the core right away. */
    struct parked *p = pw_xcalloc(1, sizeof(*p));
    p->req_id = req_id;
    p->http = r;
    pw_htab_insert(&d->parked, &p->hnode, pw_hash_u64(req_id));
    int rv = pw_core_acquire(d->core, now, name, req_id, now + timeout);
    if (rv != PW_OK) {
        pw_htab_remove(&d->parked, &p->hnode);
        free(p);
        d->acquire_errors[rv == PW_ERR_NOTFOUND ? ERR_NOTFOUND : ERR_LIMIT]++;
        respond_err(r, (enum pw_err)rv,
                    rv == PW_ERR_NOTFOUND ? "no such function" : "too many acquires waiting for this function");
        return;
    }
    pw_daemon_drain(d);
}

void pw_api_answer(struct pw_daemon *d, const struct pw_action *a)
{
    uint64_t req_id = a->u.answer.req_id;
    struct pw_hnode *n = pw_htab_find(&d->parked, pw_hash_u64(req_id), &req_id, parked_eq);
    if (n == NULL) {
        /* Nobody waits (the client left and the request was swept): give the VM back. */
        if (a->u.answer.err == PW_OK)
            pw_core_release(d->core, pw_daemon_now(d), a->u.answer.lease.lease_id, 0, PW_RELEASE_OK);
        return;
    }
    struct parked *p = pw_container_of(n, struct parked, hnode);
    pw_htab_remove(&d->parked, &p->hnode);
    struct pw_http_req *r = p->http;
    free(p);
    if (pw_http_req_gone(r)) {
        if (a->u.answer.err == PW_OK)
            pw_core_release(d->core, pw_daemon_now(d), a->u.answer.lease.lease_id, 0, PW_RELEASE_OK);
        pw_http_respond(r, 499, NULL, "{}", 2, NULL);
        return;
    }
    if (a->u.answer.err == PW_ERR_TIMEOUT) {
        pw_http_respond_error(r, 503, pw_err_name(PW_ERR_TIMEOUT), "no warm VM became ready before the deadline",
                              "Retry-After: 1\r\n");
        return;
    }
    if (a->u.answer.err != PW_OK) {
        respond_err(r, (enum pw_err)a->u.answer.err, pw_strerror((enum pw_err)a->u.answer.err));
        return;
    }
    const struct pw_lease_info *l = &a->u.answer.lease;
    struct pw_buf b;
    pw_buf_init(&b, 4096);
    pw_buf_reserve(&b, 256 + strlen(a->function) + strlen(l->host) + strlen(l->address));
    /* The hottest answer: built without printf (the same bytes as "%016" PRIx64 and PRId64). */
    pw_buf_adds(&b, "{\"lease_id\":\"");
    pw_buf_add_hex16(&b, l->lease_id);
    pw_buf_adds(&b, "\",\"vm_id\":\"");
    pw_buf_add_hex16(&b, l->vm_id);
    pw_buf_adds(&b, "\",\"function\":");
    pw_buf_add_json_str(&b, a->function);
    pw_buf_adds(&b, ",\"host\":");
    pw_buf_add_json_str(&b, l->host);
    pw_buf_adds(&b, ",\"address\":");
    pw_buf_add_json_str(&b, l->address);
    pw_buf_adds(&b, l->cold ? ",\"start\":\"cold\",\"wait_ms\":" : ",\"start\":\"warm\",\"wait_ms\":");
    pw_buf_add_i64(&b, l->wait_ms);
    pw_buf_adds(&b, ",\"expires_in_ms\":");
    pw_buf_add_i64(&b, l->expires_at - pw_daemon_now(d));
    pw_buf_adds(&b, "}");
    respond_buf(r, 200, &b, NULL);
}

void pw_api_sweep(struct pw_daemon *d)
{
    size_t b = 0;
    struct pw_hnode *n = NULL, *e;
    while ((e = pw_htab_next(&d->parked, &b, &n)) != NULL) {
        struct parked *p = pw_container_of(e, struct parked, hnode);
        if (!pw_http_req_gone(p->http) && !d->stopping)
            continue;
        pw_core_acquire_cancel(d->core, pw_daemon_now(d), p->req_id);
        pw_htab_remove(&d->parked, &p->hnode);
        if (d->stopping && !pw_http_req_gone(p->http))
            respond_err(p->http, PW_ERR_UNAVAIL, "the scheduler is shutting down");
        else
            pw_http_respond(p->http, 499, NULL, "{}", 2, NULL);
        free(p);
    }
}

static int parse_hex_id(const char *s, uint64_t *out)
{
    size_t n = strlen(s);
    if (n == 0 || n > 16)
        return 0;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int x = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (x < 0)
            return 0;
        v = v << 4 | (uint64_t)x;
    }
    *out = v;
    return 1;
}

static void release(struct pw_daemon *d, struct pw_http_req *r, const char *id)
{
    uint64_t lease_id;
    if (!parse_hex_id(id, &lease_id)) {
        respond_err(r, PW_ERR_INVAL, "lease id must be 1-16 hex digits");
        return;
    }
    int64_t duration = 0;
    char outcome[16] = "ok";
    size_t len;
    const char *body = pw_http_req_body(r, &len);
    struct pw_json_flat f;
    int ok;
    if (pw_json_flat_parse(body, len, &f)) {
        ok = flat_int(r, &f, "duration_ms", 0, INT64_C(1) << 40, &duration) &&
             flat_str(r, &f, "outcome", outcome, sizeof(outcome));
    } else {
        cJSON *j = parse_body(r);
        if (j == NULL)
            return;
        ok = get_int(r, j, "duration_ms", 0, INT64_C(1) << 40, &duration) &&
             get_str(r, j, "outcome", outcome, sizeof(outcome));
        cJSON_Delete(j);
    }
    if (!ok)
        return;
    enum pw_release_outcome oc;
    if (strcmp(outcome, "ok") == 0)
        oc = PW_RELEASE_OK;
    else if (strcmp(outcome, "error") == 0)
        oc = PW_RELEASE_ERROR;
    else {
        respond_err(r, PW_ERR_INVAL, "\"outcome\" must be \"ok\" or \"error\"");
        return;
    }
    struct pw_vm_view held;
    if (pw_core_lease_find(d->core, lease_id, &held) == PW_OK)
        pw_predict_duration(d->predict, held.function, duration);
    int rv = pw_core_release(d->core, pw_daemon_now(d), lease_id, duration, oc);
    if (rv != PW_OK) {
        respond_err(r, PW_ERR_NOTFOUND, "no such lease (released already, expired, or its VM is gone)");
        return;
    }
    pw_daemon_drain(d);
    pw_http_respond(r, 200, NULL, "{\"released\":true}", 17, NULL);
}

/* ---- reads ---- */

/* A JSON array being filled by a core iteration. */
struct list_ctx {
    struct pw_buf *b;
    size_t n;
    int64_t now;
};

static void add_function(void *arg, const struct pw_function_spec *f)
{
    struct list_ctx *x = arg;
    if (x->n++ > 0)
        pw_buf_adds(x->b, ",");
    function_json(x->b, f);
}

static void list_functions(struct pw_daemon *d, struct pw_http_req *r)
{
    struct pw_buf b;
    pw_buf_init(&b, 64 << 20);
    pw_buf_adds(&b, "{\"functions\":[");
    struct list_ctx x = {&b, 0, 0};
    pw_core_function_each(d->core, add_function, &x);
    pw_buf_adds(&b, "]}");
    respond_buf(r, 200, &b, NULL);
}

static void host_json(struct pw_buf *b, const struct pw_host_view *h, int64_t now)
{
    pw_buf_adds(b, "{\"id\":");
    pw_buf_add_json_str(b, h->id);
    pw_buf_printf(b, ",\"state\":\"%s\",\"driver\":", pw_host_state_str(h->state));
    pw_buf_add_json_str(b, h->driver);
    pw_buf_printf(b, ",\"last_seen_ms_ago\":%" PRId64 ",\"load\":%.2f,\"vms\":%u", now - h->last_seen, h->load,
                  h->vms);
    pw_buf_printf(b, ",\"cordoned\":%s,\"cordon_probation\":%s,\"cordon_reason\":\"%s\",\"cordoned_ms_ago\":%" PRId64,
                  h->cordoned ? "true" : "false", h->cordon_probation ? "true" : "false", h->cordon_reason,
                  h->cordoned ? now - h->cordoned_since : (int64_t)0);
    pw_buf_printf(b, ",\"draining\":%s,\"agent_draining\":%s,\"cloud\":", h->draining ? "true" : "false",
                  h->agent_draining ? "true" : "false");
    pw_buf_add_json_str(b, h->cloud);
    pw_buf_adds(b, ",\"region\":");
    pw_buf_add_json_str(b, h->region);
    pw_buf_adds(b, ",\"zone\":");
    pw_buf_add_json_str(b, h->zone);
    pw_buf_adds(b, ",\"instance_type\":");
    pw_buf_add_json_str(b, h->instance_type);
    pw_buf_adds(b, ",\"cost_per_gib_hour\":");
    add_num(b, h->cost_per_gib_hour);
    pw_buf_printf(b, ",\"snapshots\":%zu,\"labels\":{", h->nsnapshots);
    for (size_t i = 0; i < h->nlabels; i++) {
        if (i > 0)
            pw_buf_adds(b, ",");
        pw_buf_add_json_str(b, h->labels[i].key);
        pw_buf_adds(b, ":");
        pw_buf_add_json_str(b, h->labels[i].value);
    }
    pw_buf_adds(b, "},\"numa\":[");
    for (size_t i = 0; i < h->nnuma; i++) {
        const struct pw_numa_node *nd = &h->numa[i];
        pw_buf_printf(b, "%s{\"id\":%d,\"cpus\":", i ? "," : "", nd->id);
        pw_buf_add_json_str(b, nd->cpulist);
        pw_buf_printf(b,
                      ",\"mem_total_mb\":%" PRIu64 ",\"mem_free_mb\":%" PRIu64 ",\"vcpu_total\":%d,\"vcpu_free\":%d}",
                      nd->mem_total_mb, nd->mem_free_mb, nd->vcpu_total, nd->vcpu_free);
    }
    pw_buf_adds(b, "]}");
}

static void add_host(void *arg, const struct pw_host_view *h)
{
    struct list_ctx *x = arg;
    if (x->n++ > 0)
        pw_buf_adds(x->b, ",");
    host_json(x->b, h, x->now);
}

static void list_hosts(struct pw_daemon *d, struct pw_http_req *r)
{
    struct pw_buf b;
    pw_buf_init(&b, 64 << 20);
    pw_buf_adds(&b, "{\"hosts\":[");
    struct list_ctx x = {&b, 0, pw_daemon_now(d)};
    pw_core_host_each(d->core, add_host, &x);
    pw_buf_adds(&b, "]}");
    respond_buf(r, 200, &b, NULL);
}

static void get_host(struct pw_daemon *d, struct pw_http_req *r, const char *id)
{
    struct pw_host_view v;
    if (pw_core_host_find(d->core, id, &v) != PW_OK) {
        respond_err(r, PW_ERR_NOTFOUND, "no such host");
        return;
    }
    struct pw_buf b;
    pw_buf_init(&b, 1 << 16);
    host_json(&b, &v, pw_daemon_now(d));
    respond_buf(r, 200, &b, NULL);
}

static void add_vm(void *arg, const struct pw_vm_view *v)
{
    struct list_ctx *x = arg;
    struct pw_buf *b = x->b;
    pw_buf_printf(b, "%s{\"vm_id\":\"%016" PRIx64 "\",\"function\":", x->n++ ? "," : "", v->vm_id);
    pw_buf_add_json_str(b, v->function);
    pw_buf_adds(b, ",\"host\":");
    pw_buf_add_json_str(b, v->host);
    pw_buf_printf(b, ",\"numa_node\":%d,\"state\":\"%s\",\"lease_id\":", v->numa_node, pw_vm_state_str(v->state));
    if (v->lease_id)
        pw_buf_printf(b, "\"%016" PRIx64 "\"}", v->lease_id);
    else
        pw_buf_adds(b, "null}");
}

static void list_vms(struct pw_daemon *d, struct pw_http_req *r)
{
    struct pw_buf b;
    pw_buf_init(&b, 256 << 20);
    pw_buf_adds(&b, "{\"vms\":[");
    struct list_ctx x = {&b, 0, 0};
    pw_core_vm_each(d->core, add_vm, &x);
    pw_buf_adds(&b, "]}");
    respond_buf(r, 200, &b, NULL);
}

static void leader_json(struct pw_daemon *d, struct pw_buf *b)
{
    struct pw_leader_status ls;
    pw_leader_status(d->leader, &ls);
    pw_buf_printf(b, "\"leader\":%s,\"may_act\":%s,\"epoch\":%" PRIu64 ",\"replica\":", ls.leader ? "true" : "false",
                  ls.may_act ? "true" : "false", ls.epoch);
    pw_buf_add_json_str(b, d->cfg.replica_name);
    pw_buf_adds(b, ",\"current_leader\":");
    pw_buf_add_json_str(b, ls.current_holder);
    pw_buf_printf(b, ",\"current_epoch\":%" PRIu64, ls.current_epoch);
}

static void readyz(struct pw_daemon *d, struct pw_http_req *r)
{
    struct pw_store_stats st;
    pw_store_stats(d->store, &st);
    struct pw_buf b;
    pw_buf_init(&b, 4096);
    if (!d->leading) {
        /* A follower: alive, not ready (a Service sends it no traffic). */
        pw_buf_printf(&b, "{\"ready\":false,\"store\":%s,\"migrations\":%s,", st.connected ? "true" : "false",
                      st.migrations_ok ? "true" : "false");
        leader_json(d, &b);
        pw_buf_adds(&b, "}");
        respond_buf(r, 503, &b, NULL);
        return;
    }
    struct pw_core_stats cs;
    pw_core_stats(d->core, &cs);
    int may_act = pw_leader_may_act(d->leader);
    int ready = st.connected && st.migrations_ok && !d->stopping && may_act;
    pw_buf_printf(&b, "{\"ready\":%s,\"store\":%s,\"migrations\":%s,", ready ? "true" : "false",
                  st.connected ? "true" : "false", st.migrations_ok ? "true" : "false");
    leader_json(d, &b);
    pw_buf_printf(&b, ",\"adopting\":%s,\"model_loaded\":%s}", cs.in_grace ? "true" : "false",
                  pw_predict_model_loaded(d->predict) ? "true" : "false");
    respond_buf(r, ready ? 200 : 503, &b, NULL);
}

static void metrics(struct pw_daemon *d, struct pw_http_req *r)
{
    struct pw_buf b;
    pw_buf_init(&b, PW_METRICS_MAX_BYTES);
    if (pw_metrics_render(d, &b) != PW_OK)
        respond_err(r, PW_ERR_INTERNAL, "the metrics exposition exceeds its bound");
    else
        pw_http_respond(r, 200, PW_PROM_CONTENT_TYPE, b.data, b.len, NULL);
    pw_buf_fini(&b);
}

/* ---- routing ---- */

/* split_path splits "/a/b/c" into at most max parts; returns the count, or -1 when there are
 * more parts or an empty one. */
static int split_path(const char *path, char parts[][PW_NAME_MAX * 2], int max)
{
    int n = 0;
    const char *p = path;
    if (*p != '/')
        return -1;
    while (*p == '/') {
        p++;
        const char *end = strchr(p, '/');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == 0 && end == NULL && n > 0)
            break; /* trailing slash */
        if (len == 0 || len >= PW_NAME_MAX * 2 || n == max)
            return -1;
        memcpy(parts[n], p, len);
        parts[n][len] = '\0';
        n++;
        p += len;
    }
    return n;
}

static void method_not_allowed(struct pw_http_req *r)
{
    pw_http_respond_error(r, 405, "method_not_allowed", "method not allowed for this path", NULL);
}

/* ---- the model registry ---- */

static void on_model_activated(void *arg, int err, const char *msg)
{
    struct pw_http_req *r = arg;
    if (err != PW_OK) {
        respond_err(r, (enum pw_err)err, msg != NULL ? msg : pw_strerror((enum pw_err)err));
        return;
    }
    /* The registry knows the version now: answer with its row. */
    struct pw_daemon *d = pw_http_req_user(r);
    struct pw_buf b;
    pw_buf_init(&b, 1 << 16);
    char version[PW_NAME_MAX * 2];
    const char *path = pw_http_req_path(r);
    const char *v = strstr(path, "/v1/models/");
    pw_strlcpy(version, v != NULL ? v + strlen("/v1/models/") : "", sizeof(version));
    char *slash = strchr(version, '/');
    if (slash != NULL)
        *slash = '\0';
    if (pw_models_get_json(pw_predict_models(d->predict), version, &b) != PW_OK)
        pw_buf_adds(&b, "{}");
    respond_buf(r, 200, &b, NULL);
}

static void models_train(struct pw_daemon *d, struct pw_http_req *r)
{
    cJSON *j = parse_body(r);
    if (j == NULL)
        return;
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(j, "activate");
    if (act != NULL && !cJSON_IsBool(act)) {
        cJSON_Delete(j);
        respond_err(r, PW_ERR_INVAL, "\"activate\" must be true or false");
        return;
    }
    int activate = act != NULL && cJSON_IsTrue(act);
    cJSON_Delete(j);
    char why[256];
    struct pw_models *m = pw_predict_models(d->predict);
    int rv = pw_models_train(m, activate, actor(d, r), why, sizeof(why));
    if (rv != PW_OK) {
        respond_err(r, (enum pw_err)rv, why);
        return;
    }
    struct pw_buf b;
    pw_buf_init(&b, 1 << 16);
    pw_models_training_json(m, &b);
    respond_buf(r, 202, &b, "Location: /v1/models\r\n");
}

static void models_route(struct pw_daemon *d, struct pw_http_req *r, char parts[][PW_NAME_MAX * 2], int n,
                         int get, int post)
{
    struct pw_models *m = pw_predict_models(d->predict);
    struct pw_buf b;
    if (n == 2) {
        if (!get) {
            method_not_allowed(r);
            return;
        }
        pw_buf_init(&b, 1 << 22);
        pw_models_json(m, &b);
        respond_buf(r, 200, &b, NULL);
        return;
    }
    if (n == 3 && strcmp(parts[2], "train") == 0) {
        post ? models_train(d, r) : method_not_allowed(r);
        return;
    }
    const char *version = parts[2];
    if (!pw_name_valid(version)) {
        respond_err(r, PW_ERR_INVAL, "model versions are 1-63 characters of [A-Za-z0-9._-]");
        return;
    }
    if (n == 3) {
        if (!get) {
            method_not_allowed(r);
            return;
        }
        pw_buf_init(&b, 1 << 16);
        if (pw_models_get_json(m, version, &b) != PW_OK) {
            pw_buf_fini(&b);
            respond_err(r, PW_ERR_NOTFOUND, "no such model version");
            return;
        }
        respond_buf(r, 200, &b, NULL);
        return;
    }
    if (n == 4 && strcmp(parts[3], "activate") == 0) {
        if (!post) {
            method_not_allowed(r);
            return;
        }
        pw_http_req_set_user(r, d);
        pw_models_activate(m, version, actor(d, r), on_model_activated, r);
        return;
    }
    respond_err(r, PW_ERR_NOTFOUND, "no such endpoint");
}

/* required_role: reading is for viewers, acquire and release for gateways, the rest (writes,
 * drains, models) for operators. */
static enum pw_role required_role(const char *path, int get, int post)
{
    if (get)
        return PW_ROLE_VIEWER;
    size_t n = strlen(path);
    if (post && strncmp(path, "/v1/functions/", 14) == 0 && n > 8 && strcmp(path + n - 8, "/acquire") == 0)
        return PW_ROLE_GATEWAY;
    if (post && strncmp(path, "/v1/leases/", 11) == 0 && n > 8 && strcmp(path + n - 8, "/release") == 0)
        return PW_ROLE_GATEWAY;
    return PW_ROLE_OPERATOR;
}

/* authorized answers 401 or 403 and returns 0 unless the request's bearer token has the role
 * the request needs. With no tokens configured everything is allowed. */
static int authorized(struct pw_daemon *d, struct pw_http_req *r, const char *path, int get, int post)
{
    const struct pw_auth *a = &d->cfg.auth;
    if (a->n == 0)
        return 1;
    const struct pw_auth_token *who;
    enum pw_auth_result res = pw_auth_check(a, pw_http_req_header(r, "Authorization"), &who);
    if (res != PW_AUTH_OK) {
        d->auth_failures[res == PW_AUTH_MISSING ? PW_AUTH_FAIL_MISSING : PW_AUTH_FAIL_INVALID]++;
        pw_http_respond_error(r, 401, "unauthorized",
                              res == PW_AUTH_MISSING ? "this API needs a bearer token (Authorization: Bearer ...)"
                                                     : "the bearer token is not valid",
                              "WWW-Authenticate: Bearer realm=\"prewarm\"\r\n");
        return 0;
    }
    enum pw_role need = required_role(path, get, post);
    if (who->role < need) {
        d->auth_failures[PW_AUTH_FAIL_FORBIDDEN]++;
        char msg[160];
        snprintf(msg, sizeof(msg), "this request needs the %s role; the token's role is %s", pw_role_str(need),
                 pw_role_str(who->role));
        pw_http_respond_error(r, 403, "forbidden", msg, NULL);
        return 0;
    }
    return 1;
}

void pw_api_handle(void *arg, struct pw_http_req *r)
{
    struct pw_daemon *d = arg;
    const char *m = pw_http_req_method(r);
    const char *path = pw_http_req_path(r);
    int get = strcmp(m, "GET") == 0, put = strcmp(m, "PUT") == 0, post = strcmp(m, "POST") == 0,
        del = strcmp(m, "DELETE") == 0;
    if (d->stopping) {
        respond_err(r, PW_ERR_UNAVAIL, "the scheduler is shutting down");
        return;
    }
    if (strcmp(path, "/livez") == 0) {
        get ? pw_http_respond(r, 200, NULL, "{\"status\":\"ok\"}", 15, NULL) : method_not_allowed(r);
        return;
    }
    if (strcmp(path, "/readyz") == 0) {
        get ? readyz(d, r) : method_not_allowed(r);
        return;
    }
    if (strcmp(path, "/metrics") == 0) {
        get ? metrics(d, r) : method_not_allowed(r);
        return;
    }
    if (!authorized(d, r, path, get, post))
        return;
    if (!d->leading || !pw_leader_may_act(d->leader)) {
        struct pw_leader_status ls;
        pw_leader_status(d->leader, &ls);
        char msg[400];
        if (d->leading)
            snprintf(msg, sizeof(msg), "this replica's leadership is not confirmed right now; retry");
        else
            snprintf(msg, sizeof(msg), "this replica (%s) is a follower; the leader is %s (epoch %" PRIu64 ")",
                     d->cfg.replica_name, ls.current_holder[0] ? ls.current_holder : "unknown", ls.current_epoch);
        pw_http_respond_error(r, 503, "not_leader", msg, "Retry-After: 1\r\n");
        return;
    }
    char parts[ROUTE_PARTS][PW_NAME_MAX * 2];
    int n = split_path(path, parts, ROUTE_PARTS);
    if (n < 2 || strcmp(parts[0], "v1") != 0) {
        respond_err(r, PW_ERR_NOTFOUND, "no such endpoint");
        return;
    }
    if (strcmp(parts[1], "functions") == 0) {
        if (n == 2) {
            get ? list_functions(d, r) : method_not_allowed(r);
            return;
        }
        const char *fn = parts[2];
        if (!pw_name_valid(fn)) {
            respond_err(r, PW_ERR_INVAL, "function names are 1-63 characters of [A-Za-z0-9._-]");
            return;
        }
        if (n == 3) {
            if (get) {
                struct pw_function_spec s;
                if (pw_core_function_get(d->core, fn, &s) != PW_OK) {
                    respond_err(r, PW_ERR_NOTFOUND, "no such function");
                    return;
                }
                struct pw_buf b;
                pw_buf_init(&b, 1 << 16);
                function_json(&b, &s);
                respond_buf(r, 200, &b, NULL);
            } else if (put) {
                put_function(d, r, fn);
            } else if (del) {
                delete_function(d, r, fn);
            } else {
                method_not_allowed(r);
            }
            return;
        }
        if (n == 4 && strcmp(parts[3], "pool") == 0) {
            if (get) {
                struct pw_pool_view v;
                if (pw_core_pool_view(d->core, fn, &v) != PW_OK) {
                    respond_err(r, PW_ERR_NOTFOUND, "no such function");
                    return;
                }
                struct pw_buf b;
                pw_buf_init(&b, 1 << 16);
                pool_json(&b, &v);
                respond_buf(r, 200, &b, NULL);
            } else if (put) {
                put_pool(d, r, fn);
            } else {
                method_not_allowed(r);
            }
            return;
        }
        if (n == 4 && strcmp(parts[3], "forecast") == 0) {
            if (!get) {
                method_not_allowed(r);
                return;
            }
            struct pw_function_spec s;
            if (pw_core_function_get(d->core, fn, &s) != PW_OK) {
                respond_err(r, PW_ERR_NOTFOUND, "no such function");
                return;
            }
            struct pw_buf b;
            pw_buf_init(&b, 1 << 16);
            if (pw_predict_forecast_json(d->predict, fn, &b) != PW_OK) {
                pw_buf_fini(&b);
                pw_http_respond_error(r, 404, "no_forecast_yet",
                                      "no forecast yet: one is made each minute for functions with invocations",
                                      "Retry-After: 60\r\n");
                return;
            }
            respond_buf(r, 200, &b, NULL);
            return;
        }
        if (n == 4 && strcmp(parts[3], "acquire") == 0) {
            post ? acquire(d, r, fn) : method_not_allowed(r);
            return;
        }
    } else if (strcmp(parts[1], "leases") == 0 && n == 4 && strcmp(parts[3], "release") == 0) {
        post ? release(d, r, parts[2]) : method_not_allowed(r);
        return;
    } else if (strcmp(parts[1], "hosts") == 0 && n == 2) {
        get ? list_hosts(d, r) : method_not_allowed(r);
        return;
    } else if (strcmp(parts[1], "hosts") == 0 && (n == 3 || n == 4)) {
        const char *id = parts[2];
        if (!pw_name_valid(id)) {
            respond_err(r, PW_ERR_INVAL, "host ids are 1-63 characters of [A-Za-z0-9._-]");
            return;
        }
        if (n == 3) {
            get ? get_host(d, r, id) : method_not_allowed(r);
            return;
        }
        int drain = strcmp(parts[3], "drain") == 0;
        if (drain || strcmp(parts[3], "undrain") == 0) {
            post ? host_drain(d, r, id, drain) : method_not_allowed(r);
            return;
        }
    } else if (strcmp(parts[1], "models") == 0) {
        models_route(d, r, parts, n, get, post);
        return;
    } else if (strcmp(parts[1], "vms") == 0 && n == 2) {
        get ? list_vms(d, r) : method_not_allowed(r);
        return;
    }
    respond_err(r, PW_ERR_NOTFOUND, "no such endpoint");
}
