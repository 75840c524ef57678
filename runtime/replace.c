/* Replacing a file so that a crash never leaves it torn: write a new file
 * beside it, sync it, rename it over the old one, sync the folder. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime.h"

/* Sync the folder holding path, so the rename survives a power cut.  Best
 * effort: if this fails, a power cut can at worst bring the old file back. */
static void sync_folder(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    if (!dir)
        return;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(dir);
}

/* The new file is path.tmp-<pid>-<n>, made with O_EXCL and mode 0666 less
 * the umask, as any new file, rather than mkstemp's 0600; replacing a file
 * keeps that file's mode. */
bool rt_replace_begin(RtReplace *r, const char *path)
{
    size_t size = strlen(path) + 48;
    *r = (RtReplace){.path = path, .tmp = malloc(size)};
    if (!r->tmp)
        return false;
    struct stat st;
    bool keep_mode = stat(path, &st) == 0 && S_ISREG(st.st_mode);
    for (int n = 0; n < 1000; n++) {
        snprintf(r->tmp, size, "%s.tmp-%ld-%d", path, (long)getpid(), n);
        int fd = open(r->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0 && errno == EEXIST)
            continue;
        if (fd < 0)
            break;
        if ((!keep_mode || fchmod(fd, st.st_mode & 0777) == 0) && (r->f = fdopen(fd, "wb")))
            return true;
        int e = errno;
        close(fd);
        unlink(r->tmp);
        errno = e;
        break;
    }
    int e = errno;
    free(r->tmp);
    r->tmp = NULL;
    errno = e;
    return false;
}

bool rt_replace_end(RtReplace *r, bool ok)
{
    ok = ok && fflush(r->f) == 0 && !ferror(r->f) && fsync(fileno(r->f)) == 0;
    int e = errno;
    if (fclose(r->f) != 0 && ok) {
        ok = false;
        e = errno;
    }
    if (ok && rename(r->tmp, r->path) != 0) {
        ok = false;
        e = errno;
    }
    if (ok)
        sync_folder(r->path);
    else
        unlink(r->tmp);
    free(r->tmp);
    *r = (RtReplace){0};
    errno = e;
    return ok;
}
