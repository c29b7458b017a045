/* models.c — the model registry: load, train, register, activate; see models.h. */
#include "models.h"

#include "daemon.h"
#include "predict.h"
#include "store.h"

#include "pw/error.h"
#include "pw/log.h"
#include "pw/model.h"
#include "pw/sha256.h"
#include "pw/train.h"

#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define COMP "models"
#define MSG_MAX 512

/* msgf formats a message into a fixed buffer; cutting a long one short is intended. */
static void msgf(char *dst, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void msgf(char *dst, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dst, n, fmt, ap);
    va_end(ap);
}

enum train_state { TRAIN_NEVER, TRAIN_RUNNING, TRAIN_SUCCEEDED, TRAIN_FAILED };
static const char *const train_state_names[] = {"never", "running", "succeeded", "failed"};

/* The training in flight, or the last one. */
struct training {
    uv_work_t work;
    enum train_state state;
    int scheduled; /* the periodic retraining, else asked through the API */
    int activate;
    char actor[PW_NAME_MAX];
    int64_t started_ms, finished_ms; /* wall clock */
    struct pw_predict_series data;   /* the worker's while it runs */
    /* Worker results. */
    int rv;
    char msg[MSG_MAX];
    struct pw_model *model; /* until registered, then handed on or freed */
    size_t rows;
    double seconds;
    struct pw_model_row row;
};

/* The activation in flight. */
struct activation {
    uv_work_t work;
    int busy;
    struct pw_model_row row; /* the registry's row, copied */
    pw_models_done_cb cb;
    void *arg;
    char actor[PW_NAME_MAX];
    int rv;
    char msg[MSG_MAX];
    struct pw_model *model;
};

struct pw_models {
    struct pw_daemon *d;
    struct pw_predict *p;
    char dir[PATH_MAX]; /* absolute; "" when it could not be made */
    struct pw_model_row *rows; /* oldest first */
    size_t n, cap;
    char in_use[PW_NAME_MAX]; /* version of the model in use; "" heuristic or unregistered */
    int64_t retrain_every_ms, next_retrain_ms;
    int stopping;
    int training; /* from start until registered (the worker and the store) */
    struct training t;
    struct activation a;
    struct pw_model_row boot_row; /* the --model file, while the store registers it */
};

static struct pw_model_row *row_find(const struct pw_models *m, const char *version)
{
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->rows[i].version, version) == 0)
            return &m->rows[i];
    return NULL;
}

static const struct pw_model_row *row_by_sha(const struct pw_models *m, const char *sha)
{
    for (size_t i = m->n; i-- > 0;)
        if (strcmp(m->rows[i].sha256, sha) == 0)
            return &m->rows[i];
    return NULL;
}

/* row_put adds or replaces row; with active, it becomes the only active row. */
static void row_put(struct pw_models *m, const struct pw_model_row *row, int active)
{
    struct pw_model_row *r = row_find(m, row->version);
    if (r == NULL) {
        if (m->n == m->cap) {
            m->cap = m->cap ? 2 * m->cap : 16;
            m->rows = pw_xrealloc(m->rows, m->cap * sizeof(*m->rows));
        }
        r = &m->rows[m->n++];
        *r = *row;
        r->active = 0;
    }
    if (active) {
        for (size_t i = 0; i < m->n; i++)
            m->rows[i].active = 0;
        r->active = 1;
        r->activated_ms = pw_now_wall_ms();
    }
}

static void load_row_cb(void *arg, const struct pw_model_row *row)
{
    struct pw_models *m = arg;
    row_put(m, row, row->active);
    if (row->active)
        m->rows[m->n - 1].activated_ms = row->activated_ms;
}

/* mkdirs makes dir and its parents (mode 0750). */
static int mkdirs(const char *dir)
{
    char tmp[PATH_MAX];
    if (pw_strlcpy(tmp, dir, sizeof(tmp)) >= sizeof(tmp))
        return -1;
    for (char *s = tmp + 1; *s != '\0'; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(tmp, 0750) != 0 && errno != EEXIST)
            return -1;
        *s = '/';
    }
    return mkdir(tmp, 0750) != 0 && errno != EEXIST ? -1 : 0;
}

