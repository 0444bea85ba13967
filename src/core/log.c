/* Leveled diagnostics on stderr; see log.h. */
#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

enum fy_log_level fy_log_min_level = FY_LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

int fy_log_parse_level(const char *name, enum fy_log_level *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *out = (enum fy_log_level)i;
            return 0;
        }
    }
    return -1;
}

int fy_errf(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

void fy_log(enum fy_log_level level, const char *fmt, ...)
{
    if (level < fy_log_min_level)
        return;
    char line[1024];
    int n = snprintf(line, sizeof(line), "%s ferry: ", level_names[level]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    line[len++] = '\n';
    /* One write per line keeps lines from different workers whole. */
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
