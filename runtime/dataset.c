/* What the data-set loaders share (runtime/dataset.h): listing and reading
 * the files of a zip or folder, exact area-averaging weights, and draws. */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "dataset.h"

enum {
    MAX_DEPTH = 16,                     /* folder nesting walked */
    STACK_INTS = 256,                   /* task draw scratch kept on the stack */
};
#define MAX_FILE_BYTES ((size_t)64 << 20)     /* one file read whole */

/* ------------------------------------------------------------------------
 * The files of a zip or a folder tree */

char *rt_dup_string(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

/* Hidden files and folders (".x", but not "." or "..") and macOS resource
 * forks are not data. */
static bool skipped_name(const char *name)
{
    for (const char *c = name; *c;) {
        const char *end = strchr(c, '/');
        size_t len = end ? (size_t)(end - c) : strlen(c);
        bool dots = len <= 2 && memcmp(c, "..", len) == 0;
        if ((len > 0 && c[0] == '.' && !dots) || (len == 8 && memcmp(c, "__MACOSX", 8) == 0))
            return true;
        c += len + (end != NULL);
    }
    return false;
}

static bool add_file(RtFiles *s, const char *name, zip_uint64_t index, char *err, size_t errsize)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 256;
        RtFile *e = realloc(s->file, cap * sizeof *e);
        if (!e)
            return rt_errorf(err, errsize, "%s: out of memory", s->path);
        s->file = e;
        s->cap = cap;
    }
    char *copy = rt_dup_string(name);
    if (!copy)
        return rt_errorf(err, errsize, "%s: out of memory", s->path);
    s->file[s->n++] = (RtFile){.name = copy, .index = index};
    return true;
}

static char *join(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *p = malloc(la + lb + 2);
    if (!p)
        return NULL;
    memcpy(p, a, la);
    p[la] = '/';
    memcpy(p + la + 1, b, lb + 1);
    return p;
}

/* Add the regular files under folder `abs` (named `rel` from the root, "" at
 * the root) to s. */
static bool walk(RtFiles *s, const char *abs, const char *rel, int depth, char *err,
                 size_t errsize)
{
    if (depth > MAX_DEPTH)
        return rt_errorf(err, errsize, "%s: folders nested more than %d deep", abs, MAX_DEPTH);
    DIR *d = opendir(abs);
    if (!d)
        return rt_errorf(err, errsize, "%s: cannot open folder: %s", abs, strerror(errno));
    bool ok = true;
    for (struct dirent *de; ok && (errno = 0, de = readdir(d)) != NULL;) {
        if (de->d_name[0] == '.' || strcmp(de->d_name, "__MACOSX") == 0)
            continue;
        char *full = join(abs, de->d_name);
        char *name = rel[0] ? join(rel, de->d_name) : rt_dup_string(de->d_name);
        struct stat st;
        if (!full || !name)
            ok = rt_errorf(err, errsize, "%s: out of memory", s->path);
        else if (stat(full, &st) != 0)
            ok = rt_errorf(err, errsize, "%s: cannot read: %s", full, strerror(errno));
        else if (S_ISDIR(st.st_mode))
            ok = walk(s, full, name, depth + 1, err, errsize);
        else if (S_ISREG(st.st_mode))
            ok = add_file(s, name, 0, err, errsize);
        free(full);
        free(name);
    }
    if (ok && errno != 0)
        ok = rt_errorf(err, errsize, "%s: cannot list folder: %s", abs, strerror(errno));
    closedir(d);
    return ok;
}

void rt_files_close(RtFiles *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->file[i].name);
    free(s->file);
    if (s->zip)
        zip_discard(s->zip);
    *s = (RtFiles){0};
}

bool rt_files_open(RtFiles *s, const char *path, char *err, size_t errsize)
{
    *s = (RtFiles){.path = path};
    struct stat st;
    if (stat(path, &st) != 0)
        return rt_errorf(err, errsize, "%s: cannot open: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) {
        if (walk(s, path, "", 0, err, errsize))
            return true;
        rt_files_close(s);
        return false;
    }
    int code = 0;
    s->zip = zip_open(path, ZIP_RDONLY, &code);
    if (!s->zip) {
        zip_error_t ze;
        zip_error_init_with_code(&ze, code);
        rt_errorf(err, errsize, "%s: cannot open as a zip archive or folder: %s", path,
             zip_error_strerror(&ze));
        zip_error_fini(&ze);
        return false;
    }
    zip_int64_t n = zip_get_num_entries(s->zip, 0);
    for (zip_int64_t i = 0; i < n; i++) {
        const char *name = zip_get_name(s->zip, (zip_uint64_t)i, 0);
        if (!name) {
            rt_errorf(err, errsize, "%s: entry %lld: %s", path, (long long)i,
                 zip_strerror(s->zip));
            rt_files_close(s);
            return false;
        }
        size_t len = strlen(name);
        if (len == 0 || name[len - 1] == '/' || skipped_name(name))
            continue;
        if (!add_file(s, name, (zip_uint64_t)i, err, errsize)) {
            rt_files_close(s);
            return false;
        }
    }
    return true;
}

