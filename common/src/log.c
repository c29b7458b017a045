/* log.c — JSON lines on stderr. */
#include "pw/log.h"

#include "pw/util.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static enum pw_log_level min_level = PW_LOG_INFO;
static char process_name[32] = "prewarm";

void pw_log_set_level(enum pw_log_level level) { min_level = level; }

void pw_log_set_process(const char *name) { pw_strlcpy(process_name, name, sizeof(process_name)); }

int pw_log_parse_level(const char *s)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    for (size_t i = 0; i < PW_ARRAY_LEN(names); i++)
        if (strcasecmp(s, names[i]) == 0)
            return (int)i;
    return -1;
}

void pw_log(enum pw_log_level level, const char *comp, const char *fmt, ...)
{
    static const char *level_names[] = {"debug", "info", "warn", "error"};
    if (level < min_level)
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char stamp[64];
    snprintf(stamp, sizeof(stamp), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ts.tv_nsec / 1000000));

    struct pw_buf b;
    pw_buf_init(&b, 8192);
    pw_buf_printf(&b, "{\"ts\":\"%s\",\"level\":\"%s\",\"proc\":", stamp, level_names[level]);
    pw_buf_add_json_str(&b, process_name);
    pw_buf_adds(&b, ",\"comp\":");
    pw_buf_add_json_str(&b, comp);
    pw_buf_adds(&b, ",\"msg\":");
    pw_buf_add_json_str(&b, msg);
    pw_buf_adds(&b, "}\n");
    ssize_t w = write(STDERR_FILENO, b.data, b.len);
    (void)w;
    pw_buf_fini(&b);
}
