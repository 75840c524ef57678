/* Task files: pre-sampled episodes in one safetensors file, for models
 * whose tasks come from elsewhere (`task external`).  The file holds four
 * arrays, each with the tasks along its first axis:
 *
 *   support_x [T, ...], support_y [T, ...], query_x [T, ...], query_y [T, ...]
 *
 * where each "..." is the model's shape of that field and each dtype its
 * element type (F32 or F64 for reals, I32 for labels).  Other arrays are
 * ignored. */
#ifndef MAMLC_TASKS_H
#define MAMLC_TASKS_H

#include "runtime.h"

/* One field of a task, as the model declares it. */
typedef struct {
    bool labels;                /* i32; else a real of the layout's type */
    int classes;                /* labels: each must lie in [0, classes); 0: unchecked */
    int rank;
    const int *dim;             /* one task's extents */
} RtTaskField;

/* The four fields, in the order support x, support y, query x, query y. */
typedef struct {
    RtReal real;
    RtTaskField field[4];
} RtTaskLayout;

typedef struct RtTaskFile RtTaskFile;

/* Load the task file at path into memory, checked against l: the four
 * arrays present, each with l's dtype and its field's shape after the task
 * axis, the same T >= 1 tasks in all, and labels in range.  NULL, with a
 * message in err naming the file (and the array), when any check fails or
 * memory is out. */
RtTaskFile *rt_tasks_open(const char *path, const RtTaskLayout *l, char *err, size_t errsize);
void rt_tasks_close(RtTaskFile *t);
uint64_t rt_tasks_count(const RtTaskFile *t);   /* T */
uint64_t rt_tasks_bytes(const RtTaskFile *t);   /* held in memory */

/* A task file as an RtSampleFn: ctx is a const RtTasksSource *.  Training
 * task n is file task rt_rng_below(T) of rt_rng_stream(seed, n), so each
 * task is drawn independently (with replacement) as a function of (seed, n)
 * alone; evaluation task RT_EVAL_TASK | i is task i of `eval` (of `train`
 * when eval is NULL), so evaluating tasks [0, T) covers each once. */
typedef struct {
    const RtTaskFile *train;
    const RtTaskFile *eval;     /* NULL: train */
} RtTasksSource;
void rt_tasks_sample(const void *ctx, uint64_t seed, uint64_t task, void *sx, void *sy, void *qx, void *qy);

#endif
