/* Small helpers shared by the command-line tools. */
#ifndef MAMLC_TOOLS_UTIL_H
#define MAMLC_TOOLS_UTIL_H

#include <stdbool.h>
#include <stddef.h>

#include "../base/diag.h"

#define MAMLC_VERSION "0.1.0"

enum { TOOL_MAX_TEXT = 16 << 20 };     /* bytes of the largest text file read */

/* The whole of `path` ("-" for standard input) into a malloc'd buffer with a
 * NUL after it.  A path must name a regular file (not a device, FIFO or
 * folder) and no text may be over TOOL_MAX_TEXT bytes, so that /dev/zero is
 * refused at once rather than read forever.  NULL after reporting through d. */
char *tool_read_file(const char *path, size_t *len, Diag *d);

/* Whether paths a and b name the same file: the same device and inode when
 * both exist; else, when neither does, the same name in the same resolved
 * folder (or, where a folder does not resolve, the same text). */
bool tool_same_file(const char *a, const char *b);

/* Whether a file can be written at path: its folder exists and path is no
 * folder; when `replaced` (a new file is renamed over path), path must be
 * a regular file if it exists.  false after writing why not into why. */
bool tool_writable_path(const char *path, bool replaced, char *why, size_t size);

/* If arg is "--NAME=VALUE" (or "--NAME" with VALUE as the next argument),
 * store VALUE and return true; *i advances past what was used. */
bool tool_option(int argc, char **argv, int *i, const char *name, const char **value);

/* The SHA-256 digest of data[0..n) as 64 lowercase hex digits and a NUL. */
void tool_sha256_hex(const void *data, size_t n, char hex[65]);

/* The edit distance (Levenshtein: insertions, deletions, substitutions)
 * between a and b, counted up to `cap` (a larger distance gives cap). */
int tool_edit_distance(const char *a, const char *b, int cap);

#endif
