/* Omniglot: loading (zip or folder, libpng, area-averaging resize), task
 * sampling, and the 20-way one-shot runs.
 *
 * Loading lists the files of the source, sorts them, and decodes each PNG
 * straight into one float array.  Only unrotated images are stored; a
 * rotated class maps indices when its pixels are copied out, which is exact
 * and costs nothing beyond the copy every task makes anyway. */
#include <limits.h>
#include <png.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "dataset.h"
#include "omniglot.h"

enum { MAX_SIZE = 4096 };                     /* largest output side */
#define MAX_PNG_PIXELS ((size_t)1 << 26)      /* width * height of one PNG */

/* ------------------------------------------------------------------------
 * Decoding and resizing: exact area averaging (runtime/dataset.h) */

static bool blank(const unsigned char *g, int w)
{
    for (int x = 0; x < w; x++)
        if (g[x] != 255)
            return false;
    return true;
}

/* Resize a w x h 8-bit gray image to n x n, inverted: out = 1 - mean(gray) /
 * 255 over each output pixel's footprint.  Each input row is resized
 * horizontally once, when the walk reaches it, and added with its weight to
 * the output rows it overlaps.  Blank (all white) rows, common in line
 * drawings, are skipped.  False when memory cannot be had. */
static bool resize(const unsigned char *g, int w, int h, int n, float *out)
{
    int span = rt_area_span(w, n);
    size_t taps = (size_t)h + (size_t)n, win = (size_t)n * (size_t)span;
    RtAreaTap *vtap = malloc(taps * sizeof *vtap + (win + 2 * (size_t)n) * sizeof(int64_t) +
                       (size_t)n * sizeof(int));
    if (!vtap)
        return false;
    int64_t *weight = (int64_t *)(vtap + taps), *row = weight + win, *acc = row + n;
    int *first = (int *)(acc + n);
    int nv = rt_area_taps(h, n, vtap);
    rt_area_window(w, n, span, first, weight);
    double area = 255.0 * (double)w * (double)h;
    memset(acc, 0, (size_t)n * sizeof *acc);
    for (int k = 0; k < nv; k++) {
        const unsigned char *gy = g + (size_t)vtap[k].in * (size_t)w;
        if (k == 0 || vtap[k].in != vtap[k - 1].in) {
            if (blank(gy, w))
                memset(row, 0, (size_t)n * sizeof *row);
            else
                for (int j = 0; j < n; j++) {
                    const int64_t *wj = weight + (size_t)j * (size_t)span;
                    const unsigned char *gj = gy + first[j];
                    int64_t sum = 0;
                    for (int t = 0; t < span; t++)
                        sum += wj[t] * (255 - gj[t]);
                    row[j] = sum;
                }
        }
        for (int j = 0; j < n; j++)
            acc[j] += vtap[k].weight * row[j];
        int i = vtap[k].out;
        if (k + 1 == nv || vtap[k + 1].out != i)
            for (int j = 0; j < n; j++) {
                out[(size_t)i * (size_t)n + (size_t)j] = (float)((double)acc[j] / area);
                acc[j] = 0;
            }
    }
    free(vtap);
    return true;
}

/* Decode PNG data (named `where` in messages) and resize it into out. */
static bool decode_png(const unsigned char *data, size_t len, int n, float *out,
                       const char *where, char *err, size_t errsize)
{
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_memory(&img, data, len)) {
        rt_errorf(err, errsize, "%s: cannot decode PNG: %s", where, img.message);
        png_image_free(&img);
        return false;
    }
    if (img.width == 0 || img.height == 0 || (size_t)img.width * img.height > MAX_PNG_PIXELS) {
        rt_errorf(err, errsize, "%s: PNG of %ux%u pixels is too large", where, img.width,
             img.height);
        png_image_free(&img);
        return false;
    }
    img.format = PNG_FORMAT_GRAY;
    unsigned char *gray = malloc(PNG_IMAGE_SIZE(img));
    if (!gray) {
        png_image_free(&img);
        return rt_errorf(err, errsize, "%s: out of memory", where);
    }
    png_color white = {255, 255, 255};
    bool ok = png_image_finish_read(&img, &white, gray, 0, NULL) != 0;
    if (!ok)
        rt_errorf(err, errsize, "%s: cannot decode PNG: %s", where, img.message);
    else if (!(ok = resize(gray, (int)img.width, (int)img.height, n, out)))
        rt_errorf(err, errsize, "%s: out of memory", where);
    png_image_free(&img);
    free(gray);
    return ok;
}

