/* A model's text built into a shared library by `mamlc TEXT -o LIB.so`
 * (with the extra options given) in a temporary folder, and dlopen'ed; the
 * files are removed once it is loaded. */
#ifndef MAMLC_TEST_BUILD_LIBRARY_H
#define MAMLC_TEST_BUILD_LIBRARY_H

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

/* The loaded library, or NULL if mamlc or dlopen failed.  `option` (NULL
 * or e.g. "--dtype=f64") is passed to mamlc after the output. */
static inline void *build_library_so(const char *text, const char *option) {
    char dir[] = "/tmp/mamlc-lib-XXXXXX", mdl[64], so[64], h[64];
    if (!mkdtemp(dir))
        return NULL;
    snprintf(mdl, sizeof mdl, "%s/model.mdl", dir);
    snprintf(so, sizeof so, "%s/model.so", dir);
    snprintf(h, sizeof h, "%s/model.h", dir);
    FILE *f = fopen(mdl, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
    pid_t pid = f ? fork() : -1;
    if (pid == 0) {
        execl(MAMLC_BINARY_DIR "/mamlc", "mamlc", mdl, "-o", so, option, (char *)NULL);
        _exit(127);
    }
    int status = 0;
    if (pid > 0)
        waitpid(pid, &status, 0);
    void *lib = pid > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0 ? dlopen(so, RTLD_NOW | RTLD_LOCAL) : NULL;
    unlink(mdl);
    unlink(so);
    unlink(h);
    rmdir(dir);
    return lib;
}

#endif
