/* error.c — strings and HTTP statuses for enum pw_err, generated from PW_ERR_MAP. */
#include "pw/error.h"

#include <ctype.h>
#include <stddef.h>

static const struct {
    int status;
    const char *str;
    const char *name;
} err_table[] = {
#define PW_ERR_ROW(name, status, str) {status, str, #name},
    PW_ERR_MAP(PW_ERR_ROW)
#undef PW_ERR_ROW
};

/* Lower-case codes, built once from the upper-case enum names. */
static char err_names[PW_ERR__COUNT][24];

const char *pw_strerror(enum pw_err err)
{
    if ((unsigned)err >= PW_ERR__COUNT)
        return "unknown error";
    return err_table[err].str;
}

const char *pw_err_name(enum pw_err err)
{
    if ((unsigned)err >= PW_ERR__COUNT)
        return "unknown";
    char *out = err_names[err];
    if (out[0] == '\0') {
        /* Racing threads write the same bytes; the result is the same either way. */
        const char *in = err_table[err].name;
        size_t i = 0;
        for (; in[i] != '\0' && i + 1 < sizeof(err_names[0]); i++)
            out[i] = (char)tolower((unsigned char)in[i]);
        out[i] = '\0';
    }
    return out;
}

int pw_err_http_status(enum pw_err err)
{
    if ((unsigned)err >= PW_ERR__COUNT)
        return 500;
    return err_table[err].status;
}