/* Read and decode entry e of s into out. */
static bool load_image(const RtFiles *s, const RtFile *e, int n, float *out, char *err,
                       size_t errsize)
{
    unsigned char *data;
    size_t len;
    if (!rt_files_read(s, e, &data, &len, err, errsize))
        return false;
    size_t wn = strlen(s->path) + strlen(e->name) + 3;
    char *where = malloc(wn);
    bool ok = where != NULL;
    if (ok) {
        snprintf(where, wn, "%s%s%s", s->path, s->zip ? ": " : "/", e->name);
        ok = decode_png(data, len, n, out, where, err, errsize);
    } else {
        rt_errorf(err, errsize, "%s: out of memory", s->path);
    }
    free(where);
    free(data);
    return ok;
}

static bool has_png_suffix(const char *name)
{
    size_t n = strlen(name);
    if (n < 4)
        return false;
    const char *s = name + n - 4;
    return s[0] == '.' && (s[1] | 32) == 'p' && (s[2] | 32) == 'n' && (s[3] | 32) == 'g';
}

/* ------------------------------------------------------------------------
 * Background sets */

struct RtOmniglot {
    char *path;                 /* as opened, for messages */
    int size;                   /* images are size x size */
    int rot;                    /* classes per character: 4 with rotations, else 1 */
    int nchar;                  /* characters */
    int min_drawings;
    int *first;                 /* [nchar + 1]: character c owns images first[c]..first[c+1]-1 */
    float *pix;                 /* first[nchar] unrotated images of size * size floats */
    char **name;                /* [nchar * rot] class names */
};

void rt_omniglot_close(RtOmniglot *o)
{
    if (!o)
        return;
    if (o->name)
        for (int c = 0; c < o->nchar * o->rot; c++)
            free(o->name[c]);
    free(o->name);
    free(o->first);
    free(o->pix);
    free(o->path);
    free(o);
}

/* The class name of a character folder: its last two components. */
static char *class_name(const char *dir, size_t n, int rot)
{
    static const char *const suffix[4] = {"", "@90", "@180", "@270"};
    size_t start = 0;
    for (size_t i = n, slashes = 0; i > 0; i--)
        if (dir[i - 1] == '/' && ++slashes == 2) {
            start = i;
            break;
        }
    if (n == 0) {
        dir = ".";
        n = 1;
    }
    size_t len = n - start, sl = strlen(suffix[rot]);
    char *s = malloc(len + sl + 1);
    if (s) {
        memcpy(s, dir + start, len);
        memcpy(s + len, suffix[rot], sl + 1);
    }
    return s;
}

static bool same_dir(const RtFile *a, const RtFile *b)
{
    size_t n = rt_dir_len(a->name);
    return n == rt_dir_len(b->name) && memcmp(a->name, b->name, n) == 0;
}

/* Group the sorted PNG entries png[0..n) by folder into o's characters. */
static bool group_characters(RtOmniglot *o, const RtFile *const *png, size_t n, char *err,
                             size_t errsize)
{
    int nchar = 0;
    for (size_t i = 0; i < n; i++)
        nchar += i == 0 || !same_dir(png[i - 1], png[i]);
    o->first = malloc(((size_t)nchar + 1) * sizeof *o->first);
    o->name = calloc((size_t)nchar * (size_t)o->rot, sizeof *o->name);
    if (!o->first || !o->name)
        return rt_errorf(err, errsize, "%s: out of memory", o->path);
    o->nchar = nchar;
    int c = 0;
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && same_dir(png[i - 1], png[i]))
            continue;
        o->first[c] = (int)i;
        for (int r = 0; r < o->rot; r++) {
            char *name = class_name(png[i]->name, rt_dir_len(png[i]->name), r);
            if (!name)
                return rt_errorf(err, errsize, "%s: out of memory", o->path);
            o->name[c * o->rot + r] = name;
        }
        c++;
    }
    o->first[nchar] = (int)n;
    o->min_drawings = INT_MAX;
    for (c = 0; c < nchar; c++)
        if (o->first[c + 1] - o->first[c] < o->min_drawings)
            o->min_drawings = o->first[c + 1] - o->first[c];
    return true;
}

