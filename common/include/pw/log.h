/* log.h — JSON logs on stderr, one event a line.
 *
 * Each line: {"ts":"2026-01-02T03:04:05.678Z","level":"info","comp":"core","msg":"..."}
 * plus optional extra fields. Any thread; a line is written with one write(2). */
#ifndef PW_LOG_H
#define PW_LOG_H

enum pw_log_level { PW_LOG_DEBUG, PW_LOG_INFO, PW_LOG_WARN, PW_LOG_ERROR };

/* pw_log_set_level sets the minimum level printed (default info). Call before threads start. */
void pw_log_set_level(enum pw_log_level level);
/* pw_log_parse_level maps "debug"/"info"/"warn"/"error"; returns -1 when unknown. */
int pw_log_parse_level(const char *s);
/* pw_log_set_process names the process ("prewarmd", "prewarm-agent") in every line. */
void pw_log_set_process(const char *name);

/* pw_log formats msg with printf rules and writes it JSON-escaped. */
void pw_log(enum pw_log_level level, const char *comp, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define pw_log_debug(comp, ...) pw_log(PW_LOG_DEBUG, comp, __VA_ARGS__)
#define pw_log_info(comp, ...) pw_log(PW_LOG_INFO, comp, __VA_ARGS__)
#define pw_log_warn(comp, ...) pw_log(PW_LOG_WARN, comp, __VA_ARGS__)
#define pw_log_error(comp, ...) pw_log(PW_LOG_ERROR, comp, __VA_ARGS__)

#endif
