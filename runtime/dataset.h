/* What the data-set loaders of mamlc_data (omniglot.c, images.c) share: the
 * files of a zip or a folder tree, exact area-averaging weights for
 * resizing, and drawing distinct indices for tasks.  Internal to mamlc_data. */
#ifndef MAMLC_DATASET_H
#define MAMLC_DATASET_H

#include <zip.h>

#include "runtime.h"

/* --- the files of a zip or a folder tree, by '/'-separated path --- */
typedef struct {
    char *name;                 /* path relative to the root */
    zip_uint64_t index;         /* entry in the zip */
} RtFile;

typedef struct {
    const char *path;           /* as given, for messages */
    zip_t *zip;                 /* NULL for a folder */
    RtFile *file;
    size_t n, cap;
} RtFiles;

/* A malloc'ed copy of s, or NULL when memory is out. */
char *rt_dup_string(const char *s);

/* List the regular files of path, a folder (walked up to 16 deep) or a zip,
 * in no particular order.  Hidden files and folders (".x") and __MACOSX are
 * left out, and so are a zip's folder entries.  False with a message naming
 * path when it cannot be read. */
bool rt_files_open(RtFiles *s, const char *path, char *err, size_t errsize);
void rt_files_close(RtFiles *s);
/* Read the whole of file e of s (at most 64 MiB) into a new buffer. */
bool rt_files_read(const RtFiles *s, const RtFile *e, unsigned char **data, size_t *len,
                   char *err, size_t errsize);

/* The length of the folder part of a path ("a/b/c.png" -> 3, "c.png" -> 0). */
size_t rt_dir_len(const char *p);
/* qsort's order of RtFiles: folder (component by component), then file
 * name, then position in the zip: a total order. */
int rt_file_compare(const void *a, const void *b);

/* --- exact area averaging ---
 * Along an axis of m input pixels resized to n, measure in units of 1/n
 * input pixels: input pixel x spans [x n, (x+1) n) and output pixel j spans
 * [j m, (j+1) m), so every overlap is an integer, every output pixel's
 * weights sum to m, and every sum of pixel times weight is exact until one
 * final division by the area m n (per axis). */

/* An overlapping pair (input pixel x, output pixel j) with its overlap. */
typedef struct {
    int in, out;                /* input pixel x, output pixel j */
    int64_t weight;             /* their overlap */
} RtAreaTap;

/* Every overlapping pair along the axis once, x and j nondecreasing (the
 * merged boundaries of both tilings): at most m + n taps.  Returns how many. */
int rt_area_taps(int m, int n, RtAreaTap *tap);
/* The inputs an output pixel reads, the same count `span` for every one:
 * ceil(m/n) + 1, at most m. */
int rt_area_span(int m, int n);
/* Output pixel j reads inputs first[j] .. first[j] + span - 1 with weights
 * weight[j * span ..] (some of them 0). */
void rt_area_window(int m, int n, int span, int *first, int64_t *weight);

/* --- rotations ---
 * Where an m x m image rotated counter-clockwise by 90 rot degrees
 * (numpy.rot90(src, rot), rot in 0..3) puts source pixel (a, b): element
 * start + a da + b db.  rot 1 puts it at (m-1-b, a), rot 2 at
 * (m-1-a, m-1-b), rot 3 at (b, m-1-a). */
typedef struct {
    ptrdiff_t start, da, db;
} RtRot90;
RtRot90 rt_rot90(ptrdiff_t m, int rot);

/* --- draws --- */
/* Shuffle a[0..k) uniformly (Fisher-Yates). */
void rt_shuffle(RtRng *r, int k, int32_t *a);
/* k distinct values of [0, n) into out[0..k), in uniformly random order:
 * Floyd's algorithm (exactly k draws, O(k^2) compares, no n-sized array),
 * then a shuffle, as Floyd's order is not uniform.  k <= n. */
void rt_draw_distinct(RtRng *r, int n, int k, int32_t *out);

/* --- tasks ---
 * What drawing a task needs of a data set of `classes` classes whose images
 * are `reals` reals each. */
typedef struct {
    const void *data;
    int classes;
    size_t reals;
    int (*count)(const void *data, int cls);      /* images of class cls */
    /* image i of class cls to reals [at, at + reals) of out, as f32 or f64 */
    void (*put)(const void *data, int cls, int i, RtReal real, void *out, size_t at);
} RtTaskData;

/* Task `task` of `seed`, from rt_rng_stream(seed, task): `ways` distinct
 * classes, a random label permutation (class i of the task gets label
 * perm[i]), then per class shots + queries distinct images, the first
 * `shots` to the support set.  Both sets are class-major.  The caller has
 * checked that ways <= classes and that every class has shots + queries
 * images.  No allocation unless 2 ways + shots + queries > 256; false, with
 * nothing written, when that allocation fails. */
bool rt_draw_task(const RtTaskData *d, uint64_t seed, uint64_t task, int ways, int shots,
                  int queries, RtReal real, void *sx, int32_t *sy, void *qx, int32_t *qy);
/* Zeros in place of a task that cannot be drawn (ways >= 1, shots and
 * queries >= 0). */
void rt_zero_task(size_t reals, int ways, int shots, int queries, RtReal real, void *sx,
                  void *sy, void *qx, void *qy);

#endif