/* load_checked loads the model file of row after checking its sha256; why says what failed. */
static int load_checked(const struct pw_model_row *row, struct pw_model **out, char *why, size_t whylen)
{
    char sha[65];
    *out = NULL;
    if (pw_sha256_file(row->path, sha) != PW_OK) {
        msgf(why, whylen, "model %s: cannot read %s: %s", row->version, row->path, strerror(errno));
        return PW_ERR_STATE;
    }
    if (strcmp(sha, row->sha256) != 0) {
        msgf(why, whylen, "model %s: %s has sha256 %.12s..., the registry has %.12s...: the file changed",
                 row->version, row->path, sha, row->sha256);
        return PW_ERR_STATE;
    }
    if (pw_model_load(row->path, out) != PW_OK) {
        msgf(why, whylen, "model %s: %s does not load as a predictor model", row->version, row->path);
        return PW_ERR_STATE;
    }
    return PW_OK;
}

/* ---- start ---- */

static void on_file_registered(void *arg, int err, const char *msg)
{
    struct pw_models *m = arg;
    const struct pw_model_row *pending = &m->boot_row;
    if (err != PW_OK) {
        pw_log_warn(COMP, "cannot register model file %s as %s: %s", pending->path, pending->version,
                    msg ? msg : "");
        return;
    }
    row_put(m, pending, pending->active);
    pw_log_info(COMP, "model file %s registered as %s%s", pending->path, pending->version,
                pending->active ? " (active)" : "");
}

/* start_from_file loads model_path and registers it unless a registered version has its bytes. */
static struct pw_model *start_from_file(struct pw_models *m, const char *model_path, int any_active,
                                        char name[PW_NAME_MAX])
{
    struct stat sb;
    if (model_path == NULL || model_path[0] == '\0') {
        pw_log_warn(COMP, "no model configured: forecasting with the recent-rate heuristic");
        return NULL;
    }
    if (stat(model_path, &sb) != 0) {
        pw_log_warn(COMP, "model %s not found: forecasting with the recent-rate heuristic", model_path);
        return NULL;
    }
    struct pw_model *model = NULL;
    char sha[65];
    if (pw_sha256_file(model_path, sha) != PW_OK || pw_model_load(model_path, &model) != PW_OK) {
        pw_log_warn(COMP, "model %s does not load: forecasting with the recent-rate heuristic", model_path);
        return NULL;
    }
    const struct pw_model_row *known = row_by_sha(m, sha);
    if (known != NULL) {
        pw_strlcpy(name, known->version, PW_NAME_MAX);
        pw_strlcpy(m->in_use, known->version, sizeof(m->in_use));
        pw_log_info(COMP, "model %s loaded: registered as %s", model_path, known->version);
        return model;
    }
    struct pw_model_row *row = &m->boot_row;
    memset(row, 0, sizeof(*row));
    snprintf(row->version, sizeof(row->version), "file-%.12s", sha);
    if (realpath(model_path, row->path) == NULL)
        pw_strlcpy(row->path, model_path, sizeof(row->path));
    pw_strlcpy(row->sha256, sha, sizeof(row->sha256));
    row->source = PW_MODEL_FILE;
    row->created_ms = pw_now_wall_ms();
    row->rows = row->functions = row->minutes = -1;
    row->active = !any_active;
    pw_store_put_model(m->d->store, row, row->active, "prewarmd", on_file_registered, m);
    pw_strlcpy(name, row->version, PW_NAME_MAX);
    pw_strlcpy(m->in_use, row->version, sizeof(m->in_use));
    pw_log_info(COMP, "model %s loaded as %s", model_path, row->version);
    return model;
}

struct pw_models *pw_models_new(struct pw_daemon *d, struct pw_predict *p, const char *model_path,
                                struct pw_model **model, char name[PW_NAME_MAX])
{
    struct pw_models *m = pw_xcalloc(1, sizeof(*m));
    m->d = d;
    m->p = p;
    m->retrain_every_ms = d->cfg.retrain_every_ms;
    m->next_retrain_ms = pw_now_wall_ms() + m->retrain_every_ms;
    *model = NULL;
    name[0] = '\0';
    const char *dir = d->cfg.model_dir;
    if (dir[0] == '\0' || mkdirs(dir) != 0 || realpath(dir, m->dir) == NULL) {
        pw_log_warn(COMP, "model directory \"%s\" is not usable (%s): trained models cannot be kept", dir,
                    strerror(errno));
        m->dir[0] = '\0';
    }
    if (pw_store_load_models(d->store, load_row_cb, m) != PW_OK)
        pw_log_warn(COMP, "the model registry did not load; starting from the configured model");
    const struct pw_model_row *active = NULL;
    for (size_t i = 0; i < m->n; i++)
        if (m->rows[i].active)
            active = &m->rows[i];
    if (active != NULL) {
        char why[MSG_MAX];
        if (load_checked(active, model, why, sizeof(why)) == PW_OK) {
            pw_strlcpy(name, active->version, PW_NAME_MAX);
            pw_strlcpy(m->in_use, active->version, sizeof(m->in_use));
            pw_log_info(COMP, "active model %s loaded from %s (%zu registered)", active->version, active->path,
                        m->n);
            return m;
        }
        pw_log_warn(COMP, "%s: starting from the configured model instead", why);
    }
    *model = start_from_file(m, model_path, active != NULL, name);
    return m;
}