static bool check_size(const char *path, int size, char *err, size_t errsize)
{
    if (size < 1 || size > MAX_SIZE)
        return rt_errorf(err, errsize, "%s: image size %d is outside 1..%d", path, size, MAX_SIZE);
    return true;
}

RtOmniglot *rt_omniglot_open(const char *path, int size, bool rotations, char *err,
                             size_t errsize)
{
    if (!check_size(path, size, err, errsize))
        return NULL;
    RtFiles s;
    if (!rt_files_open(&s, path, err, errsize))
        return NULL;
    RtOmniglot *o = calloc(1, sizeof *o);
    const RtFile **png = malloc((s.n ? s.n : 1) * sizeof *png);
    bool ok = o && png && (o->path = rt_dup_string(path)) != NULL;
    if (!ok)
        rt_errorf(err, errsize, "%s: out of memory", path);
    size_t n = 0;
    if (ok) {
        o->size = size;
        o->rot = rotations ? 4 : 1;
        if (s.n > 1)
            qsort(s.file, s.n, sizeof *s.file, rt_file_compare);
        for (size_t i = 0; i < s.n; i++)
            if (has_png_suffix(s.file[i].name))
                png[n++] = &s.file[i];
        if (n == 0)
            ok = rt_errorf(err, errsize, "%s: no PNG images found", path);
        else if (n > INT_MAX / 4)
            ok = rt_errorf(err, errsize, "%s: %zu images are too many", path, n);
    }
    if (ok)
        ok = group_characters(o, png, n, err, errsize);
    size_t px = (size_t)size * (size_t)size;
    if (ok && !(o->pix = malloc(n * px * sizeof *o->pix)))
        ok = rt_errorf(err, errsize, "%s: out of memory for %zu images of %dx%d", path, n, size,
                  size);
    for (size_t i = 0; ok && i < n; i++)
        ok = load_image(&s, png[i], size, o->pix + i * px, err, errsize);
    free(png);
    rt_files_close(&s);
    if (!ok) {
        rt_omniglot_close(o);
        return NULL;
    }
    return o;
}

/* The alphabet of character c: its class name up to the first '/'. */
static size_t alphabet_len(const char *name)
{
    const char *slash = strchr(name, '/');
    return slash ? (size_t)(slash - name) : strlen(name);
}

static bool has_alphabet(const RtOmniglot *o, const char *name, size_t n)
{
    for (int c = 0; c < o->nchar; c++) {
        const char *other = o->name[c * o->rot];
        if (alphabet_len(other) == n && strncmp(other, name, n) == 0)
            return true;
    }
    return false;
}

int rt_omniglot_drop_alphabets(RtOmniglot *o, const RtOmniglot *other)
{
    size_t image = (size_t)o->size * (size_t)o->size;
    int kept = 0, at = 0, dropped = 0;
    o->min_drawings = INT_MAX;
    for (int c = 0; c < o->nchar; c++) {
        const char *name = o->name[c * o->rot];
        int begin = o->first[c], count = o->first[c + 1] - begin;
        if (has_alphabet(other, name, alphabet_len(name))) {
            for (int r = 0; r < o->rot; r++)
                free(o->name[c * o->rot + r]);
            dropped++;
            continue;
        }
        memmove(o->pix + (size_t)at * image, o->pix + (size_t)begin * image, (size_t)count * image * sizeof *o->pix);
        for (int r = 0; r < o->rot; r++)
            o->name[kept * o->rot + r] = o->name[c * o->rot + r];
        o->first[kept] = at;
        at += count;
        if (count < o->min_drawings)
            o->min_drawings = count;
        kept++;
    }
    o->first[kept] = at;
    o->nchar = kept;
    if (kept == 0)
        o->min_drawings = 0;
    return dropped;
}

int rt_omniglot_classes(const RtOmniglot *o)
{
    return o->nchar * o->rot;
}

int rt_omniglot_size(const RtOmniglot *o)
{
    return o->size;
}

int rt_omniglot_drawings(const RtOmniglot *o, int cls)
{
    int c = cls / o->rot;
    return o->first[c + 1] - o->first[c];
}

