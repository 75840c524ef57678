#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* path ("-": standard input) open for reading, after checking that it is a
 * regular file of at most TOOL_MAX_TEXT bytes (standard input may be a pipe,
 * whose length shows only as it is read); NULL after reporting. */
static FILE *open_text(const char *path, bool in, Diag *d) {
    SrcLoc loc = {path, 0, 0};
    /* non-blocking, so that opening a FIFO does not wait for a writer */
    int fd = in ? dup(STDIN_FILENO) : open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    struct stat st;
    FILE *fp = NULL;
    if (fd < 0 || fstat(fd, &st) != 0)
        diag_error(d, loc, "cannot open '%s': %s", path, strerror(errno));
    else if (!in && !S_ISREG(st.st_mode))
        diag_error(d, loc, "cannot read '%s': %s", path, S_ISDIR(st.st_mode) ? strerror(EISDIR) : "not a regular file");
    else if (S_ISREG(st.st_mode) && st.st_size > TOOL_MAX_TEXT)
        diag_error(d, loc, "cannot read '%s': over %d MiB", path, TOOL_MAX_TEXT >> 20);
    else if ((!in && fcntl(fd, F_SETFL, 0) != 0) || !(fp = fdopen(fd, "rb")))
        diag_error(d, loc, "cannot open '%s': %s", path, strerror(errno));
    if (!fp && fd >= 0)
        close(fd);
    return fp;
}

char *tool_read_file(const char *path, size_t *len, Diag *d) {
    bool in = strcmp(path, "-") == 0;
    FILE *fp = open_text(path, in, d);
    if (!fp)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    for (size_t r; buf && n <= TOOL_MAX_TEXT && (r = fread(buf + n, 1, cap - n, fp)) > 0;) {
        n += r;
        if (n == cap) {
            char *nb = realloc(buf, 2 * cap + 1);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    int err = ferror(fp) ? errno : 0;
    fclose(fp);
    SrcLoc loc = {path, 0, 0};
    if (!buf || err)
        diag_error(d, loc, "cannot read '%s': %s", path, buf ? strerror(err) : "out of memory");
    else if (n > TOOL_MAX_TEXT)
        diag_error(d, loc, "cannot read '%s': over %d MiB", path, TOOL_MAX_TEXT >> 20);
    if (!buf || err || n > TOOL_MAX_TEXT) {
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

/* path's folder: what comes before its last slash ("/" for a name just below
 * the root, "." for a bare name); malloc'd. */
static char *folder_of(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
}

/* path as the resolved path of its folder and its last component; malloc'd,
 * or NULL when the folder does not resolve. */
static char *resolved_name(const char *path) {
    char *dir = folder_of(path), real[PATH_MAX];
    const char *slash = strrchr(path, '/'), *base = slash ? slash + 1 : path;
    char *name = dir && realpath(dir, real) ? malloc(strlen(real) + strlen(base) + 2) : NULL;
    if (name)
        sprintf(name, "%s/%s", real, base);
    free(dir);
    return name;
}

bool tool_same_file(const char *a, const char *b) {
    struct stat sa, sb;
    bool ea = stat(a, &sa) == 0, eb = stat(b, &sb) == 0;
    if (ea || eb)
        return ea && eb && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
    char *ra = resolved_name(a), *rb = resolved_name(b);
    bool same = ra && rb ? strcmp(ra, rb) == 0 : strcmp(a, b) == 0;
    free(ra);
    free(rb);
    return same;
}

bool tool_writable_path(const char *path, bool replaced, char *why, size_t size) {
    char *dir = folder_of(path);
    struct stat st;
    bool ok = false;
    if (!dir)
        snprintf(why, size, "out of memory");
    else if (stat(dir, &st) != 0)
        snprintf(why, size, "folder '%s': %s", dir, strerror(errno));
    else if (!S_ISDIR(st.st_mode))
        snprintf(why, size, "'%s' is not a folder", dir);
    else if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        snprintf(why, size, "it is a folder");
    else if (replaced && stat(path, &st) == 0 && !S_ISREG(st.st_mode))
        snprintf(why, size, "it is not a regular file, and a new file would be renamed over it");
    else
        ok = true;
    free(dir);
    return ok;
}

bool tool_option(int argc, char **argv, int *i, const char *name, const char **value) {
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) != 0)
        return false;
    if (a[n] == '=') {
        *value = a + n + 1;
        return true;
    }
    if (a[n] == 0 && *i + 1 < argc) {
        *value = argv[++*i];
        return true;
    }
    return false;
}
