#include "util.h"

#include <errno.h>
#include <fcntl.h>
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
