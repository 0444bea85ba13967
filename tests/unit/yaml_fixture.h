/*
 * The fixture test_yaml.c and test_schema.c share: a configuration file in a fresh temporary
 * directory, loaded with fy_yaml_load() into C, its errors in ERRS, and errors() giving them
 * without the "PATH:" prefix. Included by one test file each (static state).
 */
#ifndef FY_TEST_YAML_FIXTURE_H
#define FY_TEST_YAML_FIXTURE_H

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/config.h"
#include "conf/yaml.h"

static struct fy_config C;
static char DIR_[64];
static char PATH_[128];
static char *ERRS;
static unsigned NERR;

static void yaml_fixture_setup(const char *dir_template)
{
    fy_config_defaults(&C);
    snprintf(DIR_, sizeof(DIR_), "%s", dir_template);
    cr_assert_not_null(mkdtemp(DIR_));
    snprintf(PATH_, sizeof(PATH_), "%s/ferry.yaml", DIR_);
    ERRS = NULL;
    NERR = 0;
}

static void write_file(const char *name, const char *text)
{
    char p[256];
    snprintf(p, sizeof(p), "%s/%s", DIR_, name);
    FILE *f = fopen(p, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

static void teardown(void)
{
    fy_config_free(&C);
    free(ERRS);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", DIR_);
    cr_assert_eq(system(cmd), 0);
}

/* Loads `text` as the configuration file; returns the number of errors. */
static int load(const char *text)
{
    fy_config_free(&C);
    fy_config_defaults(&C);
    free(ERRS);
    ERRS = NULL;
    write_file("ferry.yaml", text);
    return fy_yaml_load(&C, PATH_, false, &ERRS, &NERR);
}

/* The errors, without the "PATH:" prefix of each line. */
static char *errors(void)
{
    static char buf[8192];
    buf[0] = 0;
    const char *p = ERRS ? ERRS : "";
    size_t plen = strlen(PATH_);
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p + 1) : strlen(p);
        cr_assert(!strncmp(p, PATH_, plen) && p[plen] == ':', "line lacks the path: %.*s", (int)n,
                  p);
        strncat(buf, p + plen + 1, n - plen - 1);
        p += n;
    }
    return buf;
}

#define EXPECT_ONE_ERROR(text, want)                                                               \
    do {                                                                                           \
        cr_assert_eq(load(text), 1, "errors: %s", ERRS ? ERRS : "none");                           \
        cr_assert_str_eq(errors(), want "\n");                                                     \
    } while (0)

#endif
