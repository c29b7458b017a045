/* model.c — the global XGBoost count model: training, JSON files, batch predictions and
 * SHAP contributions, with XGBoost's errors translated into enum pw_err. */
#include "pw/model.h"

#include "pw/error.h"
#include "pw/features.h"
#include "pw/log.h"
#include "pw/util.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xgboost/c_api.h>

#define FEAT_ATTR "pw_features"

struct pw_model {
    BoosterHandle booster;
    int offset;       /* trained with the recent-level offset (attribute pw_offset) */
    float offset_eps; /* the offset's floor, as trained (the attribute's value) */
};

/* The offset's floor for models trained now: the level a function long silent starts from. Low
 * enough that the trees need not push a quiet function's rate down (Poisson gradients at zero
 * counts shrink with the rate, so that is slow); they push it up where an arrival is due. */
#define OFFSET_EPS 0.0005f

#define OFFSET_ATTR "pw_offset"

/* row_offset is the log of a function's recent level: the model is an offset Poisson regression,
 * log lambda = offset + trees, so its trees learn departures from the level (a burst, a lull, a
 * period coming round) that hold at any scale, and a function busier than any seen in training
 * is still forecast at its own level rather than capped at the largest leaf. */
static float row_offset(const float *row, float eps)
{
    float level = (row[PW_FEAT_LAG1] + row[PW_FEAT_MEAN5] + row[PW_FEAT_MEAN15] + row[PW_FEAT_MEAN60]) / 4.0f;
    return logf(eps + level);
}

/* xgb_fail logs XGBoost's own message for the failed call and returns err. */
static int xgb_fail(const char *what, int err)
{
    pw_log_error("predictor", "xgboost %s failed: %s", what, XGBGetLastError());
    return err;
}