void pw_models_stop(struct pw_models *m)
{
    if (m == NULL)
        return;
    m->stopping = 1;
    /* Work not yet started is dropped; work running finishes before the loop ends. */
    if (m->t.state == TRAIN_RUNNING)
        uv_cancel((uv_req_t *)&m->t.work);
    if (m->a.busy)
        uv_cancel((uv_req_t *)&m->a.work);
}

void pw_models_free(struct pw_models *m)
{
    if (m == NULL)
        return;
    pw_predict_series_fini(&m->t.data);
    pw_model_free(m->t.model);
    pw_model_free(m->a.model);
    free(m->rows);
    free(m);
}

/* ---- training ---- */

static void train_work_cb(uv_work_t *w)
{
    struct training *t = w->data;
    struct pw_models *m = pw_container_of(t, struct pw_models, t);
    int64_t t0 = pw_now_mono_ms();
    struct pw_train_opts o;
    pw_train_opts_default(&o);
    t->model = NULL;
    t->rows = 0;
    t->msg[0] = '\0';
    t->rv = pw_train_series(t->data.series, t->data.n, &o, &t->model, &t->rows);
    t->seconds = (double)(pw_now_mono_ms() - t0) / 1000.0;
    if (t->rv != PW_OK) {
        msgf(t->msg, sizeof(t->msg), "training failed: %s (%zu functions, %zu minutes; at least %zu active rows needed)",
                 pw_strerror((enum pw_err)t->rv), t->data.n, t->data.minutes, o.min_rows);
        return;
    }
    struct pw_model_row *row = &t->row;
    memset(row, 0, sizeof(*row));
    char tmp[PATH_MAX + 32];
    if (m->dir[0] == '\0') {
        t->rv = PW_ERR_IO;
        msgf(t->msg, sizeof(t->msg), "no usable model directory (--model-dir) to keep the model in");
        goto fail;
    }
    snprintf(tmp, sizeof(tmp), "%s/.training-%ld.json", m->dir, (long)getpid());
    if (pw_model_save(t->model, tmp) != PW_OK || pw_sha256_file(tmp, row->sha256) != PW_OK) {
        t->rv = PW_ERR_IO;
        msgf(t->msg, sizeof(t->msg), "cannot write the model to %s", m->dir);
        unlink(tmp);
        goto fail;
    }
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    char stamp[32];
    strftime(stamp, sizeof(stamp), "%Y%m%d-%H%M%S", &tm);
    snprintf(row->version, sizeof(row->version), "%s-%.8s", stamp, row->sha256);
    int len = snprintf(row->path, sizeof(row->path), "%s/%s.json", m->dir, row->version);
    if (len < 0 || (size_t)len >= sizeof(row->path) || rename(tmp, row->path) != 0) {
        t->rv = PW_ERR_IO;
        msgf(t->msg, sizeof(t->msg), "cannot name the model file in %s: %s", m->dir, strerror(errno));
        unlink(tmp);
        goto fail;
    }
    row->source = t->scheduled ? PW_MODEL_RETRAINED : PW_MODEL_TRAINED;
    row->created_ms = pw_now_wall_ms();
    row->rows = (int64_t)t->rows;
    row->functions = (int64_t)t->data.n;
    row->minutes = (int64_t)t->data.minutes;
    return;
fail:
    pw_model_free(t->model);
    t->model = NULL;
}

static void train_finish(struct pw_models *m, enum train_state state)
{
    struct training *t = &m->t;
    t->state = state;
    t->finished_ms = pw_now_wall_ms();
    pw_model_free(t->model);
    t->model = NULL;
    pw_predict_series_fini(&t->data);
    m->training = 0;
}

/* in_model_dir: path is VERSION.json directly inside the model directory, i.e. a file the
 * registry wrote and may delete (a --model file registered at start lives elsewhere). */
