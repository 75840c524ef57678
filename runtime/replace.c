/* Replacing a file so that a crash never leaves it torn: write a new file
 * beside it, sync it, rename it over the old one, sync the folder. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime.h"

enum { HOST_MAX = 64 };         /* bytes of the host name kept in a temporary name */

/* The folder holding path; malloc'd, NULL when out of memory. */
static char *folder_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
}

/* Sync the folder holding path, so the rename survives a power cut.  Best
 * effort: if this fails, a power cut can at worst bring the old file back. */
static void sync_folder(const char *path)
{
    char *dir = folder_of(path);
    if (!dir)
        return;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(dir);
}

/* This host's name as it goes into a temporary name: every byte but a
 * letter, a digit, '.', '_' and '-' becomes '_' (so never a slash), and
 * "localhost" when the system has none. */
static void host_name(char out[HOST_MAX + 1])
{
    if (gethostname(out, HOST_MAX + 1) != 0 || !out[0])
        strcpy(out, "localhost");
    out[HOST_MAX] = 0;
    for (char *c = out; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '.' ||
              *c == '_' || *c == '-'))
            *c = '_';
}

/* The process id in "<pid>-<n>", the rest of a temporary name after its
 * host; 0 when the rest is not of that form. */
static long temp_pid(const char *rest)
{
    long pid = 0;
    const char *c = rest;
    for (; *c >= '0' && *c <= '9' && pid < 100000000; c++)
        pid = 10 * pid + (*c - '0');
    if (c == rest || *c++ != '-' || !(*c >= '0' && *c <= '9'))
        return 0;
    while (*c >= '0' && *c <= '9')
        c++;
    return *c ? 0 : pid;
}

/* Remove the temporary files of path that processes of this host left when
 * they died while writing (killed, or out of power): path.tmp-<host>-<pid>-<n>
 * for this very path and host, and a pid that no process has any more
 * (kill(pid, 0) fails with ESRCH).  A file of another host, or of a process
 * still running, may be a save in progress and is kept.  Processes with one
 * host name are taken to share their process ids (containers that share a
 * host name and this folder but not their pids would not).  Best effort. */
static void remove_stale(const char *path, const char *host)
{
    char *dir = folder_of(path);
    const char *slash = strrchr(path, '/'), *base = slash ? slash + 1 : path;
    size_t n = strlen(base) + strlen(host) + 7;
    char *prefix = malloc(n);
    DIR *d = dir && prefix ? opendir(dir) : NULL;
    if (d) {
        snprintf(prefix, n, "%s.tmp-%s-", base, host);
        for (struct dirent *e; (e = readdir(d));) {
            if (strncmp(e->d_name, prefix, n - 1) != 0)
                continue;
            long pid = temp_pid(e->d_name + n - 1);
            if (pid > 0 && pid != (long)getpid() && kill((pid_t)pid, 0) != 0 && errno == ESRCH)
                unlinkat(dirfd(d), e->d_name, 0);
        }
        closedir(d);
    }
    free(prefix);
    free(dir);
}

/* The new file is path.tmp-<host>-<pid>-<n>, made with O_EXCL and mode 0666
 * less the umask, as any new file, rather than mkstemp's 0600; replacing a
 * file keeps that file's mode.  The host and pid tell whose it is, so that
 * a later save can remove it if its process died (remove_stale). */
bool rt_replace_begin(RtReplace *r, const char *path)
{
    char host[HOST_MAX + 1];
    host_name(host);
    remove_stale(path, host);
    size_t size = strlen(path) + strlen(host) + 48;
    *r = (RtReplace){.path = path, .tmp = malloc(size)};
    if (!r->tmp)
        return false;
    struct stat st;
    bool keep_mode = stat(path, &st) == 0 && S_ISREG(st.st_mode);
    for (int n = 0; n < 1000; n++) {
        snprintf(r->tmp, size, "%s.tmp-%s-%ld-%d", path, host, (long)getpid(), n);
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
