/* Small helpers shared by the command-line tools. */
#ifndef MAMLC_TOOLS_UTIL_H
#define MAMLC_TOOLS_UTIL_H

#include <stdbool.h>
#include <stddef.h>

#include "../frontend/diag.h"

/* The whole of `path` ("-" for standard input) into a malloc'd buffer with a
 * NUL after it.  NULL after reporting through d. */
char *tool_read_file(const char *path, size_t *len, Diag *d);

/* If arg is "--NAME=VALUE" (or "--NAME" with VALUE as the next argument),
 * store VALUE and return true; *i advances past what was used. */
bool tool_option(int argc, char **argv, int *i, const char *name, const char **value);

#endif
