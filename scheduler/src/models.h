/* models.h — the model registry inside prewarmd: which predictor models exist, which one is
 * active, training new ones and switching between them (GET/POST /v1/models...).
 *
 * Every model is a file in the model directory (--model-dir), VERSION.json, registered in
 * PostgreSQL's models table with its sha256; at most one is active. At start the active model
 * is loaded (its sha256 checked); if there is none, or it cannot be used, the --model file is,
 * and is registered as version file-<sha256 prefix> (active when nothing else is).
 *
 * Training copies the predictor's per-function history (pw_predict_series), trains in a libuv
 * worker, writes the file (to a temporary name, then renamed), and registers it; a scheduled
 * retraining (--retrain-every) and a training asked with activate also make it active and hand
 * it to the predictor. Activation loads and checks the file in a worker, commits the switch in
 * the store, and only then hands the model to the predictor: a model whose file is missing or
 * changed, or a store that is away, leaves the model in use as it was. One training and one
 * activation run at a time.
 *
 * Threads: every function here runs on the loop thread. */
#ifndef PW_MODELS_H
#define PW_MODELS_H

#include "pw/util.h"

#include <stdint.h>

struct pw_daemon;
struct pw_predict;
struct pw_model;
struct pw_models;

/* pw_models_new loads the registry from the store and chooses the model to start with: on
 * return *model is that model (the caller's; NULL: the recent-rate heuristic) and name its
 * version or path. The result is the caller's (pw_models_free after the loop stopped). */
struct pw_models *pw_models_new(struct pw_daemon *d, struct pw_predict *p, const char *model_path,
                                struct pw_model **model, char name[PW_NAME_MAX]);
/* pw_models_stop cancels work not yet started and refuses new work (shutdown). */
void pw_models_stop(struct pw_models *m);
void pw_models_free(struct pw_models *m);

/* pw_models_tick starts the scheduled retraining when it is due. */
void pw_models_tick(struct pw_models *m, int64_t wall_ms);

/* pw_models_train starts a training now (activate != 0: make it active when done; actor goes
 * in the audit rows). Returns PW_OK
 * (started), PW_ERR_STATE (one is running, or there is no history yet; why says which) or
 * PW_ERR_UNAVAIL (shutting down). */
int pw_models_train(struct pw_models *m, int activate, const char *actor, char *why, size_t whylen);

/* pw_models_activate makes version the active model in use. cb is called exactly once, on the
 * loop, possibly before this returns: PW_OK, PW_ERR_NOTFOUND (no such version), PW_ERR_STATE (an
 * activation is running, or the file is missing, changed or does not load), PW_ERR_STORE or
 * PW_ERR_UNAVAIL, with a message (valid during the call). */
typedef void (*pw_models_done_cb)(void *arg, int err, const char *msg);
void pw_models_activate(struct pw_models *m, const char *version, const char *actor, pw_models_done_cb cb,
                        void *arg);

/* JSON views, appended to b: the whole registry (models, the one in use, training state), one
 * model (PW_ERR_NOTFOUND if unknown), and the training state alone. */
void pw_models_json(const struct pw_models *m, struct pw_buf *b);
int pw_models_get_json(const struct pw_models *m, const char *version, struct pw_buf *b);
void pw_models_training_json(const struct pw_models *m, struct pw_buf *b);

#endif
