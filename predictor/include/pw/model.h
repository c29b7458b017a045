/* model.h — one global XGBoost model (count:poisson) over the rows of features.h.
 *
 * XGBoost errors are translated here: the detail from XGBGetLastError is logged (component
 * "predictor") and the call returns PW_ERR_IO (file), PW_ERR_PARSE (model file unreadable),
 * PW_ERR_INVAL (wrong shape or feature names) or PW_ERR_INTERNAL.
 *
 * Threads: train/load/free/set_nthread on one thread; once loaded, predict and contribs may be
 * called from several threads on the same model (each output is copied out before returning). */
#ifndef PW_MODEL_H
#define PW_MODEL_H

#include <stddef.h>
#include <stdint.h>

struct pw_model;

struct pw_model_params {
    int trees;         /* boosting rounds */
    int depth;         /* max_depth */
    double eta;        /* learning rate */
    double min_child_weight;
    double max_delta_step; /* Poisson step cap (XGBoost's default 0.7 is too slow for counts up to 10^4) */
    int max_bin;       /* histogram bins per feature */
    int nthread;       /* 0: all cores */
    uint64_t seed;
};
void pw_model_params_default(struct pw_model_params *p);

/* pw_model_train fits a count:poisson model (tree_method hist) on nrows dense rows of ncols
 * floats (row-major, no missing values), labels y and optional weights w (NULL: all 1). ncols
 * must be PW_FEAT_COUNT; the feature names are stored in the model. On PW_OK the caller owns
 * *out (pw_model_free); on error nothing is allocated. The arrays stay the caller's. */
int pw_model_train(const float *X, size_t nrows, size_t ncols, const float *y, const float *w,
                   const struct pw_model_params *p, struct pw_model **out);

/* pw_model_save writes m as XGBoost JSON (path should end in .json). */
int pw_model_save(const struct pw_model *m, const char *path);

/* pw_model_load reads a model saved by pw_model_save and checks its feature names against
 * features.h. On PW_OK the caller owns *out. */
int pw_model_load(const char *path, struct pw_model **out);
void pw_model_free(struct pw_model *m);

/* pw_model_set_nthread sets the threads XGBoost uses for prediction (0: all cores). */
int pw_model_set_nthread(struct pw_model *m, int nthread);

/* pw_model_predict writes out[nrows]: the expected count (margin == 0) or the raw margin, its
 * natural log (margin != 0), for each row of X[nrows * PW_FEAT_COUNT]. One XGBoost call. */
int pw_model_predict(const struct pw_model *m, const float *X, size_t nrows, int margin, float *out);

/* pw_model_contribs writes out[nrows * (PW_FEAT_COUNT + 1)]: per row, each feature's SHAP
 * contribution to the margin, then the bias; a row's values sum to its margin. */
int pw_model_contribs(const struct pw_model *m, const float *X, size_t nrows, float *out);

#endif