int rt_omniglot_min_drawings(const RtOmniglot *o)
{
    return o->min_drawings;
}

const char *rt_omniglot_class_name(const RtOmniglot *o, int cls)
{
    return o->name[cls];
}

/* Copy an n x n image rotated counter-clockwise by 90 * rot degrees (as
 * numpy.rot90(src, rot), rt_rot90) to element `at` onwards of out.  The
 * source is read in order (the data set is large and cold; the task is
 * small). */
static void put_image(const float *src, int n, int rot, RtReal real, void *out, size_t at)
{
    ptrdiff_t m = n;
    RtRot90 q = rt_rot90(m, rot);
    if (rot == 0 && real == RT_F32) {
        memcpy((float *)out + at, src, (size_t)(m * m) * sizeof *src);
        return;
    }
    for (ptrdiff_t a = 0; a < m; a++) {
        const float *s = src + a * m;
        ptrdiff_t o = (ptrdiff_t)at + q.start + a * q.da;
        if (real == RT_F32)
            for (ptrdiff_t b = 0; b < m; b++)
                ((float *)out)[o + b * q.db] = s[b];
        else
            for (ptrdiff_t b = 0; b < m; b++)
                ((double *)out)[o + b * q.db] = s[b];
    }
}

static const float *base_image(const RtOmniglot *o, int cls, int drawing)
{
    size_t img = (size_t)o->first[cls / o->rot] + (size_t)drawing;
    return o->pix + img * (size_t)o->size * (size_t)o->size;
}

void rt_omniglot_image(const RtOmniglot *o, int cls, int drawing, RtReal real, void *out)
{
    put_image(base_image(o, cls, drawing), o->size, cls % o->rot, real, out, 0);
}

bool rt_omniglot_check(const RtOmniglot *o, int ways, int shots, int queries, char *err,
                       size_t errsize)
{
    if (ways < 1)
        return rt_errorf(err, errsize, "%s: ways must be at least 1, not %d", o->path, ways);
    if (shots < 0 || queries < 0)
        return rt_errorf(err, errsize, "%s: shots and queries must not be negative (%d, %d)",
                    o->path, shots, queries);
    if (ways > rt_omniglot_classes(o))
        return rt_errorf(err, errsize, "%s has only %d classes, fewer than the %d ways asked for",
                    o->path, rt_omniglot_classes(o), ways);
    if (shots > INT_MAX - queries || shots + queries > o->min_drawings) {
        int c = 0;
        while (rt_omniglot_drawings(o, c) > o->min_drawings)
            c++;
        return rt_errorf(err, errsize,
                    "%s: class %s has %d drawings, fewer than shots + queries = %lld", o->path,
                    o->name[c], o->min_drawings, (long long)shots + queries);
    }
    return true;
}

static int drawings_of(const void *o, int cls)
{
    return rt_omniglot_drawings(o, cls);
}

static void put_drawing(const void *data, int cls, int drawing, RtReal real, void *out, size_t at)
{
    const RtOmniglot *o = data;
    put_image(base_image(o, cls, drawing), o->size, cls % o->rot, real, out, at);
}

bool rt_omniglot_task(const RtOmniglot *o, uint64_t seed, uint64_t task, int ways, int shots,
                      int queries, RtReal real, void *sx, int32_t *sy, void *qx, int32_t *qy)
{
    if (!o || !rt_omniglot_check(o, ways, shots, queries, NULL, 0))
        return false;
    RtTaskData d = {o, rt_omniglot_classes(o), (size_t)o->size * (size_t)o->size, drawings_of,
                    put_drawing};
    return rt_draw_task(&d, seed, task, ways, shots, queries, real, sx, sy, qx, qy);
}

void rt_omniglot_sample(const void *ctx, uint64_t seed, uint64_t task,
                        void *sx, void *sy, void *qx, void *qy)
{
    const RtOmniglotSource *s = ctx;
    const RtOmniglot *o = (task & RT_EVAL_TASK) && s->eval ? s->eval : s->data;
    if (rt_omniglot_task(o, seed, task, s->ways, s->shots, s->queries, s->real, sx, sy, qx, qy))
        return;
    if (o && s->ways >= 1 && s->shots >= 0 && s->queries >= 0)
        rt_zero_task((size_t)o->size * (size_t)o->size, s->ways, s->shots, s->queries, s->real,
                     sx, sy, qx, qy);
}