bool rt_files_read(const RtFiles *s, const RtFile *e, unsigned char **data, size_t *len,
                        char *err, size_t errsize)
{
    *data = NULL;
    *len = 0;
    if (s->zip) {
        zip_stat_t st;
        if (zip_stat_index(s->zip, e->index, 0, &st) != 0 || !(st.valid & ZIP_STAT_SIZE))
            return rt_errorf(err, errsize, "%s: %s: cannot read: %s", s->path, e->name,
                        zip_strerror(s->zip));
        if (st.size > MAX_FILE_BYTES)
            return rt_errorf(err, errsize, "%s: %s: larger than %zu bytes", s->path, e->name,
                        MAX_FILE_BYTES);
        size_t size = (size_t)st.size;
        unsigned char *buf = malloc(size ? size : 1);
        if (!buf)
            return rt_errorf(err, errsize, "%s: %s: out of memory", s->path, e->name);
        zip_file_t *f = zip_fopen_index(s->zip, e->index, 0);
        if (!f) {
            free(buf);
            return rt_errorf(err, errsize, "%s: %s: cannot read: %s", s->path, e->name,
                        zip_strerror(s->zip));
        }
        size_t got = 0;
        zip_int64_t r = 0;
        while (got < size && (r = zip_fread(f, buf + got, size - got)) > 0)
            got += (size_t)r;
        /* A final read past the end is where libzip checks the CRC. */
        unsigned char extra;
        if (r >= 0 && got == size)
            r = zip_fread(f, &extra, 1);
        if (r != 0 || got != size) {
            rt_errorf(err, errsize, "%s: %s: cannot read: %s", s->path, e->name,
                 r < 0 ? zip_file_strerror(f) : "size differs from the directory's");
            zip_fclose(f);
            free(buf);
            return false;
        }
        zip_fclose(f);
        *data = buf;
        *len = size;
        return true;
    }
    char *full = join(s->path, e->name);
    if (!full)
        return rt_errorf(err, errsize, "%s/%s: out of memory", s->path, e->name);
    FILE *f = fopen(full, "rb");
    free(full);
    if (!f)
        return rt_errorf(err, errsize, "%s/%s: cannot open: %s", s->path, e->name, strerror(errno));
    struct stat st;
    unsigned char *buf = NULL;
    bool ok = false;
    if (fstat(fileno(f), &st) != 0)
        rt_errorf(err, errsize, "%s/%s: cannot read: %s", s->path, e->name, strerror(errno));
    else if (st.st_size < 0 || (uintmax_t)st.st_size > MAX_FILE_BYTES)
        rt_errorf(err, errsize, "%s/%s: larger than %zu bytes", s->path, e->name, MAX_FILE_BYTES);
    else if (!(buf = malloc(st.st_size ? (size_t)st.st_size : 1)))
        rt_errorf(err, errsize, "%s/%s: out of memory", s->path, e->name);
    else if (fread(buf, 1, (size_t)st.st_size, f) != (size_t)st.st_size)
        rt_errorf(err, errsize, "%s/%s: read error", s->path, e->name);
    else
        ok = true;
    fclose(f);
    if (!ok) {
        free(buf);
        return false;
    }
    *data = buf;
    *len = (size_t)st.st_size;
    return true;
}

/* ------------------------------------------------------------------------
 * Area averaging */

/* The overlap of input pixel x and output pixel j, in units of 1/n. */
static int64_t overlap(int m, int n, int x, int j)
{
    int64_t a = (int64_t)j * m, b = a + m, c = (int64_t)x * n, d = c + n;
    int64_t lo = a > c ? a : c, hi = b < d ? b : d;
    return hi > lo ? hi - lo : 0;
}

/* The merged boundaries of both tilings end together at m n. */
int rt_area_taps(int m, int n, RtAreaTap *tap)
{
    int k = 0;
    for (int x = 0, j = 0; x < m;) {
        tap[k++] = (RtAreaTap){x, j, overlap(m, n, x, j)};
        int64_t xend = (int64_t)(x + 1) * n, jend = (int64_t)(j + 1) * m;
        x += xend <= jend;
        j += jend <= xend;
    }
    return k;
}

/* Horizontally every output pixel j reads the same number of inputs, `span`
 * from first[j], some with weight 0, so the inner loop never varies.  A
 * footprint of m/n pixels touches at most ceil(m/n) + 1 of them. */
int rt_area_span(int m, int n)
{
    int span = (m + n - 1) / n + 1;
    return span < m ? span : m;
}

