/*
 * Leveled diagnostics on stderr ("LEVEL ferry: message"). The level is set once at startup and only
 * read afterwards, so workers may log without locks: each line goes out in a single write(2).
 */
#ifndef FY_LOG_H
#define FY_LOG_H

#include <stddef.h>

enum fy_log_level { FY_LOG_DEBUG, FY_LOG_INFO, FY_LOG_WARN, FY_LOG_ERROR };

extern enum fy_log_level fy_log_min_level;

/* Parses "debug", "info", "warn" or "error". Returns 0, or -1 for anything else. */
int fy_log_parse_level(const char *name, enum fy_log_level *out);

/* Formats an error message into err (at most errlen bytes, always terminated) and returns -1, so
 * a parser can `return fy_errf(err, errlen, "...", ...);`. */
int fy_errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Formats and writes one line if level >= fy_log_min_level. Never fails loudly. */
void fy_log(enum fy_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define fy_debug(...)                                                                              \
    do {                                                                                           \
        if (fy_log_min_level <= FY_LOG_DEBUG)                                                      \
            fy_log(FY_LOG_DEBUG, __VA_ARGS__);                                                     \
    } while (0)
#define fy_info(...) fy_log(FY_LOG_INFO, __VA_ARGS__)
#define fy_warn(...) fy_log(FY_LOG_WARN, __VA_ARGS__)
#define fy_error(...) fy_log(FY_LOG_ERROR, __VA_ARGS__)

#endif