/* ------------------------------------------------------------------------
 * The one-shot runs */

struct RtOmniglotRuns {
    int size;                   /* images are size x size */
    int nrun, nway, ntest;      /* runs; training and test images per run */
    float *train;               /* [nrun][nway] images */
    float *test;                /* [nrun][ntest] images */
    int32_t *label;             /* [nrun][ntest] true labels of the test images */
};

typedef enum { RUN_OTHER, RUN_TRAIN, RUN_TEST, RUN_LABELS } RunFile;

enum { MAX_RUN_NUMBER = 9999 };

/* Component k from the end of path (0: the file name) in *len; NULL when
 * the path has fewer components. */
static const char *component(const char *path, int k, size_t *len)
{
    const char *end = path + strlen(path);
    for (;;) {
        const char *start = end;
        while (start > path && start[-1] != '/')
            start--;
        if (k-- == 0) {
            *len = (size_t)(end - start);
            return start;
        }
        if (start == path)
            return NULL;
        end = start - 1;
    }
}

/* The number NN when s[0..len) is exactly prefix NN suffix (1 to 4 digits,
 * NN >= 1); else -1. */
static int parse_numbered(const char *s, size_t len, const char *prefix, const char *suffix)
{
    size_t lp = strlen(prefix), ls = strlen(suffix);
    if (len <= lp + ls || len > lp + ls + 4 || memcmp(s, prefix, lp) != 0 ||
        memcmp(s + len - ls, suffix, ls) != 0)
        return -1;
    int v = 0;
    for (size_t i = lp; i < len - ls; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = 10 * v + (s[i] - '0');
    }
    return v >= 1 ? v : -1;
}

static bool is_component(const char *s, size_t len, const char *want)
{
    return s && len == strlen(want) && memcmp(s, want, len) == 0;
}

/* What a zip entry is: ".../runNN/training/classMM.png" (RUN_TRAIN, num =
 * MM), ".../runNN/test/itemMM.png" (RUN_TEST), ".../runNN/class_labels.txt"
 * (RUN_LABELS), or something else.  *run gets NN. */
static RunFile run_file(const char *name, int *run, int *num)
{
    size_t l0 = 0, l1 = 0, l2 = 0;
    const char *file = component(name, 0, &l0);
    const char *mid = component(name, 1, &l1);
    const char *top = component(name, 2, &l2);
    if (mid && is_component(file, l0, "class_labels.txt")) {
        *run = parse_numbered(mid, l1, "run", "");
        *num = 0;
        return *run > 0 ? RUN_LABELS : RUN_OTHER;
    }
    if (!top)
        return RUN_OTHER;
    *run = parse_numbered(top, l2, "run", "");
    if (*run < 0)
        return RUN_OTHER;
    if (is_component(mid, l1, "training") && (*num = parse_numbered(file, l0, "class", ".png")) > 0)
        return RUN_TRAIN;
    if (is_component(mid, l1, "test") && (*num = parse_numbered(file, l0, "item", ".png")) > 0)
        return RUN_TEST;
    return RUN_OTHER;
}

/* The number in the file name of a labels-file token ("run01/test/item07.png"
 * with prefix "item" gives 7); -1 when it does not match. */
static int token_number(const char *tok, size_t len, const char *prefix)
{
    size_t start = len;
    while (start > 0 && tok[start - 1] != '/')
        start--;
    return parse_numbered(tok + start, len - start, prefix, ".png");
}

