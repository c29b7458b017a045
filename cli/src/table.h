/* table.h — aligned text columns for prewarmctl's table output. */
#ifndef PW_CLI_TABLE_H
#define PW_CLI_TABLE_H

#include <stdio.h>

/* A table of ncols columns; cells are copied. Single-threaded. */
struct pw_table {
    int ncols;
    size_t nrows, cap;
    char **cells; /* nrows * ncols, row-major; row 0 is the header */
};

/* pw_table_init starts a table with header names (ncols of them). */
void pw_table_init(struct pw_table *t, int ncols, const char *const *header);
void pw_table_fini(struct pw_table *t);
/* pw_table_row appends a row of ncols strings (NULL prints "-"). */
void pw_table_row(struct pw_table *t, const char *const *cells);
/* pw_table_print writes the columns left-aligned, two spaces apart, no trailing blanks. */
void pw_table_print(const struct pw_table *t, FILE *f);

#endif
