/* Omniglot (Lake, Salakhutdinov and Tenenbaum 2015) as a task source for
 * N-way K-shot classification, and the official 20-way one-shot runs.
 *
 * Images come from a release zip or from its extracted folder (the same
 * layout), are decoded with libpng (any bit depth or colour type, composited
 * on white, to gray), resized to size x size by exact area averaging, and
 * inverted so strokes are 1 and background 0.  They are kept in memory as
 * float.  This needs libzip and libpng, so it is built as the separate
 * library mamlc_data: the core runtime stays free of both. */
#ifndef MAMLC_OMNIGLOT_H
#define MAMLC_OMNIGLOT_H

#include "runtime.h"

/* --- a background set: characters as classes --- */
typedef struct RtOmniglot RtOmniglot;

/* Load every PNG under path, a zip (images_background_small1.zip, ...) or a
 * folder, at size x size (1 <= size <= 4096).  Each directory holding PNGs is
 * a character; characters are ordered by directory path, compared component
 * by component, and a character's drawings by file name.  Its class name is
 * the last two components of the directory ("Greek/character07").  With
 * rotations, character c gives classes 4c + r (r = 0..3) whose images are
 * rotated counter-clockwise by 90r degrees, named "Greek/character07",
 * "...@90", "...@180", "...@270".  Hidden files and __MACOSX are skipped.
 * Returns NULL with a message in err that names the file (and the entry
 * inside a zip) when path cannot be read, a PNG does not decode, memory runs
 * out or no PNG is found. */
RtOmniglot *rt_omniglot_open(const char *path, int size, bool rotations, char *err,
                             size_t errsize);
void rt_omniglot_close(RtOmniglot *o);

/* Remove from o every character whose alphabet ("Greek" in
 * "Greek/character07") `other` also has, so that a held-out split shares
 * no alphabet with the training split.  Returns how many characters went. */
int rt_omniglot_drop_alphabets(RtOmniglot *o, const RtOmniglot *other);

int rt_omniglot_classes(const RtOmniglot *o);
int rt_omniglot_size(const RtOmniglot *o);                  /* images are size x size */
int rt_omniglot_drawings(const RtOmniglot *o, int cls);     /* drawings of one class */
int rt_omniglot_min_drawings(const RtOmniglot *o);          /* fewest over all classes */
const char *rt_omniglot_class_name(const RtOmniglot *o, int cls);
/* Write the size * size pixels (row-major, rotation applied) of drawing
 * `drawing` of class cls to out as f32 or f64. */
void rt_omniglot_image(const RtOmniglot *o, int cls, int drawing, RtReal real, void *out);

/* Whether tasks of `ways` classes with shots + queries drawings each can be
 * drawn; if not, a message in err ("... has only 136 classes, fewer than the
 * 200 ways asked for", "... class X has 20 drawings, fewer than shots +
 * queries = 25").  ways >= 1, shots >= 0 and queries >= 0 are required. */
bool rt_omniglot_check(const RtOmniglot *o, int ways, int shots, int queries, char *err,
                       size_t errsize);

/* Draw task `task` of `seed` from rt_rng_stream(seed, task): `ways` distinct
 * classes, a random label permutation (class i of the task gets label
 * perm[i]), then per class shots + queries distinct drawings, the first
 * `shots` to the support set.  Both sets are class-major: sx holds
 * ways * shots images of size * size reals ([N*K, size*size], the same memory
 * as [N*K, 1, size, size]), sy their labels; qx and qy likewise with
 * `queries`.  Cost O(ways^2 + ways * (shots + queries) * (shots + queries +
 * size^2)), independent of the data set's size; no allocation unless
 * 2 ways + shots + queries > 256.  Returns false, writing nothing, when
 * rt_omniglot_check would refuse the counts or that allocation fails. */
bool rt_omniglot_task(const RtOmniglot *o, uint64_t seed, uint64_t task, int ways, int shots,
                      int queries, RtReal real, void *sx, int32_t *sy, void *qx, int32_t *qy);

/* The Omniglot source as an RtSampleFn: ctx is a const RtOmniglotSource *.
 * Evaluation tasks (RT_EVAL_TASK | i) draw from `eval` when it is not NULL,
 * so held-out alphabets can be evaluated on.  A task that cannot be drawn
 * (counts not checked with rt_omniglot_check first) comes out all zeros. */
typedef struct {
    const RtOmniglot *data;     /* training classes */
    const RtOmniglot *eval;     /* classes of evaluation tasks; NULL: data */
    int ways, shots, queries;
    RtReal real;
} RtOmniglotSource;
void rt_omniglot_sample(const void *ctx, uint64_t seed, uint64_t task,
                        void *sx, void *sy, void *qx, void *qy);

/* --- the 20-way one-shot runs (all_runs.zip) --- */
typedef struct RtOmniglotRuns RtOmniglotRuns;

/* Load all_runs.zip or its extracted folder: for each runNN, the training
 * images training/class01.png.. (class i has label i - 1), the test images
 * test/item01.png.. and their true labels from class_labels.txt (lines
 * "runNN/test/itemNN.png runNN/training/classMM.png").  Runs must be
 * numbered from 1 without gaps and have equal counts.  Same preprocessing as
 * rt_omniglot_open.  Returns NULL with a message naming the file on error. */
RtOmniglotRuns *rt_omniglot_runs_open(const char *path, int size, char *err, size_t errsize);
void rt_omniglot_runs_close(RtOmniglotRuns *r);

int rt_omniglot_runs_count(const RtOmniglotRuns *r);       /* 20 */
int rt_omniglot_runs_ways(const RtOmniglotRuns *r);        /* training images per run: 20 */
int rt_omniglot_runs_tests(const RtOmniglotRuns *r);       /* test images per run: 20 */
int rt_omniglot_runs_size(const RtOmniglotRuns *r);
/* size * size pixels of training image i (label i) or test image i of run
 * `run` (0-based: run 0 is run01). */
const float *rt_omniglot_runs_train(const RtOmniglotRuns *r, int run, int i);
const float *rt_omniglot_runs_test(const RtOmniglotRuns *r, int run, int i);
int rt_omniglot_runs_label(const RtOmniglotRuns *r, int run, int i);   /* of test image i */
/* Run `run` as one task: sx gets the ways training images, sy = 0..ways-1,
 * qx the test images and qy their true labels, in f32 or f64. */
void rt_omniglot_runs_task(const RtOmniglotRuns *r, int run, RtReal real, void *sx,
                           int32_t *sy, void *qx, int32_t *qy);

#endif
