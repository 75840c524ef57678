/* Image data sets as a task source for N-way K-shot classification: class
 * folders of PNG or JPEG images, or the mini-ImageNet split files of Ravi
 * and Larochelle (2017).
 *
 * Images come from a zip or a folder and are decoded with libpng and
 * libjpeg-turbo (chosen by the file's first bytes), converted to RGB or grey,
 * resized to size x size by exact area averaging and kept in memory as
 * uint8, channel-major.  Pixels become reals only when a task is drawn:
 * p / 255, then (p / 255 - mean[c]) / std[c] when normalised.  Part of
 * mamlc_data, like the Omniglot loader. */
#ifndef MAMLC_IMAGES_H
#define MAMLC_IMAGES_H

#include "runtime.h"

typedef struct RtImages RtImages;

enum { RT_IMAGES_MAX_SIZE = 4096, RT_IMAGES_MAX_DEPTH = 3 };

typedef struct {
    int size;                   /* images are channels x size x size, 1..4096 */
    int channels;               /* 1: grey, 3: RGB */
    bool rotations;             /* each class c also as classes rotated by 90, 180, 270 degrees */
    const char *split;          /* a CSV file "filename,label", or NULL: class folders */
    int nnorm;                  /* 0, or `channels`: normalise by mean and std */
    double mean[3], std[3];     /* per channel; std > 0 */
} RtImagesSpec;

/* Load the images of path, a folder or a zip.
 * Without a split, the classes are the folders 1 to 3 levels below path
 * that directly hold images (*.png, *.jpg, *.jpeg, any case); images
 * directly in path belong to none, and an image deeper down is an error.
 * Classes are ordered by folder, compared component by component, and a
 * class's images by file name; a class's name is its folder.
 * With a split, the CSV's header is "filename,label" and each further line
 * names an image of path or of path/images and its class; classes are
 * ordered by label, a class's images by file name, and each file may be
 * listed once.
 * With rotations, class c gives classes 4c + r (r = 0..3) whose images are
 * rotated counter-clockwise by 90r degrees (numpy.rot90).  Hidden files and
 * __MACOSX are skipped.  Memory is checked before decoding: a data set
 * larger than the memory available is refused.  Returns NULL with a message
 * in err naming the file (and the zip entry, or the CSV line) when path or
 * the CSV cannot be read, a zip entry has an absolute path or a ".."
 * component, an image does not decode, a CSV line names no file, memory is
 * short, or there is no class. */
RtImages *rt_images_open(const char *path, const RtImagesSpec *spec, char *err, size_t errsize);
void rt_images_close(RtImages *im);

/* The data set's name in messages: path, or "CSV (path)" with a split. */
const char *rt_images_name(const RtImages *im);
int rt_images_classes(const RtImages *im);          /* rotations included */
int rt_images_count(const RtImages *im);            /* decoded images */
size_t rt_images_bytes(const RtImages *im);         /* bytes of pixels held */
int rt_images_size(const RtImages *im);
int rt_images_channels(const RtImages *im);
int rt_images_per_class(const RtImages *im, int cls);
const char *rt_images_class_name(const RtImages *im, int cls);   /* "a/b", "a/b@90", ... */
/* The channels * size * size reals (rotation and normalisation applied) of
 * image i of class cls, as f32 or f64. */
void rt_images_image(const RtImages *im, int cls, int i, RtReal real, void *out);

/* Whether tasks of `ways` classes with shots + queries images each can be
 * drawn; if not, a message in err naming the data set ("... has only 12
 * classes, fewer than the 20 ways asked for", "... class X has 4 images,
 * fewer than shots + queries = 6"). */
bool rt_images_check(const RtImages *im, int ways, int shots, int queries, char *err,
                     size_t errsize);

/* Draw task `task` of `seed` from rt_rng_stream(seed, task), as
 * rt_omniglot_task does: `ways` distinct classes, a random label
 * permutation, then per class shots + queries distinct images, the first
 * `shots` to the support set, both sets class-major.  sx holds ways * shots
 * images of channels * size * size reals ([N*K, C, S, S]), sy their labels;
 * qx and qy likewise with `queries`.  Returns false, writing nothing, when
 * rt_images_check would refuse the counts or memory is out. */
bool rt_images_task(const RtImages *im, uint64_t seed, uint64_t task, int ways, int shots,
                    int queries, RtReal real, void *sx, int32_t *sy, void *qx, int32_t *qy);

/* The source as an RtSampleFn: ctx is a const RtImagesSource *.  Evaluation
 * tasks (RT_EVAL_TASK | i) draw from `eval` when it is not NULL.  A task that
 * cannot be drawn comes out all zeros. */
typedef struct {
    const RtImages *data;       /* training classes */
    const RtImages *eval;       /* classes of evaluation tasks; NULL: data */
    int ways, shots, queries;
    RtReal real;
} RtImagesSource;
void rt_images_sample(const void *ctx, uint64_t seed, uint64_t task,
                      void *sx, void *sy, void *qx, void *qy);

#endif
