/* from_pg.h — prewarm-train's PostgreSQL source (from_pg.c). */
#ifndef PW_TRAIN_FROM_PG_H
#define PW_TRAIN_FROM_PG_H

#include "pw/model.h"

#include <stddef.h>

struct pw_pg_train {
    const char *conninfo; /* libpq connection string */
    const char *out;      /* model file to write */
    size_t minutes;       /* the most recent minutes of history to train on */
    double duration_ms;   /* execution time given to every function (not stored in PostgreSQL) */
    size_t min_rows;      /* fewer active rows: refuse */
    double zero_keep;
    struct pw_model_params model;
};

/* pw_train_from_pg trains and saves a model; returns the process exit code (0, or 1 with the
 * reason on stderr). */
int pw_train_from_pg(const struct pw_pg_train *o);

#endif