#define XGB_TRY(call, err)                  \
    do {                                    \
        if ((call) != 0) {                  \
            rv = xgb_fail(#call, (err));    \
            goto fail;                      \
        }                                   \
    } while (0)

void pw_model_params_default(struct pw_model_params *p)
{
    p->trees = 100;
    p->depth = 6;
    p->eta = 0.1;
    p->min_child_weight = 1.0;
    p->max_delta_step = 0.7;
    p->max_bin = 256;
    p->nthread = 0;
    p->seed = 1;
}

/* feature_list joins the feature names with commas into buf. */
static void feature_list(char *buf, size_t len)
{
    buf[0] = '\0';
    size_t used = 0;
    for (size_t i = 0; i < PW_FEAT_COUNT; i++) {
        int n = snprintf(buf + used, len - used, "%s%s", i ? "," : "", pw_feat_names[i]);
        if (n < 0 || (size_t)n >= len - used)
            break;
        used += (size_t)n;
    }
}

static int set_param(BoosterHandle b, const char *k, const char *v)
{
    if (XGBoosterSetParam(b, k, v) != 0)
        return xgb_fail(k, PW_ERR_INVAL);
    return PW_OK;
}

int pw_model_train(const float *X, size_t nrows, size_t ncols, const float *y, const float *w,
                   const struct pw_model_params *p, struct pw_model **out)
{
    DMatrixHandle d = NULL;
    BoosterHandle b = NULL;
    char buf[64], names[1024];
    int rv = PW_OK;

    if (ncols != PW_FEAT_COUNT || nrows == 0 || p->trees <= 0 || p->depth <= 0)
        return PW_ERR_INVAL;
    XGB_TRY(XGDMatrixCreateFromMat(X, (bst_ulong)nrows, (bst_ulong)ncols, NAN, &d), PW_ERR_INTERNAL);
    XGB_TRY(XGDMatrixSetFloatInfo(d, "label", y, (bst_ulong)nrows), PW_ERR_INTERNAL);
    if (w)
        XGB_TRY(XGDMatrixSetFloatInfo(d, "weight", w, (bst_ulong)nrows), PW_ERR_INTERNAL);
    float *margin = pw_xmalloc(nrows * sizeof(*margin));
    for (size_t i = 0; i < nrows; i++)
        margin[i] = row_offset(X + i * ncols, OFFSET_EPS);
    int mrv = XGDMatrixSetFloatInfo(d, "base_margin", margin, (bst_ulong)nrows);
    free(margin);
    XGB_TRY(mrv, PW_ERR_INTERNAL);
    XGB_TRY(XGBoosterCreate(&d, 1, &b), PW_ERR_INTERNAL);

    struct {
        const char *k;
        char v[32];
    } kv[] = {{"objective", "count:poisson"}, {"tree_method", "hist"}, {"verbosity", "1"},
              {"max_depth", ""}, {"eta", ""}, {"min_child_weight", ""}, {"max_bin", ""},
              {"nthread", ""}, {"seed", ""}, {"max_delta_step", ""}, {"base_score", ""}};
    snprintf(kv[3].v, sizeof(kv[3].v), "%d", p->depth);
    snprintf(kv[4].v, sizeof(kv[4].v), "%.17g", p->eta);
    snprintf(kv[5].v, sizeof(kv[5].v), "%.17g", p->min_child_weight);
    snprintf(kv[6].v, sizeof(kv[6].v), "%d", p->max_bin);
    snprintf(kv[7].v, sizeof(kv[7].v), "%d", p->nthread);
    snprintf(kv[8].v, sizeof(kv[8].v), "%" PRIu64, p->seed % 2147483647u);
    snprintf(kv[9].v, sizeof(kv[9].v), "%.17g", p->max_delta_step);
    /* The offset carries the level; base_score 1 (margin 0) keeps the saved model's own base out
     * of the way, so prediction adds the offset to the trees alone. */
    snprintf(kv[10].v, sizeof(kv[10].v), "%.9g", 1.0);
    for (size_t i = 0; i < PW_ARRAY_LEN(kv); i++) {
        rv = set_param(b, kv[i].k, kv[i].v);
        if (rv != PW_OK)
            goto fail;
    }
    for (int it = 0; it < p->trees; it++)
        XGB_TRY(XGBoosterUpdateOneIter(b, it, d), PW_ERR_INTERNAL);
    feature_list(names, sizeof(names));
    XGB_TRY(XGBoosterSetAttr(b, FEAT_ATTR, names), PW_ERR_INTERNAL);
    snprintf(buf, sizeof(buf), "%d", p->trees);
    XGB_TRY(XGBoosterSetAttr(b, "pw_trees", buf), PW_ERR_INTERNAL);
    snprintf(buf, sizeof(buf), "%.9g", (double)OFFSET_EPS);
    XGB_TRY(XGBoosterSetAttr(b, OFFSET_ATTR, buf), PW_ERR_INTERNAL);
    XGDMatrixFree(d);

    *out = pw_xcalloc(1, sizeof(**out));
    (*out)->booster = b;
    (*out)->offset = 1;
    (*out)->offset_eps = OFFSET_EPS;
    return PW_OK;
fail:
    if (b)
        XGBoosterFree(b);
    if (d)
        XGDMatrixFree(d);
    return rv;
}

int pw_model_save(const struct pw_model *m, const char *path)
{
    if (XGBoosterSaveModel(m->booster, path) != 0)
        return xgb_fail("XGBoosterSaveModel", PW_ERR_IO);
    return PW_OK;
}

int pw_model_load(const char *path, struct pw_model **out)
{
    BoosterHandle b = NULL;
    bst_ulong nfeat = 0;
    const char *attr = NULL;
    int success = 0, rv = PW_OK;
    char names[1024];

    FILE *fp = fopen(path, "rb");
    if (!fp) {
        pw_log_error("predictor", "cannot open model %s", path);
        return PW_ERR_IO;
    }
    fclose(fp);
    XGB_TRY(XGBoosterCreate(NULL, 0, &b), PW_ERR_INTERNAL);
    XGB_TRY(XGBoosterLoadModel(b, path), PW_ERR_PARSE);
    XGB_TRY(XGBoosterGetNumFeature(b, &nfeat), PW_ERR_PARSE);
    XGB_TRY(XGBoosterGetAttr(b, FEAT_ATTR, &attr, &success), PW_ERR_PARSE);
    feature_list(names, sizeof(names));
    if (nfeat != PW_FEAT_COUNT || !success || strcmp(attr, names) != 0) {
        pw_log_error("predictor", "model %s has features [%s] (%u), this build expects [%s]", path,
                     success ? attr : "?", (unsigned)nfeat, names);
        rv = PW_ERR_INVAL;
        goto fail;
    }
    /* Prediction threads default to all cores; pw_model_set_nthread narrows them. */
    *out = pw_xcalloc(1, sizeof(**out));
    (*out)->booster = b;
    attr = NULL;
    success = 0;
    if (XGBoosterGetAttr(b, OFFSET_ATTR, &attr, &success) == 0 && success) {
        /* The value is the offset's floor ("1" from the first offset models meant 0.005). */
        char *end;
        double eps = strtod(attr, &end);
        if (*end != '\0' || !(eps > 0) || eps > 1) {
            pw_log_error("predictor", "model %s: bad %s attribute \"%s\"", path, OFFSET_ATTR, attr);
            XGBoosterFree(b);
            free(*out);
            *out = NULL;
            return PW_ERR_INVAL;
        }
        (*out)->offset = 1;
        (*out)->offset_eps = strcmp(attr, "1") == 0 ? 0.005f : (float)eps;
    }
    return PW_OK;
fail:
    if (b)
        XGBoosterFree(b);
    return rv;
}

void pw_model_free(struct pw_model *m)
{
    if (!m)
        return;
    XGBoosterFree(m->booster);
    free(m);
}

int pw_model_set_nthread(struct pw_model *m, int nthread)
{
    char v[16];
    snprintf(v, sizeof(v), "%d", nthread);
    return set_param(m->booster, "nthread", v);
}

int pw_model_predict(const struct pw_model *m, const float *X, size_t nrows, int margin, float *out)
{
    char arr[256], cfg[256];
    const bst_ulong *shape = NULL;
    bst_ulong dim = 0;
    const float *res = NULL;

    if (nrows == 0)
        return PW_OK;
    /* In-place prediction reads X directly: no DMatrix copy of 100,000 rows per tick. */
    snprintf(arr, sizeof(arr),
             "{\"data\":[%" PRIuPTR ",true],\"shape\":[%zu,%d],\"typestr\":\"<f4\",\"version\":3}",
             (uintptr_t)X, nrows, (int)PW_FEAT_COUNT);
    snprintf(cfg, sizeof(cfg),
             "{\"type\":%d,\"training\":false,\"iteration_begin\":0,\"iteration_end\":0,"
             "\"strict_shape\":false,\"cache_id\":0,\"missing\":NaN}",
             margin || m->offset ? 1 : 0);
    if (XGBoosterPredictFromDense(m->booster, arr, cfg, NULL, &shape, &dim, &res) != 0)
        return xgb_fail("XGBoosterPredictFromDense", PW_ERR_INTERNAL);
    if (dim < 1 || shape[0] != nrows || (dim == 2 && shape[1] != 1)) {
        pw_log_error("predictor", "xgboost returned an unexpected shape (dim %u)", (unsigned)dim);
        return PW_ERR_INTERNAL;
    }
    if (!m->offset) {
        memcpy(out, res, nrows * sizeof(float));
        return PW_OK;
    }
    /* Asked for the margin, XGBoost gave the trees' sum (base_score 1 adds nothing); add each
     * row's offset, and take the exponential for a rate. */
    for (size_t i = 0; i < nrows; i++) {
        float mg = res[i] + row_offset(X + i * PW_FEAT_COUNT, m->offset_eps);
        out[i] = margin ? mg : expf(mg);
    }
    return PW_OK;
}

int pw_model_contribs(const struct pw_model *m, const float *X, size_t nrows, float *out)
{
    DMatrixHandle d = NULL;
    bst_ulong len = 0;
    const float *res = NULL;
    int rv = PW_OK;

    XGB_TRY(XGDMatrixCreateFromMat(X, (bst_ulong)nrows, PW_FEAT_COUNT, NAN, &d), PW_ERR_INTERNAL);
    XGB_TRY(XGBoosterPredict(m->booster, d, 4, 0, 0, &len, &res), PW_ERR_INTERNAL);
    if (len != nrows * (PW_FEAT_COUNT + 1)) {
        pw_log_error("predictor", "xgboost returned %u contributions for %zu rows", (unsigned)len, nrows);
        rv = PW_ERR_INTERNAL;
        goto fail;
    }
    memcpy(out, res, len * sizeof(float));
    if (m->offset) /* the offset joins the bias term, so contributions still sum to the margin */
        for (size_t i = 0; i < nrows; i++)
            out[i * (PW_FEAT_COUNT + 1) + PW_FEAT_COUNT] += row_offset(X + i * PW_FEAT_COUNT, m->offset_eps);
fail:
    if (d)
        XGDMatrixFree(d);
    return rv;
}
