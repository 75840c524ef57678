/* Omniglot task source: loading from zips and folders, preprocessing against
 * independently computed values, rotations, task sampling, errors, and the
 * 20-way one-shot runs.  The data lives outside the repository
 * (shared/data/omniglot); without it the tests are skipped, unless
 * MAMLC_REQUIRE_DATA is set, when its absence is a failure. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <png.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zip.h>

#include "check.h"
#include "omniglot.h"

#define DATA MAMLC_SOURCE_DIR "/../shared/data/omniglot"
#define SMALL1 DATA "/images_background_small1.zip"
#define SMALL2 DATA "/images_background_small2.zip"
#define RUNS DATA "/all_runs.zip"

enum { N = 28, PX = N * N };

static char tmp[256];           /* this run's scratch folder */

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static void remove_tree(const char *path)
{
    DIR *d = opendir(path);
    if (d) {
        for (struct dirent *de; (de = readdir(d)) != NULL;) {
            if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                continue;
            char sub[1024];
            snprintf(sub, sizeof sub, "%s/%s", path, de->d_name);
            remove_tree(sub);
        }
        closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

static void mkdirs(char *path)
{
    for (char *p = path + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            mkdir(path, 0777);
            *p = '/';
        }
    mkdir(path, 0777);
}

/* The bytes of entry `index` of an open zip, malloc'd; NULL on error. */
static unsigned char *read_index(zip_t *z, zip_uint64_t index, size_t *len)
{
    zip_stat_t st;
    unsigned char *buf = NULL;
    zip_file_t *f;
    if (zip_stat_index(z, index, 0, &st) == 0 && (f = zip_fopen_index(z, index, 0)) != NULL) {
        buf = malloc(st.size + 1);
        if (zip_fread(f, buf, st.size) != (zip_int64_t)st.size) {
            free(buf);
            buf = NULL;
        }
        *len = (size_t)st.size;
        zip_fclose(f);
    }
    return buf;
}

/* The bytes of the entry `name` of zip, malloc'd; NULL if missing. */
static unsigned char *zip_entry(const char *zip, const char *name, size_t *len)
{
    zip_t *z = zip_open(zip, ZIP_RDONLY, NULL);
    if (!z)
        return NULL;
    zip_int64_t i = zip_name_locate(z, name, 0);
    unsigned char *buf = i >= 0 ? read_index(z, (zip_uint64_t)i, len) : NULL;
    zip_discard(z);
    return buf;
}

static bool has_prefix(const char *s, const char *const *prefix)
{
    for (; *prefix; prefix++)
        if (strncmp(s, *prefix, strlen(*prefix)) == 0)
            return true;
    return false;
}

/* Extract the entries of zip whose names start with one of prefix[] (a
 * NULL-terminated list) into folder dir, with libzip.  Only a part: making
 * files is the slow step of these tests. */
static bool extract(const char *zip, const char *dir, const char *const *prefix)
{
    zip_t *z = zip_open(zip, ZIP_RDONLY, NULL);
    if (!z)
        return false;
    bool ok = true;
    zip_int64_t n = zip_get_num_entries(z, 0);
    for (zip_int64_t i = 0; ok && i < n; i++) {
        const char *name = zip_get_name(z, (zip_uint64_t)i, 0);
        if (!has_prefix(name, prefix))
            continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, name);
        size_t len = strlen(path);
        if (path[len - 1] == '/') {
            path[len - 1] = '\0';
            mkdirs(path);
            continue;
        }
        *strrchr(path, '/') = '\0';
        mkdirs(path);
        path[strlen(path)] = '/';
        size_t size;
        unsigned char *data = read_index(z, (zip_uint64_t)i, &size);
        FILE *f = data ? fopen(path, "wb") : NULL;
        ok = f && fwrite(data, 1, size, f) == size;
        if (f)
            fclose(f);
        free(data);
    }
    zip_discard(z);
    return ok;
}

/* A zip at path holding entries name[i] with data[i] (len[i] bytes). */
static bool write_zip(const char *path, int n, const char *const *name,
                      const unsigned char *const *data, const size_t *len)
{
    zip_t *z = zip_open(path, ZIP_CREATE | ZIP_TRUNCATE, NULL);
    if (!z)
        return false;
    for (int i = 0; i < n; i++) {
        void *copy = malloc(len[i] ? len[i] : 1);
        memcpy(copy, data[i], len[i]);
        zip_source_t *src = zip_source_buffer(z, copy, len[i], 1);
        if (!src || zip_file_add(z, name[i], src, ZIP_FL_OVERWRITE) < 0) {
            zip_discard(z);
            return false;
        }
    }
    return zip_close(z) == 0;
}

static int find_class(const RtOmniglot *o, const char *name)
{
    for (int c = 0; c < rt_omniglot_classes(o); c++)
        if (strcmp(rt_omniglot_class_name(o, c), name) == 0)
            return c;
    return -1;
}

static void image(const RtOmniglot *o, int cls, int drawing, float *out)
{
    rt_omniglot_image(o, cls, drawing, RT_F32, out);
}

static double sum(const float *x, int n)
{
    double s = 0;
    for (int i = 0; i < n; i++)
        s += x[i];
    return s;
}

static double weighted(const float *x, int n)
{
    double s = 0;
    for (int i = 0; i < n; i++)
        s += (double)i * x[i];
    return s;
}

/* ------------------------------------------------------------------------
 * Loading */

static void test_counts(const RtOmniglot *o1, const RtOmniglot *o2, const RtOmniglot *r1)
{
    CHECK(rt_omniglot_classes(o1) == 136, "small1 has %d classes", rt_omniglot_classes(o1));
    CHECK(rt_omniglot_classes(o2) == 156, "small2 has %d classes", rt_omniglot_classes(o2));
    CHECK(rt_omniglot_classes(r1) == 4 * 136, "rotated small1 has %d classes",
          rt_omniglot_classes(r1));
    CHECK(rt_omniglot_size(o1) == N, "size %d", rt_omniglot_size(o1));
    const RtOmniglot *all[3] = {o1, o2, r1};
    for (int k = 0; k < 3; k++) {
        const RtOmniglot *o = all[k];
        CHECK(rt_omniglot_min_drawings(o) == 20, "min drawings %d", rt_omniglot_min_drawings(o));
        int bad = 0;
        for (int c = 0; c < rt_omniglot_classes(o); c++)
            bad += rt_omniglot_drawings(o, c) != 20;
        CHECK(bad == 0, "%d classes without 20 drawings", bad);
    }
    CHECK(strcmp(rt_omniglot_class_name(o1, 0), "Balinese/character01") == 0, "first class %s",
          rt_omniglot_class_name(o1, 0));
    CHECK(strcmp(rt_omniglot_class_name(o1, 135), "Latin/character26") == 0, "last class %s",
          rt_omniglot_class_name(o1, 135));
    CHECK(strcmp(rt_omniglot_class_name(o2, 0), "Greek/character01") == 0, "small2 first %s",
          rt_omniglot_class_name(o2, 0));
    CHECK(strcmp(rt_omniglot_class_name(r1, 4 * 7 + 1), "Balinese/character08@90") == 0 &&
              strcmp(rt_omniglot_class_name(r1, 4 * 7), "Balinese/character08") == 0 &&
              strcmp(rt_omniglot_class_name(r1, 4 * 7 + 3), "Balinese/character08@270") == 0,
          "rotated names %s, %s", rt_omniglot_class_name(r1, 4 * 7),
          rt_omniglot_class_name(r1, 4 * 7 + 1));
    /* Sorted by alphabet, then character, with no repeats. */
    int unsorted = 0;
    for (int c = 1; c < rt_omniglot_classes(o1); c++)
        unsorted += strcmp(rt_omniglot_class_name(o1, c - 1), rt_omniglot_class_name(o1, c)) >= 0;
    CHECK(unsorted == 0, "%d class names out of order", unsorted);
}

/* Reference values from an independent Python script (zlib plus the PNG row
 * filters written out by hand, no libpng; box filter in exact fractions
 * over the 105 x 105 grid, output pixel j covering [3.75 j, 3.75 (j+1))):
 * the sum of the 28 x 28 pixels, the sum of index * value, and four
 * fractional pixels (row, column).  The first image has 881 stroke pixels. */
typedef struct {
    const char *zip, *cls;
    int drawing;                /* 0-based, in file-name order */
    double sum, weighted;
    int pixel[4][2];
    double value[4];
} Known;

static void test_known_image(const RtOmniglot *o, const Known *k)
{
    int c = find_class(o, k->cls);
    CHECK(c >= 0, "no class %s in %s", k->cls, k->zip);
    if (c < 0)
        return;
    float x[PX];
    double xd[PX];
    image(o, c, k->drawing, x);
    rt_omniglot_image(o, c, k->drawing, RT_F64, xd);
    CHECK(fabs(sum(x, PX) - k->sum) < 1e-4, "%s/%d: sum %.9g, want %.9g", k->cls, k->drawing,
          sum(x, PX), k->sum);
    CHECK(fabs(weighted(x, PX) - k->weighted) < 1e-2, "%s/%d: weighted sum %.9g, want %.9g",
          k->cls, k->drawing, weighted(x, PX), k->weighted);
    for (int i = 0; i < 4; i++) {
        float v = x[k->pixel[i][0] * N + k->pixel[i][1]];
        CHECK(v == (float)k->value[i], "%s/%d: pixel (%d, %d) = %.9g, want %.9g", k->cls,
              k->drawing, k->pixel[i][0], k->pixel[i][1], v, k->value[i]);
    }
    int same = 0, range = 0;
    for (int i = 0; i < PX; i++) {
        same += xd[i] == (double)x[i];
        range += x[i] >= 0 && x[i] <= 1;
    }
    CHECK(same == PX && range == PX, "f64 copy differs (%d of %d) or out of [0, 1] (%d)", same,
          PX, range);
}

static void test_known_images(const RtOmniglot *o1, const RtOmniglot *o2)
{
    static const Known balinese = {
        "small1", "Balinese/character01", 0, 14096.0 / 225, 582512.0 / 25,
        {{7, 17}, {8, 16}, {8, 19}, {14, 14}}, {56.0 / 225, 7.0 / 15, 193.0 / 225, 219.0 / 225}};
    static const Known tagalog = {
        "small2", "Tagalog/character05", 1, 3392.0 / 45, 1849636.0 / 75,
        {{5, 4}, {5, 5}, {5, 17}, {5, 18}}, {14.0 / 75, 26.0 / 75, 4.0 / 75, 82.0 / 225}};
    test_known_image(o1, &balinese);
    test_known_image(o2, &tagalog);
}

/* At full size the resize is the identity: 0/1 pixels, 881 strokes. */
static void test_full_size(void)
{
    char err[512], path[400];
    const char *name = "images_background_small1/Balinese/character01/0108_01.png";
    size_t len = 0;
    unsigned char *png = zip_entry(SMALL1, name, &len);
    snprintf(path, sizeof path, "%s/one.zip", tmp);
    CHECK(png && write_zip(path, 1, &name, (const unsigned char *const *)&png, &len),
          "write %s", path);
    free(png);
    RtOmniglot *o = rt_omniglot_open(path, 105, false, err, sizeof err);
    CHECK(o != NULL, "open at 105: %s", err);
    if (!o)
        return;
    static float x[105 * 105];
    image(o, 0, 0, x);
    int binary = 0;
    for (int i = 0; i < 105 * 105; i++)
        binary += x[i] == 0 || x[i] == 1;
    CHECK(binary == 105 * 105 && sum(x, 105 * 105) == 881, "full size: %d binary, sum %g",
          binary, sum(x, 105 * 105));
    rt_omniglot_close(o);
    /* Enlarging by 2 repeats each pixel in a 2 x 2 block; by 128/105 it
     * keeps the mass: the sum scales by the area. */
    o = rt_omniglot_open(path, 210, false, err, sizeof err);
    CHECK(o != NULL, "open at 210: %s", err);
    if (o) {
        static float y[210 * 210];
        image(o, 0, 0, y);
        int same = 0;
        for (int i = 0; i < 210; i++)
            for (int j = 0; j < 210; j++)
                same += y[i * 210 + j] == x[(i / 2) * 105 + j / 2];
        CHECK(same == 210 * 210, "doubled: %d of %d pixels repeat the original", same,
              210 * 210);
        rt_omniglot_close(o);
    }
    o = rt_omniglot_open(path, 128, false, err, sizeof err);
    CHECK(o != NULL, "open at 128: %s", err);
    if (o) {
        static float z[128 * 128];
        image(o, 0, 0, z);
        double want = 881.0 * 128 * 128 / (105 * 105);
        CHECK(fabs(sum(z, 128 * 128) - want) < 1e-3, "at 128: sum %.9g, want %.9g",
              sum(z, 128 * 128), want);
        rt_omniglot_close(o);
    }
}

/* Class 4c + r is class c rotated counter-clockwise by 90 r degrees. */
static void test_rotations(const RtOmniglot *o, const RtOmniglot *r)
{
    int bad = 0;
    for (int c = 0; c < rt_omniglot_classes(o); c++)
        for (int d = 0; d < rt_omniglot_drawings(o, c); d++) {
            float base[PX], rot[4][PX];
            double rotd[PX];
            image(o, c, d, base);
            for (int k = 0; k < 4; k++) {
                image(r, 4 * c + k, d, rot[k]);
                rt_omniglot_image(r, 4 * c + k, d, RT_F64, rotd);
                for (int i = 0; i < PX; i++)
                    bad += rotd[i] != (double)rot[k][i];
            }
            for (int i = 0; i < N; i++)
                for (int j = 0; j < N; j++) {
                    /* numpy.rot90: out[i][j] = in[j][N-1-i] */
                    bad += rot[0][i * N + j] != base[i * N + j];
                    bad += rot[1][i * N + j] != base[j * N + (N - 1 - i)];
                    bad += rot[2][i * N + j] != base[(N - 1 - i) * N + (N - 1 - j)];
                    bad += rot[3][i * N + j] != base[(N - 1 - j) * N + i];
                }
        }
    CHECK(bad == 0, "%d rotated pixels differ", bad);
}

/* Whether part (loaded from some alphabets of `all`) has exactly all's
 * classes of those alphabets, in the same order, with the same pixels. */
static bool same_classes(const RtOmniglot *all, const RtOmniglot *part,
                         const char *const *alphabet)
{
    int want = 0;
    for (int c = 0; c < rt_omniglot_classes(all); c++)
        want += has_prefix(rt_omniglot_class_name(all, c), alphabet);
    if (rt_omniglot_classes(part) != want)
        return false;
    int prev = -1;
    for (int c = 0; c < rt_omniglot_classes(part); c++) {
        int a = find_class(all, rt_omniglot_class_name(part, c));
        if (a <= prev || rt_omniglot_drawings(all, a) != rt_omniglot_drawings(part, c))
            return false;
        prev = a;
        for (int d = 0; d < rt_omniglot_drawings(part, c); d++) {
            float x[PX], y[PX];
            image(all, a, d, x);
            image(part, c, d, y);
            if (memcmp(x, y, sizeof x) != 0)
                return false;
        }
    }
    return true;
}

/* An extracted folder (listed in readdir order, not zip order) gives the
 * same classes and pixels, from its root or from the split's own folder.
 * Two alphabets, not adjacent in the zip, stand for the whole. */
static void test_folder(const RtOmniglot *o1)
{
    static const char *const entries[] = {"images_background_small1/Balinese/",
                                          "images_background_small1/Korean/", NULL};
    static const char *const alphabets[] = {"Balinese/", "Korean/", NULL};
    char dir[300], inner[400], err[512];
    snprintf(dir, sizeof dir, "%s/small1", tmp);
    snprintf(inner, sizeof inner, "%s/images_background_small1", dir);
    CHECK(extract(SMALL1, dir, entries), "cannot extract %s to %s", SMALL1, dir);
    double t0 = now();
    RtOmniglot *f = rt_omniglot_open(dir, N, false, err, sizeof err);
    double t1 = now();
    CHECK(f != NULL, "open folder: %s", err);
    if (f) {
        printf("load: %s (2 alphabets, %d classes, extracted) in %.3f s\n", dir,
               rt_omniglot_classes(f), t1 - t0);
        CHECK(rt_omniglot_classes(f) > 40 && same_classes(o1, f, alphabets),
              "folder %s differs from the zip", dir);
        rt_omniglot_close(f);
    }
    f = rt_omniglot_open(inner, N, false, err, sizeof err);
    CHECK(f != NULL && same_classes(o1, f, alphabets), "folder %s differs from the zip: %s",
          inner, f ? "" : err);
    rt_omniglot_close(f);
}

/* ------------------------------------------------------------------------
 * Sampling */

/* Which (class, drawing) an image is, by a hash of its pixels. */
typedef struct {
    uint64_t hash;
    int cls, drawing;
} Key;

typedef struct {
    Key *key;
    int n;
} Index;

static uint64_t hash(const float *x, int n)
{
    uint64_t h = UINT64_C(1469598103934665603);
    const unsigned char *b = (const unsigned char *)x;
    for (size_t i = 0; i < (size_t)n * sizeof *x; i++)
        h = (h ^ b[i]) * UINT64_C(1099511628211);
    return h;
}

static int compare_key(const void *a, const void *b)
{
    uint64_t x = ((const Key *)a)->hash, y = ((const Key *)b)->hash;
    return (x > y) - (x < y);
}

static Index build_index(const RtOmniglot *o)
{
    Index ix = {malloc((size_t)rt_omniglot_classes(o) * 20 * sizeof(Key)), 0};
    for (int c = 0; c < rt_omniglot_classes(o); c++)
        for (int d = 0; d < rt_omniglot_drawings(o, c); d++) {
            float x[PX];
            image(o, c, d, x);
            ix.key[ix.n++] = (Key){hash(x, PX), c, d};
        }
    qsort(ix.key, (size_t)ix.n, sizeof *ix.key, compare_key);
    return ix;
}

static const Key *lookup(const Index *ix, const float *x)
{
    Key k = {hash(x, PX), 0, 0};
    return bsearch(&k, ix->key, (size_t)ix->n, sizeof k, compare_key);
}

/* Check one task's structure; `cls` gets the class of each label. */
static int check_task(const Index *ix, int ways, int shots, int queries, const float *sx,
                      const int32_t *sy, const float *qx, const int32_t *qy, int *cls)
{
    int bad = 0;
    bool seen_label[64] = {false};
    for (int i = 0; i < ways; i++) {
        int label = sy[i * shots];
        bad += label < 0 || label >= ways || seen_label[label];
        if (label < 0 || label >= ways)
            continue;
        seen_label[label] = true;
        int drawings[64], nd = 0, c = -1;
        for (int k = 0; k < shots + queries; k++) {
            bool support = k < shots;
            int at = support ? i * shots + k : i * queries + k - shots;
            const Key *key = lookup(ix, (support ? sx : qx) + (size_t)at * PX);
            bad += !key || (support ? sy : qy)[at] != label;
            if (!key)
                continue;
            if (c < 0)
                c = key->cls;
            bad += key->cls != c;
            for (int m = 0; m < nd; m++)
                bad += drawings[m] == key->drawing;
            drawings[nd++] = key->drawing;
        }
        for (int m = 0; m < label; m++)
            bad += seen_label[m] && cls[m] == c;
        for (int m = label + 1; m < ways; m++)
            bad += seen_label[m] && cls[m] == c;
        cls[label] = c;
    }
    return bad;
}

static void test_sampler(const RtOmniglot *o, const RtOmniglot *o2)
{
    enum { WAYS = 5, SHOTS = 1, QUERIES = 19, TASKS = 400 };
    Index ix = build_index(o);
    int dup = 0;
    for (int i = 1; i < ix.n; i++)
        dup += ix.key[i].hash == ix.key[i - 1].hash;
    CHECK(dup == 0, "%d images share a hash: the lookup below is ambiguous", dup);
    static float sx[WAYS * SHOTS * PX], qx[WAYS * QUERIES * PX];
    static float sx2[WAYS * SHOTS * PX], qx2[WAYS * QUERIES * PX];
    static double sxd[WAYS * SHOTS * PX], qxd[WAYS * QUERIES * PX];
    int32_t sy[WAYS * SHOTS], qy[WAYS * QUERIES], sy2[WAYS * SHOTS], qy2[WAYS * QUERIES];
    int bad = 0, failed_draws = 0, repro = 0, f64 = 0, equal_next = 0;
    int class_hits[136] = {0}, support_drawing[20] = {0}, first_label[WAYS] = {0};
    for (int t = 0; t < TASKS; t++) {
        failed_draws += !rt_omniglot_task(o, 42, (uint64_t)t, WAYS, SHOTS, QUERIES, RT_F32, sx,
                                          sy, qx, qy);
        int cls[WAYS] = {0};
        bad += check_task(&ix, WAYS, SHOTS, QUERIES, sx, sy, qx, qy, cls);
        for (int i = 0; i < WAYS; i++)
            class_hits[cls[i] >= 0 && cls[i] < 136 ? cls[i] : 0]++;
        const Key *first = lookup(&ix, sx);
        support_drawing[first ? first->drawing : 0]++;
        first_label[sy[0] >= 0 && sy[0] < WAYS ? sy[0] : 0]++;
        /* Reproducible bit for bit; the f64 task is the same task. */
        rt_omniglot_task(o, 42, (uint64_t)t, WAYS, SHOTS, QUERIES, RT_F32, sx2, sy2, qx2, qy2);
        repro += memcmp(sx, sx2, sizeof sx) == 0 && memcmp(qx, qx2, sizeof qx) == 0 &&
                 memcmp(sy, sy2, sizeof sy) == 0 && memcmp(qy, qy2, sizeof qy) == 0;
        rt_omniglot_task(o, 42, (uint64_t)t, WAYS, SHOTS, QUERIES, RT_F64, sxd, sy2, qxd, qy2);
        int same = memcmp(sy, sy2, sizeof sy) == 0 && memcmp(qy, qy2, sizeof qy) == 0;
        for (int i = 0; i < WAYS * SHOTS * PX; i++)
            same &= sxd[i] == (double)sx[i];
        for (int i = 0; i < WAYS * QUERIES * PX; i++)
            same &= qxd[i] == (double)qx[i];
        f64 += same;
        rt_omniglot_task(o, 42, (uint64_t)t + 1, WAYS, SHOTS, QUERIES, RT_F32, sx2, sy2, qx2, qy2);
        equal_next += memcmp(sx, sx2, sizeof sx) == 0;
    }
    CHECK(failed_draws == 0, "%d tasks refused", failed_draws);
    CHECK(bad == 0, "%d structural errors in %d tasks", bad, TASKS);
    CHECK(repro == TASKS, "%d of %d tasks reproduced", repro, TASKS);
    CHECK(f64 == TASKS, "%d of %d f64 tasks match f32", f64, TASKS);
    CHECK(equal_next == 0, "%d tasks equal the next task", equal_next);
    /* Coverage: 2000 class draws over 136 classes (each ~14.7 expected), 400
     * support drawings over 20 (~20 each), 400 first labels over 5 (~80
     * each).  The seed is fixed, so this is deterministic. */
    int unused = 0;
    for (int c = 0; c < 136; c++)
        unused += class_hits[c] == 0;
    CHECK(unused == 0, "%d classes never drawn", unused);
    int min_support = TASKS, min_first = TASKS;
    for (int d = 0; d < 20; d++)
        min_support = support_drawing[d] < min_support ? support_drawing[d] : min_support;
    for (int l = 0; l < WAYS; l++)
        min_first = first_label[l] < min_first ? first_label[l] : min_first;
    CHECK(min_support >= 5 && min_first >= 40, "support drawings or labels not spread: %d, %d",
          min_support, min_first);
    /* The same task from a second load of the zip, bit for bit. */
    char err[512];
    RtOmniglot *again = rt_omniglot_open(SMALL1, N, false, err, sizeof err);
    CHECK(again != NULL, "reopen: %s", err);
    if (again) {
        rt_omniglot_task(o, 42, 77, WAYS, SHOTS, QUERIES, RT_F32, sx, sy, qx, qy);
        rt_omniglot_task(again, 42, 77, WAYS, SHOTS, QUERIES, RT_F32, sx2, sy2, qx2, qy2);
        CHECK(memcmp(sx, sx2, sizeof sx) == 0 && memcmp(qx, qx2, sizeof qx) == 0 &&
                  memcmp(sy, sy2, sizeof sy) == 0 && memcmp(qy, qy2, sizeof qy) == 0,
              "task 77 differs between two loads");
        rt_omniglot_close(again);
    }
    /* A different seed gives a different task. */
    rt_omniglot_task(o, 43, 0, WAYS, SHOTS, QUERIES, RT_F32, sx2, sy2, qx2, qy2);
    rt_omniglot_task(o, 42, 0, WAYS, SHOTS, QUERIES, RT_F32, sx, sy, qx, qy);
    CHECK(memcmp(sx, sx2, sizeof sx) != 0, "seeds 42 and 43 give the same task 0");

    /* All 136 ways: scratch beyond the stack; every class exactly once. */
    {
        enum { W = 136 };
        float *bx = malloc((size_t)W * 2 * PX * sizeof *bx);
        int32_t by[W * 2];
        bool ok = rt_omniglot_task(o, 7, 3, W, 1, 1, RT_F32, bx, by, bx + (size_t)W * PX,
                                   by + W);
        CHECK(ok, "136-way task refused");
        int hits[W] = {0}, errs = 0;
        bool seen[W] = {false};
        for (int i = 0; ok && i < W; i++) {
            const Key *s = lookup(&ix, bx + (size_t)i * PX);
            const Key *q = lookup(&ix, bx + (size_t)(W + i) * PX);
            errs += !s || !q || s->cls != q->cls || s->drawing == q->drawing ||
                    by[i] != by[W + i] || by[i] < 0 || by[i] >= W || seen[by[i]];
            if (s && by[i] >= 0 && by[i] < W) {
                hits[s->cls]++;
                seen[by[i]] = true;
            }
        }
        for (int c = 0; c < W; c++)
            errs += hits[c] != 1;
        CHECK(errs == 0, "136-way task: %d errors", errs);
        free(bx);
    }

    /* The RtSampleFn adapter: training tasks from data, evaluation tasks
     * from eval; counts that cannot be drawn give zeros. */
    RtOmniglotSource src = {o, o2, WAYS, SHOTS, QUERIES, RT_F32};
    rt_omniglot_sample(&src, 9, 5, sx, sy, qx, qy);
    rt_omniglot_task(o, 9, 5, WAYS, SHOTS, QUERIES, RT_F32, sx2, sy2, qx2, qy2);
    CHECK(memcmp(sx, sx2, sizeof sx) == 0 && memcmp(qy, qy2, sizeof qy) == 0,
          "adapter differs from rt_omniglot_task");
    rt_omniglot_sample(&src, 9, RT_EVAL_TASK | 5, sx, sy, qx, qy);
    rt_omniglot_task(o2, 9, RT_EVAL_TASK | 5, WAYS, SHOTS, QUERIES, RT_F32, sx2, sy2, qx2, qy2);
    CHECK(memcmp(sx, sx2, sizeof sx) == 0 && memcmp(qx, qx2, sizeof qx) == 0,
          "evaluation task not drawn from the eval set");
    src.eval = NULL;
    rt_omniglot_sample(&src, 9, RT_EVAL_TASK | 5, sx, sy, qx, qy);
    rt_omniglot_task(o, 9, RT_EVAL_TASK | 5, WAYS, SHOTS, QUERIES, RT_F32, sx2, sy2, qx2, qy2);
    CHECK(memcmp(sx, sx2, sizeof sx) == 0, "evaluation task without eval set not from data");
    RtOmniglotSource refused = {o, NULL, 1, 1, 21, RT_F32};
    memset(sy, 0xff, sizeof sy);
    memset(qy, 0xff, sizeof qy);
    rt_omniglot_sample(&refused, 9, 5, sx, sy, qx, qy);
    CHECK(sum(sx, PX) == 0 && sum(qx, 21 * PX) == 0 && sy[0] == 0 && qy[20] == 0 && qy[21] == -1,
          "refused task not zeroed");
    free(ix.key);
}

/* ------------------------------------------------------------------------
 * Errors */

static bool contains(const char *s, const char *part)
{
    return strstr(s, part) != NULL;
}

static void test_count_errors(const RtOmniglot *o)
{
    char err[512] = "";
    CHECK(rt_omniglot_check(o, 5, 1, 15, err, sizeof err), "5-way 1-shot refused: %s", err);
    CHECK(rt_omniglot_check(o, 136, 10, 10, err, sizeof err), "136-way 10+10 refused: %s", err);
    CHECK(!rt_omniglot_check(o, 200, 1, 1, err, sizeof err) &&
              contains(err, "has only 136 classes, fewer than the 200 ways asked for") &&
              contains(err, "images_background_small1.zip"),
          "too many ways: \"%s\"", err);
    CHECK(!rt_omniglot_check(o, 5, 5, 20, err, sizeof err) &&
              contains(err, "has 20 drawings, fewer than shots + queries = 25") &&
              contains(err, "class Balinese/character01"),
          "too many shots: \"%s\"", err);
    CHECK(!rt_omniglot_check(o, 0, 1, 1, err, sizeof err) && contains(err, "ways"),
          "zero ways: \"%s\"", err);
    CHECK(!rt_omniglot_check(o, 5, -1, 1, err, sizeof err) && contains(err, "negative"),
          "negative shots: \"%s\"", err);
    float x[PX];
    int32_t y[1];
    CHECK(!rt_omniglot_task(o, 1, 1, 200, 1, 0, RT_F32, x, y, x, y), "200 ways drawn");
    CHECK(!rt_omniglot_task(o, 1, 1, 1, 21, 0, RT_F32, x, y, x, y), "21 shots drawn");
}

/* A PNG of w x h pixels in `format`, pixel values from fill(). */
static unsigned char *make_png(int w, int h, png_uint_32 format, const unsigned char *pixels,
                               size_t *len)
{
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    img.width = (png_uint_32)w;
    img.height = (png_uint_32)h;
    img.format = format;
    png_alloc_size_t size = 0;
    if (!png_image_write_to_memory(&img, NULL, &size, 0, pixels, 0, NULL))
        return NULL;
    unsigned char *buf = malloc(size);
    if (!png_image_write_to_memory(&img, buf, &size, 0, pixels, 0, NULL)) {
        free(buf);
        return NULL;
    }
    *len = size;
    return buf;
}

/* Other colour types decode to the same gray: an RGBA image whose left
 * third is opaque black, middle third opaque white and right third
 * transparent black (composited on white, so background), and a 50 x 30
 * 16-bit gray image whose first 10 columns are black. */
static void test_png_formats(void)
{
    static unsigned char rgba[105 * 105 * 4];
    for (int y = 0; y < 105; y++)
        for (int x = 0; x < 105; x++) {
            unsigned char *p = rgba + (y * 105 + x) * 4;
            p[0] = p[1] = p[2] = x >= 35 && x < 70 ? 255 : 0;
            p[3] = x < 70 ? 255 : 0;
        }
    static uint16_t gray16[50 * 30];
    for (int i = 0; i < 50 * 30; i++)
        gray16[i] = i % 50 < 10 ? 0 : 65535;
    size_t len[2] = {0, 0};
    unsigned char *png[2] = {
        make_png(105, 105, PNG_FORMAT_RGBA, rgba, &len[0]),
        make_png(50, 30, PNG_FORMAT_LINEAR_Y, (const unsigned char *)gray16, &len[1])};
    CHECK(png[0] && png[1], "cannot write test PNGs");
    if (!png[0] || !png[1])
        return;
    char path[400], err[512];
    snprintf(path, sizeof path, "%s/formats.zip", tmp);
    /* Hidden files and macOS resource forks (not PNGs) are skipped. */
    static const unsigned char junk[] = "junk";
    const char *name[5] = {"set/A/rgba/0.png", "set/A/gray16/0.png", "set/A/rgba/.1.png",
                           "__MACOSX/set/A/rgba/._0.png", "set/A/.hidden/0.png"};
    const unsigned char *data[5] = {png[0], png[1], junk, junk, junk};
    size_t lens[5] = {len[0], len[1], sizeof junk, sizeof junk, sizeof junk};
    CHECK(write_zip(path, 5, name, data, lens), "write %s", path);
    RtOmniglot *o = rt_omniglot_open(path, N, false, err, sizeof err);
    CHECK(o != NULL, "open %s: %s", path, err);
    if (o) {
        CHECK(rt_omniglot_classes(o) == 2 && rt_omniglot_drawings(o, 0) == 1 &&
                  rt_omniglot_drawings(o, 1) == 1,
              "%d classes: hidden files not skipped", rt_omniglot_classes(o));
        float x[PX];
        int c = find_class(o, "A/rgba");
        image(o, c, 0, x);
        /* Column 9 spans [33.75, 37.5): 1.25 of its 3.75 are black. */
        CHECK(c >= 0 && fabs(sum(x, PX) - PX / 3.0) < 1e-3 && fabsf(x[5 * N + 9] - 1 / 3.0f) < 1e-6 &&
                  x[5 * N + 8] == 1 && x[5 * N + 10] == 0 && x[5 * N + 27] == 0,
              "RGBA: sum %g, column 9 %g", sum(x, PX), x[5 * N + 9]);
        c = find_class(o, "A/gray16");
        image(o, c, 0, x);
        /* Black fraction 10/50 of every row; column 5 spans [8.93, 10.71). */
        CHECK(c >= 0 && fabs(sum(x, PX) - PX / 5.0) < 1e-3 &&
                  fabsf(x[3 * N + 5] - (10 - 250.0f / 28) / (50.0f / 28)) < 1e-5,
              "16-bit gray: sum %g, column 5 %g", sum(x, PX), x[3 * N + 5]);
    }
    rt_omniglot_close(o);
    free(png[0]);
    free(png[1]);
}

static void test_load_errors(void)
{
    char err[512], path[400];
    RtOmniglot *o = rt_omniglot_open(DATA "/missing.zip", N, false, err, sizeof err);
    CHECK(!o && contains(err, "missing.zip") && contains(err, "No such file"),
          "missing file: \"%s\"", err);

    snprintf(path, sizeof path, "%s/garbage.zip", tmp);
    FILE *f = fopen(path, "wb");
    for (int i = 0; f && i < 1000; i++)
        fputc((i * 7919) & 255, f);
    if (f)
        fclose(f);
    o = rt_omniglot_open(path, N, false, err, sizeof err);
    CHECK(!o && contains(err, "garbage.zip") && contains(err, "zip"), "garbage zip: \"%s\"", err);

    o = rt_omniglot_open(SMALL1, 0, false, err, sizeof err);
    CHECK(!o && contains(err, "size 0"), "size 0: \"%s\"", err);

    snprintf(path, sizeof path, "%s/empty", tmp);
    mkdir(path, 0777);
    o = rt_omniglot_open(path, N, false, err, sizeof err);
    CHECK(!o && contains(err, "empty") && contains(err, "no PNG"), "empty folder: \"%s\"", err);

    /* Three good drawings, then a truncated one and one that is not a PNG. */
    const char *good[3] = {"images_background_small1/Balinese/character01/0108_01.png",
                           "images_background_small1/Balinese/character01/0108_02.png",
                           "images_background_small1/Balinese/character02/0109_01.png"};
    unsigned char *data[3];
    const unsigned char *entry[4];
    size_t len[4];
    for (int i = 0; i < 3; i++)
        entry[i] = data[i] = zip_entry(SMALL1, good[i], &len[i]);
    CHECK(data[0] && data[1] && data[2], "cannot read entries of %s", SMALL1);
    if (!data[0] || !data[1] || !data[2])
        return;
    const char *bad_names[2] = {"x/Balinese/character02/truncated.png",
                                "x/Balinese/character02/text.png"};
    const unsigned char text[] = "not a PNG at all";
    for (int k = 0; k < 2; k++) {
        const char *name[4] = {good[0], good[1], good[2], bad_names[k]};
        entry[3] = k == 0 ? data[0] : text;
        len[3] = k == 0 ? len[0] / 2 : sizeof text;
        snprintf(path, sizeof path, "%s/bad%d.zip", tmp, k);
        CHECK(write_zip(path, 4, name, entry, len), "write %s", path);
        o = rt_omniglot_open(path, N, false, err, sizeof err);
        CHECK(!o && contains(err, path) && contains(err, bad_names[k]) &&
                  contains(err, "cannot decode PNG"),
              "bad PNG: \"%s\"", err);
    }
    /* A flipped byte in a stored entry's data fails the CRC check. */
    {
        const char *name[3] = {good[0], good[1], good[2]};
        snprintf(path, sizeof path, "%s/crc.zip", tmp);
        zip_t *z = zip_open(path, ZIP_CREATE | ZIP_TRUNCATE, NULL);
        for (int i = 0; z && i < 3; i++) {
            zip_source_t *src = zip_source_buffer(z, data[i], len[i], 0);
            zip_int64_t at = src ? zip_file_add(z, name[i], src, 0) : -1;
            if (at >= 0)
                zip_set_file_compression(z, (zip_uint64_t)at, ZIP_CM_STORE, 0);
        }
        CHECK(z && zip_close(z) == 0, "write %s", path);
        /* The second entry's data starts after its local header and name;
         * its IHDR chunk is found by content. */
        size_t n;
        FILE *zf = fopen(path, "rb");
        static unsigned char bytes[4096];
        n = zf ? fread(bytes, 1, sizeof bytes, zf) : 0;
        if (zf)
            fclose(zf);
        size_t hit = 0;
        for (size_t i = 0, count = 0; i + 4 < n; i++)
            if (memcmp(bytes + i, "IDAT", 4) == 0 && ++count == 2) {
                hit = i + 8;
                break;
            }
        CHECK(hit > 0, "no second IDAT in %s", path);
        bytes[hit] ^= 0x40;
        zf = fopen(path, "wb");
        if (zf) {
            fwrite(bytes, 1, n, zf);
            fclose(zf);
        }
        o = rt_omniglot_open(path, N, false, err, sizeof err);
        CHECK(!o && contains(err, "crc.zip") && contains(err, good[1]),
              "CRC error: \"%s\"", err);
    }
    for (int i = 0; i < 3; i++)
        free(data[i]);
}

/* ------------------------------------------------------------------------
 * The one-shot runs */

static void test_runs(void)
{
    char err[512];
    double t0 = now();
    RtOmniglotRuns *r = rt_omniglot_runs_open(RUNS, N, err, sizeof err);
    double t1 = now();
    CHECK(r != NULL, "open runs: %s", err);
    if (!r)
        return;
    printf("load: %s in %.3f s\n", RUNS, t1 - t0);
    CHECK(rt_omniglot_runs_count(r) == 20 && rt_omniglot_runs_ways(r) == 20 &&
              rt_omniglot_runs_tests(r) == 20 && rt_omniglot_runs_size(r) == N,
          "runs %d x %d + %d at %d", rt_omniglot_runs_count(r), rt_omniglot_runs_ways(r),
          rt_omniglot_runs_tests(r), rt_omniglot_runs_size(r));
    /* Each class has exactly one test item in every official run. */
    int bad = 0;
    for (int run = 0; run < rt_omniglot_runs_count(r); run++) {
        int seen[20] = {0};
        for (int i = 0; i < 20; i++) {
            int l = rt_omniglot_runs_label(r, run, i);
            bad += l < 0 || l >= 20;
            if (l >= 0 && l < 20)
                seen[l]++;
        }
        for (int l = 0; l < 20; l++)
            bad += seen[l] != 1;
    }
    CHECK(bad == 0, "%d label errors", bad);
    /* run01: "run01/test/item01.png run01/training/class08.png". */
    CHECK(rt_omniglot_runs_label(r, 0, 0) == 7, "run01 item01 label %d",
          rt_omniglot_runs_label(r, 0, 0));
    /* run07/test/item13.png: reference values as in test_known_images. */
    const float *x = rt_omniglot_runs_test(r, 6, 12);
    CHECK(fabs(sum(x, PX) - 22496.0 / 225) < 1e-4 && fabs(weighted(x, PX) - 2536552.0 / 75) < 1e-2 &&
              x[2 * N + 12] == (float)(1.0 / 3) && x[2 * N + 14] == (float)(11.0 / 45),
          "run07 item13: sum %.9g, weighted %.9g", sum(x, PX), weighted(x, PX));
    /* As one task: support = training images with labels 0..19. */
    static float sx[20 * PX], qx[20 * PX];
    int32_t sy[20], qy[20];
    rt_omniglot_runs_task(r, 6, RT_F32, sx, sy, qx, qy);
    int ok = memcmp(qx + 12 * PX, x, PX * sizeof *x) == 0 &&
             memcmp(sx + 3 * PX, rt_omniglot_runs_train(r, 6, 3), PX * sizeof *x) == 0;
    for (int i = 0; i < 20; i++)
        ok &= sy[i] == i && qy[i] == rt_omniglot_runs_label(r, 6, i);
    CHECK(ok, "run task differs from the accessors");
    /* An extracted folder of the first five runs gives the same runs. */
    static const char *const first5[] = {"run01/", "run02/", "run03/", "run04/", "run05/",
                                         NULL};
    char dir[300];
    snprintf(dir, sizeof dir, "%s/runs", tmp);
    CHECK(extract(RUNS, dir, first5), "cannot extract %s", RUNS);
    RtOmniglotRuns *f = rt_omniglot_runs_open(dir, N, err, sizeof err);
    CHECK(f != NULL && rt_omniglot_runs_count(f) == 5, "open runs folder: %s", f ? "" : err);
    if (f && rt_omniglot_runs_count(f) == 5) {
        int same = 0;
        for (int run = 0; run < 5; run++)
            for (int i = 0; i < 20; i++)
                same += memcmp(rt_omniglot_runs_train(r, run, i), rt_omniglot_runs_train(f, run, i),
                               PX * sizeof(float)) == 0 &&
                        memcmp(rt_omniglot_runs_test(r, run, i), rt_omniglot_runs_test(f, run, i),
                               PX * sizeof(float)) == 0 &&
                        rt_omniglot_runs_label(r, run, i) == rt_omniglot_runs_label(f, run, i);
        CHECK(same == 100, "folder runs differ: %d of 100 equal", same);
    }
    rt_omniglot_runs_close(f);
    rt_omniglot_runs_close(r);

    /* Missing pieces are named. */
    char path[400];
    snprintf(path, sizeof path, "%s/runs/run05/class_labels.txt", tmp);
    unlink(path);
    f = rt_omniglot_runs_open(dir, N, err, sizeof err);
    CHECK(!f && contains(err, "run05 has no class_labels.txt"), "missing labels: \"%s\"", err);
    FILE *lf = fopen(path, "w");
    if (lf) {
        fputs("run05/test/item01.png run05/training/class03.png\n"
              "run05/test/item02.png\n", lf);
        fclose(lf);
    }
    f = rt_omniglot_runs_open(dir, N, err, sizeof err);
    CHECK(!f && contains(err, "run05/class_labels.txt:2: expected"), "bad labels: \"%s\"", err);
    snprintf(path, sizeof path, "%s/runs/run03/training/class17.png", tmp);
    unlink(path);
    f = rt_omniglot_runs_open(dir, N, err, sizeof err);
    CHECK(!f && contains(err, "run03 has no training/class17.png"), "missing image: \"%s\"", err);
    f = rt_omniglot_runs_open(SMALL1, N, err, sizeof err);
    CHECK(!f && contains(err, "no one-shot runs found"), "not runs: \"%s\"", err);
}

/* The two background splits share Greek and Latin (50 characters): dropping
 * them from small2 leaves 106 characters of other alphabets, with their
 * images intact. */
static void test_drop_alphabets(const RtOmniglot *o1, const RtOmniglot *o2)
{
    char err[512] = "";
    RtOmniglot *held = rt_omniglot_open(SMALL2, N, true, err, sizeof err);
    CHECK(held != NULL, "open small2 again: %s", err);
    if (!held)
        return;
    int dropped = rt_omniglot_drop_alphabets(held, o1);
    CHECK(dropped == 50, "dropped %d characters", dropped);
    CHECK(rt_omniglot_classes(held) == 4 * 106, "%d classes left", rt_omniglot_classes(held));
    CHECK(rt_omniglot_min_drawings(held) == 20, "min drawings %d", rt_omniglot_min_drawings(held));
    int shared = 0, moved = 0;
    float a[N * N], b[N * N];
    for (int c = 0; c < rt_omniglot_classes(held); c += 4) {
        const char *name = rt_omniglot_class_name(held, c);
        shared += strncmp(name, "Greek/", 6) == 0 || strncmp(name, "Latin/", 6) == 0;
        int k = 0;      /* the same character in the untouched split */
        while (k < rt_omniglot_classes(o2) && strcmp(rt_omniglot_class_name(o2, k), name) != 0)
            k++;
        rt_omniglot_image(held, c, 7, RT_F32, a);
        rt_omniglot_image(o2, k, 7, RT_F32, b);
        moved += k == rt_omniglot_classes(o2) || memcmp(a, b, sizeof a) != 0;
    }
    CHECK(shared == 0, "%d characters of shared alphabets remain", shared);
    CHECK(moved == 0, "%d characters changed their images", moved);
    rt_omniglot_close(held);
}

int main(void)
{
    if (!exists(SMALL1) || !exists(SMALL2) || !exists(RUNS)) {
        if (getenv("MAMLC_REQUIRE_DATA"))
            CHECK(false, "MAMLC_REQUIRE_DATA is set but the Omniglot data is missing at %s",
                  DATA);
        else {
            printf("skipped: Omniglot data not found at %s\n", DATA);
            return 77;      /* ctest's SKIP_RETURN_CODE */
        }
        return check_summary();
    }
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(tmp, sizeof tmp, "%s/mamlc-omniglot-XXXXXX", base);
    if (!mkdtemp(tmp)) {
        CHECK(false, "cannot make a folder in %s: %s", base, strerror(errno));
        return check_summary();
    }
    char err[512] = "";
    double t0 = now();
    RtOmniglot *o1 = rt_omniglot_open(SMALL1, N, false, err, sizeof err);
    double t1 = now();
    CHECK(o1 != NULL, "open small1: %s", err);
    RtOmniglot *o2 = rt_omniglot_open(SMALL2, N, false, err, sizeof err);
    double t2 = now();
    CHECK(o2 != NULL, "open small2: %s", err);
    RtOmniglot *r1 = rt_omniglot_open(SMALL1, N, true, err, sizeof err);
    double t3 = now();
    CHECK(r1 != NULL, "open small1 with rotations: %s", err);
    printf("load: %s in %.3f s\n", SMALL1, t1 - t0);
    printf("load: %s in %.3f s\n", SMALL2, t2 - t1);
    printf("load: %s with rotations in %.3f s\n", SMALL1, t3 - t2);
    if (o1 && o2 && r1) {
        test_counts(o1, o2, r1);
        test_known_images(o1, o2);
        test_full_size();
        test_rotations(o1, r1);
        test_folder(o1);
        test_sampler(o1, o2);
        test_count_errors(o1);
        test_png_formats();
        test_load_errors();
        test_runs();
        test_drop_alphabets(o1, o2);
    }
    rt_omniglot_close(o1);
    rt_omniglot_close(o2);
    rt_omniglot_close(r1);
    remove_tree(tmp);
    return check_summary();
}