static int in_model_dir(const struct pw_models *m, const struct pw_model_row *r)
{
    size_t dl = strlen(m->dir);
    if (dl == 0 || strncmp(r->path, m->dir, dl) != 0 || r->path[dl] != '/')
        return 0;
    const char *base = r->path + dl + 1;
    size_t vl = strlen(r->version);
    return strncmp(base, r->version, vl) == 0 && strcmp(base + vl, ".json") == 0;
}

/* prune_files deletes the files of trained models beyond the --model-keep newest, never the
 * active model's or the one in use; their registry rows stay (activating one is then refused:
 * the file is missing). Rows are oldest first. */
static void prune_files(struct pw_models *m)
{
    size_t keep = m->d->cfg.model_keep, kept = 0, pruned = 0;
    if (keep == 0)
        return;
    for (size_t i = m->n; i-- > 0;) {
        const struct pw_model_row *r = &m->rows[i];
        if (!in_model_dir(m, r) || r->active || strcmp(r->version, m->in_use) == 0)
            continue;
        if (kept < keep) {
            kept++;
            continue;
        }
        if (unlink(r->path) == 0)
            pruned++;
        else if (errno != ENOENT)
            pw_log_warn(COMP, "cannot delete the old model file %s: %s", r->path, strerror(errno));
    }
    if (pruned > 0)
        pw_log_info(COMP, "deleted %zu old model file%s (--model-keep %zu)", pruned, pruned == 1 ? "" : "s",
                    keep);
}

static void on_trained_registered(void *arg, int err, const char *msg)
{
    struct pw_models *m = arg;
    struct training *t = &m->t;
    int use = t->activate || t->scheduled;
    if (err != PW_OK && !t->scheduled) {
        msgf(t->msg, sizeof(t->msg), "the store did not register the model (%s); its file stays at %s, unregistered",
                 msg ? msg : pw_strerror((enum pw_err)err), t->row.path);
        pw_log_warn(COMP, "%s", t->msg);
        train_finish(m, TRAIN_FAILED);
        return;
    }
    if (err != PW_OK) {
        /* A scheduled retraining keeps its old behaviour without the store: the model is used. */
        msgf(t->msg, sizeof(t->msg), "in use but not registered: %s", msg ? msg : "store error");
        pw_log_warn(COMP, "retrained model %s %s", t->row.version, t->msg);
    } else {
        row_put(m, &t->row, use);
    }
    pw_log_info(COMP, "model %s trained on %" PRId64 " functions, %zu rows in %.1f s%s", t->row.version,
                t->row.functions, t->rows, t->seconds, use ? ": now active" : "");
    if (use && !m->stopping) {
        pw_predict_use_model(m->p, t->model, t->row.version);
        t->model = NULL;
        pw_strlcpy(m->in_use, err == PW_OK ? t->row.version : "", sizeof(m->in_use));
    }
    if (err == PW_OK)
        prune_files(m);
    train_finish(m, TRAIN_SUCCEEDED);
}

static void train_after_cb(uv_work_t *w, int status)
{
    struct training *t = w->data;
    struct pw_models *m = pw_container_of(t, struct pw_models, t);
    if (status != 0) {
        msgf(t->msg, sizeof(t->msg), "cancelled at shutdown");
        train_finish(m, TRAIN_FAILED);
        return;
    }
    if (t->rv != PW_OK) {
        pw_log_info(COMP, "%s%s", t->msg, m->in_use[0] ? "; the model in use stays" : "");
        train_finish(m, TRAIN_FAILED);
        return;
    }
    if (m->stopping || m->d->store == NULL) {
        msgf(t->msg, sizeof(t->msg), "finished at shutdown; file %s unregistered", t->row.path);
        train_finish(m, TRAIN_FAILED);
        return;
    }
    pw_store_put_model(m->d->store, &t->row, t->activate || t->scheduled, t->actor, on_trained_registered, m);
}

