/*
 * Small language helpers used across the tree. Kept here once so no file grows its own variant.
 */
#ifndef FY_MACROS_H
#define FY_MACROS_H

#include <stddef.h>

/* The struct that embeds `member` at address p (tasks, timers and pollables live inside the
 * object they run for). */
#define container_of(p, type, member) ((type *)((char *)(p)-offsetof(type, member)))

#define FY_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