void rt_area_window(int m, int n, int span, int *first, int64_t *weight)
{
    for (int j = 0; j < n; j++) {
        int x0 = (int)((int64_t)j * m / n);
        first[j] = x0 < m - span ? x0 : m - span;
        for (int t = 0; t < span; t++)
            weight[(size_t)j * (size_t)span + (size_t)t] = overlap(m, n, first[j] + t, j);
    }
}

RtRot90 rt_rot90(ptrdiff_t m, int rot)
{
    switch (rot) {
    case 1: return (RtRot90){(m - 1) * m, 1, -m};
    case 2: return (RtRot90){m * m - 1, -m, -1};
    case 3: return (RtRot90){m - 1, -1, m};
    default: return (RtRot90){0, m, 1};
    }
}

/* ------------------------------------------------------------------------
 * Ordering paths */

size_t rt_dir_len(const char *p)
{
    const char *slash = strrchr(p, '/');
    return slash ? (size_t)(slash - p) : 0;
}

/* Compare a[0..na) and b[0..nb) component by component: '/' sorts before
 * every other byte, so "Ab/x" < "Ab-c/x" as "Ab" < "Ab-c". */
static int compare_path(const char *a, size_t na, const char *b, size_t nb)
{
    for (size_t i = 0;; i++) {
        if (i == na || i == nb)
            return (i != na) - (i != nb);
        unsigned ca = (unsigned char)a[i], cb = (unsigned char)b[i];
        if (ca != cb)
            return (ca == '/' ? 0u : ca) < (cb == '/' ? 0u : cb) ? -1 : 1;
    }
}

int rt_file_compare(const void *pa, const void *pb)
{
    const RtFile *a = pa, *b = pb;
    size_t da = rt_dir_len(a->name), db = rt_dir_len(b->name);
    int c = compare_path(a->name, da, b->name, db);
    if (c == 0)
        c = strcmp(a->name + da, b->name + db);
    if (c == 0)
        c = (a->index > b->index) - (a->index < b->index);
    return c;
}

/* ------------------------------------------------------------------------
 * Draws */

void rt_shuffle(RtRng *r, int k, int32_t *a)
{
    for (int i = k - 1; i > 0; i--) {
        int j = (int)rt_rng_below(r, (uint32_t)i + 1);
        int32_t t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

void rt_draw_distinct(RtRng *r, int n, int k, int32_t *out)
{
    for (int i = 0; i < k; i++) {
        int32_t top = n - k + i;
        int32_t t = (int32_t)rt_rng_below(r, (uint32_t)top + 1);
        for (int m = 0; m < i; m++)
            if (out[m] == t) {
                t = top;        /* top is new: every earlier pick is below it */
                break;
            }
        out[i] = t;
    }
    rt_shuffle(r, k, out);
}

/* ------------------------------------------------------------------------
 * Tasks */

bool rt_draw_task(const RtTaskData *d, uint64_t seed, uint64_t task, int ways, int shots,
                  int queries, RtReal real, void *sx, int32_t *sy, void *qx, int32_t *qy)
{
    int draws = shots + queries;
    int32_t stack[STACK_INTS], *cls = stack;
    size_t need = 2 * (size_t)ways + (size_t)draws;
    if (need > STACK_INTS && !(cls = malloc(need * sizeof *cls)))
        return false;
    int32_t *perm = cls + ways, *pick = perm + ways;
    RtRng r;
    rt_rng_stream(&r, seed, task);
    rt_draw_distinct(&r, d->classes, ways, cls);
    for (int i = 0; i < ways; i++)
        perm[i] = i;
    rt_shuffle(&r, ways, perm);
    for (int i = 0; i < ways; i++) {
        int c = cls[i];
        rt_draw_distinct(&r, d->count(d->data, c), draws, pick);
        for (int k = 0; k < draws; k++) {
            size_t at = k < shots ? (size_t)i * (size_t)shots + (size_t)k
                                  : (size_t)i * (size_t)queries + (size_t)(k - shots);
            d->put(d->data, c, pick[k], real, k < shots ? sx : qx, at * d->reals);
            (k < shots ? sy : qy)[at] = perm[i];
        }
    }
    if (cls != stack)
        free(cls);
    return true;
}

void rt_zero_task(size_t reals, int ways, int shots, int queries, RtReal real, void *sx,
                  void *sy, void *qx, void *qy)
{
    size_t rb = rt_real_bytes(real);
    size_t ns = (size_t)ways * (size_t)shots, nq = (size_t)ways * (size_t)queries;
    if (ns) {
        memset(sx, 0, ns * reals * rb);
        memset(sy, 0, ns * sizeof(int32_t));
    }
    if (nq) {
        memset(qx, 0, nq * reals * rb);
        memset(qy, 0, nq * sizeof(int32_t));
    }
}