static int train_start(struct pw_models *m, int activate, int scheduled, const char *actor, char *why,
                       size_t whylen)
{
    if (m->stopping) {
        msgf(why, whylen, "the scheduler is shutting down");
        return PW_ERR_UNAVAIL;
    }
    if (m->training) {
        msgf(why, whylen, "a training is already running (started %.0f s ago)",
                 (double)(pw_now_wall_ms() - m->t.started_ms) / 1000.0);
        return PW_ERR_STATE;
    }
    struct training *t = &m->t;
    pw_predict_series_fini(&t->data);
    if (pw_predict_series(m->p, &t->data) != PW_OK) {
        pw_predict_series_fini(&t->data);
        msgf(why, whylen, "no invocation history to train on yet");
        return PW_ERR_STATE;
    }
    t->scheduled = scheduled;
    t->activate = activate;
    pw_strlcpy(t->actor, actor, sizeof(t->actor));
    t->started_ms = pw_now_wall_ms();
    t->finished_ms = 0;
    t->msg[0] = '\0';
    memset(&t->row, 0, sizeof(t->row));
    t->state = TRAIN_RUNNING;
    t->work.data = t;
    if (uv_queue_work(m->d->loop, &t->work, train_work_cb, train_after_cb) != 0) {
        msgf(why, whylen, "cannot queue the training");
        t->state = TRAIN_FAILED;
        pw_predict_series_fini(&t->data);
        return PW_ERR_INTERNAL;
    }
    m->training = 1;
    pw_log_info(COMP, "%s training started on %zu functions, up to %zu minutes each",
                scheduled ? "scheduled" : "requested", t->data.n, t->data.minutes);
    return PW_OK;
}

int pw_models_train(struct pw_models *m, int activate, const char *actor, char *why, size_t whylen)
{
    return train_start(m, activate, 0, actor, why, whylen);
}

void pw_models_tick(struct pw_models *m, int64_t wall_ms)
{
    if (m->retrain_every_ms <= 0 || m->stopping || m->training || wall_ms < m->next_retrain_ms)
        return;
    m->next_retrain_ms = wall_ms + m->retrain_every_ms;
    char why[MSG_MAX];
    if (train_start(m, 1, 1, "scheduler", why, sizeof(why)) != PW_OK)
        pw_log_info(COMP, "scheduled retraining skipped: %s", why);
}

/* ---- activation ---- */

static void activate_work_cb(uv_work_t *w)
{
    struct activation *a = w->data;
    a->msg[0] = '\0';
    a->rv = load_checked(&a->row, &a->model, a->msg, sizeof(a->msg));
}

static void activate_done(struct pw_models *m, int err, const char *msg)
{
    struct activation *a = &m->a;
    pw_model_free(a->model);
    a->model = NULL;
    a->busy = 0;
    pw_models_done_cb cb = a->cb;
    a->cb = NULL;
    cb(a->arg, err, msg);
}

static void on_activated(void *arg, int err, const char *msg)
{
    struct pw_models *m = arg;
    struct activation *a = &m->a;
    if (err != PW_OK) {
        char why[MSG_MAX];
        msgf(why, sizeof(why), "%s; the model in use is unchanged", msg ? msg : pw_strerror((enum pw_err)err));
        pw_log_warn(COMP, "activating %s failed: %s", a->row.version, why);
        activate_done(m, err == PW_ERR_NOTFOUND ? PW_ERR_NOTFOUND : PW_ERR_STORE, why);
        return;
    }
    row_put(m, &a->row, 1);
    pw_predict_use_model(m->p, a->model, a->row.version);
    a->model = NULL;
    pw_strlcpy(m->in_use, a->row.version, sizeof(m->in_use));
    pw_log_info(COMP, "model %s activated by %s", a->row.version, a->actor);
    activate_done(m, PW_OK, NULL);
}

static void activate_after_cb(uv_work_t *w, int status)
{
    struct activation *a = w->data;
    struct pw_models *m = pw_container_of(a, struct pw_models, a);
    if (status != 0 || m->stopping || m->d->store == NULL) {
        activate_done(m, PW_ERR_UNAVAIL, "the scheduler is shutting down");
        return;
    }
    if (a->rv != PW_OK) {
        pw_log_warn(COMP, "activation refused: %s", a->msg);
        activate_done(m, a->rv, a->msg);
        return;
    }
    pw_store_activate_model(m->d->store, a->row.version, a->actor, on_activated, m);
}

void pw_models_activate(struct pw_models *m, const char *version, const char *actor, pw_models_done_cb cb,
                        void *arg)
{
    if (m->stopping) {
        cb(arg, PW_ERR_UNAVAIL, "the scheduler is shutting down");
        return;
    }
    const struct pw_model_row *row = row_find(m, version);
    if (row == NULL) {
        cb(arg, PW_ERR_NOTFOUND, "no such model version");
        return;
    }
    if (m->a.busy) {
        cb(arg, PW_ERR_STATE, "another activation is running");
        return;
    }
    struct activation *a = &m->a;
    a->busy = 1;
    a->row = *row;
    a->cb = cb;
    a->arg = arg;
    pw_strlcpy(a->actor, actor, sizeof(a->actor));
    a->model = NULL;
    a->work.data = a;
    if (uv_queue_work(m->d->loop, &a->work, activate_work_cb, activate_after_cb) != 0)
        activate_done(m, PW_ERR_INTERNAL, "cannot queue the activation");
}

