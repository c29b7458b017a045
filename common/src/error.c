/* error.c — strings and HTTP statuses for enum pw_err, generated from PW_ERR_MAP. */
#include "pw/error.h"

#include <stddef.h>

static const struct {
    int status;
    const char *str;
    const char *code;
} err_table[] = {
#define PW_ERR_ROW(name, status, code, str) {status, str, code},
    PW_ERR_MAP(PW_ERR_ROW)
#undef PW_ERR_ROW
};

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
    return err_table[err].code;
}

int pw_err_http_status(enum pw_err err)
{
    if ((unsigned)err >= PW_ERR__COUNT)
        return 500;
    return err_table[err].status;
}