/* Parse class_labels.txt of run `run` (entry e) into label[0..ntest). */
static bool parse_labels(const RtFiles *s, const RtFile *e, const RtOmniglotRuns *r,
                         int32_t *label, char *err, size_t errsize)
{
    unsigned char *data;
    size_t len;
    if (!rt_files_read(s, e, &data, &len, err, errsize))
        return false;
    const char *sep = s->zip ? ": " : "/";
    for (int i = 0; i < r->ntest; i++)
        label[i] = -1;
    bool ok = true;
    size_t p = 0;
    for (int line = 1; ok && p < len; line++) {
        const char *tok[3];
        size_t tl[3];
        int nt = 0;
        while (p < len && data[p] != '\n') {
            while (p < len && (data[p] == ' ' || data[p] == '\t' || data[p] == '\r'))
                p++;
            if (p == len || data[p] == '\n')
                break;
            size_t start = p;
            while (p < len && data[p] != ' ' && data[p] != '\t' && data[p] != '\r' &&
                   data[p] != '\n')
                p++;
            if (nt < 3) {
                tok[nt] = (const char *)data + start;
                tl[nt] = p - start;
            }
            nt++;
        }
        p++;
        if (nt == 0)
            continue;
        int item = nt == 2 ? token_number(tok[0], tl[0], "item") : -1;
        int cls = nt == 2 ? token_number(tok[1], tl[1], "class") : -1;
        if (item < 0 || cls < 0)
            ok = rt_errorf(err, errsize,
                      "%s%s%s:%d: expected \"test/itemNN.png training/classMM.png\"", s->path,
                      sep, e->name, line);
        else if (item > r->ntest || cls > r->nway)
            ok = rt_errorf(err, errsize, "%s%s%s:%d: item%02d or class%02d is not in the run",
                      s->path, sep, e->name, line, item, cls);
        else if (label[item - 1] >= 0)
            ok = rt_errorf(err, errsize, "%s%s%s:%d: item%02d is labelled twice", s->path, sep,
                      e->name, line, item);
        else
            label[item - 1] = cls - 1;
    }
    for (int i = 0; ok && i < r->ntest; i++)
        if (label[i] < 0)
            ok = rt_errorf(err, errsize, "%s%s%s: item%02d has no label", s->path, sep, e->name,
                      i + 1);
    free(data);
    return ok;
}

void rt_omniglot_runs_close(RtOmniglotRuns *r)
{
    if (!r)
        return;
    free(r->train);
    free(r->test);
    free(r->label);
    free(r);
}

/* Find the files of every run in s: train[run * nway + c], test[...] and
 * labels[run].  Counts come from the highest numbers seen; every slot must
 * be filled exactly once. */
static bool find_run_files(const RtFiles *s, RtOmniglotRuns *r, const RtFile ***train,
                           const RtFile ***test, const RtFile ***labels, char *err,
                           size_t errsize)
{
    for (size_t i = 0; i < s->n; i++) {
        int run, num;
        RunFile k = run_file(s->file[i].name, &run, &num);
        if (k == RUN_OTHER)
            continue;
        if (run > MAX_RUN_NUMBER || num > MAX_RUN_NUMBER)
            return rt_errorf(err, errsize, "%s: %s: number out of range", s->path,
                        s->file[i].name);
        if (run > r->nrun)
            r->nrun = run;
        if (k == RUN_TRAIN && num > r->nway)
            r->nway = num;
        if (k == RUN_TEST && num > r->ntest)
            r->ntest = num;
    }
    if (r->nrun == 0 || r->nway == 0 || r->ntest == 0)
        return rt_errorf(err, errsize,
                    "%s: no one-shot runs found (runNN/training/classNN.png, "
                    "runNN/test/itemNN.png, runNN/class_labels.txt)", s->path);
    size_t ntrain = (size_t)r->nrun * (size_t)r->nway, ntest = (size_t)r->nrun * (size_t)r->ntest;
    *train = calloc(ntrain, sizeof **train);
    *test = calloc(ntest, sizeof **test);
    *labels = calloc((size_t)r->nrun, sizeof **labels);
    if (!*train || !*test || !*labels)
        return rt_errorf(err, errsize, "%s: out of memory", s->path);
    for (size_t i = 0; i < s->n; i++) {
        int run, num;
        RunFile k = run_file(s->file[i].name, &run, &num);
        const RtFile **slot = k == RUN_TRAIN  ? &(*train)[(size_t)(run - 1) * r->nway + (num - 1)]
                             : k == RUN_TEST ? &(*test)[(size_t)(run - 1) * r->ntest + (num - 1)]
                             : k == RUN_LABELS ? &(*labels)[run - 1]
                                               : NULL;
        if (!slot)
            continue;
        if (*slot)
            return rt_errorf(err, errsize, "%s: %s and %s are the same file of run%02d", s->path,
                        (*slot)->name, s->file[i].name, run);
        *slot = &s->file[i];
    }
    for (int run = 0; run < r->nrun; run++) {
        if (!(*labels)[run])
            return rt_errorf(err, errsize, "%s: run%02d has no class_labels.txt", s->path, run + 1);
        for (int c = 0; c < r->nway; c++)
            if (!(*train)[(size_t)run * r->nway + c])
                return rt_errorf(err, errsize, "%s: run%02d has no training/class%02d.png", s->path,
                            run + 1, c + 1);
        for (int t = 0; t < r->ntest; t++)
            if (!(*test)[(size_t)run * r->ntest + t])
                return rt_errorf(err, errsize, "%s: run%02d has no test/item%02d.png", s->path,
                            run + 1, t + 1);
    }
    return true;
}