/* ---- JSON ---- */

static void ms_json(struct pw_buf *b, const char *key, int64_t ms)
{
    if (ms > 0)
        pw_buf_printf(b, ",\"%s\":%" PRId64, key, ms);
    else
        pw_buf_printf(b, ",\"%s\":null", key);
}

static void count_json(struct pw_buf *b, const char *key, int64_t v)
{
    if (v >= 0)
        pw_buf_printf(b, ",\"%s\":%" PRId64, key, v);
    else
        pw_buf_printf(b, ",\"%s\":null", key);
}

static void row_json(const struct pw_models *m, const struct pw_model_row *r, struct pw_buf *b)
{
    pw_buf_adds(b, "{\"version\":");
    pw_buf_add_json_str(b, r->version);
    pw_buf_printf(b, ",\"source\":\"%s\",\"path\":", pw_model_source_str(r->source));
    pw_buf_add_json_str(b, r->path);
    pw_buf_printf(b, ",\"sha256\":\"%s\",\"active\":%s,\"in_use\":%s", r->sha256, r->active ? "true" : "false",
                  strcmp(r->version, m->in_use) == 0 ? "true" : "false");
    pw_buf_printf(b, ",\"file_exists\":%s", access(r->path, F_OK) == 0 ? "true" : "false");
    ms_json(b, "created_at_ms", r->created_ms);
    ms_json(b, "activated_at_ms", r->activated_ms);
    count_json(b, "rows", r->rows);
    count_json(b, "functions", r->functions);
    count_json(b, "minutes", r->minutes);
    pw_buf_adds(b, "}");
}

void pw_models_training_json(const struct pw_models *m, struct pw_buf *b)
{
    const struct training *t = &m->t;
    pw_buf_printf(b, "{\"state\":\"%s\"", train_state_names[t->state]);
    if (t->state != TRAIN_NEVER) {
        pw_buf_printf(b, ",\"trigger\":\"%s\",\"activate\":%s", t->scheduled ? "schedule" : "api",
                      t->activate || t->scheduled ? "true" : "false");
        ms_json(b, "started_at_ms", t->started_ms);
        ms_json(b, "finished_at_ms", t->finished_ms);
        if (t->state != TRAIN_RUNNING) {
            pw_buf_adds(b, ",\"version\":");
            if (t->row.version[0] != '\0')
                pw_buf_add_json_str(b, t->row.version);
            else
                pw_buf_adds(b, "null");
            pw_buf_printf(b, ",\"seconds\":%.2f,\"rows\":%zu", t->seconds, t->rows);
        }
        pw_buf_adds(b, ",\"message\":");
        pw_buf_add_json_str(b, t->msg);
    }
    pw_buf_adds(b, "}");
}

void pw_models_json(const struct pw_models *m, struct pw_buf *b)
{
    uint64_t swaps = 0;
    const char *name = pw_predict_model_name(m->p, &swaps);
    pw_buf_adds(b, "{\"in_use\":");
    if (name[0] != '\0')
        pw_buf_add_json_str(b, name);
    else
        pw_buf_adds(b, "null");
    pw_buf_adds(b, ",\"model_dir\":");
    pw_buf_add_json_str(b, m->dir);
    pw_buf_printf(b, ",\"swaps\":%" PRIu64 ",\"retrain_every_ms\":%" PRId64, swaps, m->retrain_every_ms);
    ms_json(b, "next_retrain_at_ms", m->retrain_every_ms > 0 ? m->next_retrain_ms : 0);
    pw_buf_adds(b, ",\"training\":");
    pw_models_training_json(m, b);
    pw_buf_adds(b, ",\"models\":[");
    for (size_t i = 0; i < m->n; i++) {
        if (i > 0)
            pw_buf_adds(b, ",");
        row_json(m, &m->rows[i], b);
    }
    pw_buf_adds(b, "]}");
}

int pw_models_get_json(const struct pw_models *m, const char *version, struct pw_buf *b)
{
    const struct pw_model_row *r = row_find(m, version);
    if (r == NULL)
        return PW_ERR_NOTFOUND;
    row_json(m, r, b);
    return PW_OK;
}
