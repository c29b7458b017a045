/* table.c — aligned text columns for prewarmctl's table output. */
#include "table.h"

#include "pw/util.h"

#include <stdlib.h>
#include <string.h>

void pw_table_init(struct pw_table *t, int ncols, const char *const *header)
{
    memset(t, 0, sizeof(*t));
    t->ncols = ncols;
    pw_table_row(t, header);
}

void pw_table_fini(struct pw_table *t)
{
    for (size_t i = 0; i < t->nrows * (size_t)t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    memset(t, 0, sizeof(*t));
}

void pw_table_row(struct pw_table *t, const char *const *cells)
{
    if (t->nrows == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 16;
        t->cells = pw_xrealloc(t->cells, t->cap * (size_t)t->ncols * sizeof(char *));
    }
    for (int i = 0; i < t->ncols; i++)
        t->cells[t->nrows * (size_t)t->ncols + (size_t)i] = pw_xstrdup(cells[i] ? cells[i] : "-");
    t->nrows++;
}

void pw_table_print(const struct pw_table *t, FILE *f)
{
    size_t *w = pw_xcalloc((size_t)t->ncols, sizeof(size_t));
    for (size_t r = 0; r < t->nrows; r++)
        for (int i = 0; i < t->ncols; i++) {
            size_t n = strlen(t->cells[r * (size_t)t->ncols + (size_t)i]);
            if (n > w[i])
                w[i] = n;
        }
    for (size_t r = 0; r < t->nrows; r++) {
        for (int i = 0; i < t->ncols; i++) {
            const char *s = t->cells[r * (size_t)t->ncols + (size_t)i];
            if (i == t->ncols - 1)
                fprintf(f, "%s\n", s);
            else
                fprintf(f, "%-*s  ", (int)w[i], s);
        }
    }
    free(w);
}