RtOmniglotRuns *rt_omniglot_runs_open(const char *path, int size, char *err, size_t errsize)
{
    if (!check_size(path, size, err, errsize))
        return NULL;
    RtFiles s;
    if (!rt_files_open(&s, path, err, errsize))
        return NULL;
    RtOmniglotRuns *r = calloc(1, sizeof *r);
    const RtFile **train = NULL, **test = NULL, **labels = NULL;
    bool ok = r != NULL;
    if (!ok)
        rt_errorf(err, errsize, "%s: out of memory", path);
    if (ok) {
        r->size = size;
        ok = find_run_files(&s, r, &train, &test, &labels, err, errsize);
    }
    size_t px = (size_t)size * (size_t)size;
    size_t ntrain = ok ? (size_t)r->nrun * (size_t)r->nway : 0;
    size_t ntest = ok ? (size_t)r->nrun * (size_t)r->ntest : 0;
    if (ok) {
        r->train = malloc(ntrain * px * sizeof *r->train);
        r->test = malloc(ntest * px * sizeof *r->test);
        r->label = malloc(ntest * sizeof *r->label);
        if (!r->train || !r->test || !r->label)
            ok = rt_errorf(err, errsize, "%s: out of memory", path);
    }
    for (size_t i = 0; ok && i < ntrain; i++)
        ok = load_image(&s, train[i], size, r->train + i * px, err, errsize);
    for (size_t i = 0; ok && i < ntest; i++)
        ok = load_image(&s, test[i], size, r->test + i * px, err, errsize);
    for (int run = 0; ok && run < r->nrun; run++)
        ok = parse_labels(&s, labels[run], r, r->label + (size_t)run * r->ntest, err, errsize);
    free(train);
    free(test);
    free(labels);
    rt_files_close(&s);
    if (!ok) {
        rt_omniglot_runs_close(r);
        return NULL;
    }
    return r;
}

int rt_omniglot_runs_count(const RtOmniglotRuns *r)
{
    return r->nrun;
}

int rt_omniglot_runs_ways(const RtOmniglotRuns *r)
{
    return r->nway;
}

int rt_omniglot_runs_tests(const RtOmniglotRuns *r)
{
    return r->ntest;
}

int rt_omniglot_runs_size(const RtOmniglotRuns *r)
{
    return r->size;
}

const float *rt_omniglot_runs_train(const RtOmniglotRuns *r, int run, int i)
{
    return r->train + ((size_t)run * r->nway + (size_t)i) * r->size * r->size;
}

const float *rt_omniglot_runs_test(const RtOmniglotRuns *r, int run, int i)
{
    return r->test + ((size_t)run * r->ntest + (size_t)i) * r->size * r->size;
}

int rt_omniglot_runs_label(const RtOmniglotRuns *r, int run, int i)
{
    return r->label[(size_t)run * r->ntest + (size_t)i];
}

void rt_omniglot_runs_task(const RtOmniglotRuns *r, int run, RtReal real, void *sx,
                           int32_t *sy, void *qx, int32_t *qy)
{
    size_t px = (size_t)r->size * (size_t)r->size;
    for (int i = 0; i < r->nway; i++) {
        put_image(rt_omniglot_runs_train(r, run, i), r->size, 0, real, sx, (size_t)i * px);
        sy[i] = i;
    }
    for (int i = 0; i < r->ntest; i++) {
        put_image(rt_omniglot_runs_test(r, run, i), r->size, 0, real, qx, (size_t)i * px);
        qy[i] = rt_omniglot_runs_label(r, run, i);
    }
}
