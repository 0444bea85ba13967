/*
 * The configuration file: a YAML mapping whose keys are the entries of the option table
 * (fy_options), loaded with libyaml into the same struct fy_config the command line fills.
 */
#ifndef FY_CONF_YAML_H
#define FY_CONF_YAML_H

#include <stdbool.h>

#include "conf/config.h"

/* Loads the file at `path` over the values already in c. Every mistake is collected, not only
 * the first: the result is the number of errors (0: loaded), and *errors receives a malloc'd
 * text with one "PATH:LINE:COLUMN: what was expected" line per error (NULL when there is none);
 * *count receives the number too. `upstream_given`: the command line sets --upstream, so the file
 * need not. ${file:PATH} in values is relative to the file's directory. */
int fy_yaml_load(struct fy_config *c, const char *path, bool upstream_given, char **errors,
                 unsigned *count);

#endif
