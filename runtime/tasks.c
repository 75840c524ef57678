/* Task files: read through the safetensors reader, every array checked
 * against the model's layout before its data is read, then held in memory
 * in host order, one buffer per field. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"
#include "tasks.h"

static const char *const NAMES[4] = {"support_x", "support_y", "query_x", "query_y"};

struct RtTaskFile {
    uint64_t count;             /* T */
    size_t task_bytes[4];       /* one task's bytes of each field */
    unsigned char *data[4];     /* T tasks of each field */
};

/* The header's tensor of field k, checked against it: present, its dtype,
 * and a shape of [T, field's extents...] with T >= 1. */
static const RtStTensor *field_tensor(const RtSafetensors *st, const RtTaskLayout *l, int k, char *err,
                                      size_t errsize)
{
    const RtTaskField *f = &l->field[k];
    const RtStTensor *t = rt_st_find(st, NAMES[k]);
    const char *want = f->labels ? "I32" : l->real == RT_F32 ? "F32" : "F64";
    bool same = t && t->rank == f->rank + 1;
    for (int i = 0; same && i < f->rank; i++)
        same = t->dim[i + 1] == (uint64_t)f->dim[i];
    char want_s[160], found[128], one[128];
    if (!t) {
        rt_errorf(err, errsize, "%s: no array %s (a task file holds support_x, support_y, query_x and "
                  "query_y)", st->path, NAMES[k]);
    } else if (strcmp(t->dtype, want) != 0) {
        const char *hint = f->labels ? ""
                         : !strcmp(t->dtype, "F32") ? " (mamlc --dtype=f32 compiles the model for F32)"
                         : !strcmp(t->dtype, "F64") ? " (mamlc --dtype=f64 compiles the model for F64)" : "";
        rt_errorf(err, errsize, "%s: %s holds %s, but the model's %s are %s%s", st->path, NAMES[k], t->dtype,
                  f->labels ? "labels" : "reals", want, hint);
    } else if (!same) {
        rt_st_show_shape(f->rank, NULL, f->dim, one, sizeof one);
        snprintf(want_s, sizeof want_s, "[T%s%s", f->rank ? ", " : "]", f->rank ? one + 1 : "");
        rt_errorf(err, errsize, "%s: %s: expected shape %s, found %s", st->path, NAMES[k], want_s,
                  rt_st_show_shape(t->rank, t->dim, NULL, found, sizeof found));
    } else if (t->dim[0] == 0) {
        rt_errorf(err, errsize, "%s: %s holds no tasks (T = 0)", st->path, NAMES[k]);
    } else {
        return t;
    }
    return NULL;
}

/* Field k's labels all in [0, classes). */
static bool labels_in_range(const RtTaskFile *tf, const RtTaskLayout *l, int k, const char *path, char *err,
                            size_t errsize)
{
    int32_t classes = l->field[k].classes;
    size_t per_task = tf->task_bytes[k] / sizeof(int32_t);
    for (uint64_t i = 0; classes > 0 && i < tf->count * per_task; i++) {
        int32_t y;
        memcpy(&y, tf->data[k] + i * sizeof y, sizeof y);
        if (y < 0 || y >= classes)
            return rt_errorf(err, errsize, "%s: %s holds label %" PRId32 " (task %" PRIu64 ", element %" PRIu64
                             "), outside the model's %" PRId32 " classes [0, %" PRId32 ")", path, NAMES[k], y,
                             i / per_task, i % per_task, classes, classes);
    }
    return true;
}

RtTaskFile *rt_tasks_open(const char *path, const RtTaskLayout *l, char *err, size_t errsize)
{
    static const RtStSpec spec = {"a safetensors file", NULL, "not a safetensors dtype"};
    RtSafetensors st;
    if (!rt_st_open(&st, path, err, errsize))
        return NULL;
    RtTaskFile *tf = calloc(1, sizeof *tf);
    const RtStTensor *t[4] = {0};
    bool ok = tf && rt_st_read_header(&st, &spec, err, errsize);
    if (!tf)
        rt_errorf(err, errsize, "%s: out of memory", path);
    for (int k = 0; ok && k < 4; k++)
        ok = (t[k] = field_tensor(&st, l, k, err, errsize)) != NULL;
    for (int k = 1; ok && k < 4; k++)
        if (t[k]->dim[0] != t[0]->dim[0])
            ok = rt_errorf(err, errsize, "%s: %s holds %" PRIu64 " tasks but %s %" PRIu64 ": the four arrays "
                           "must hold the same tasks", path, NAMES[0], t[0]->dim[0], NAMES[k], t[k]->dim[0]);
    if (ok && t[0]->dim[0] > UINT32_MAX)
        ok = rt_errorf(err, errsize, "%s: %" PRIu64 " tasks, more than the %" PRIu32 " a task file may hold",
                       path, t[0]->dim[0], UINT32_MAX);
    for (int k = 0; ok && k < 4; k++) {
        uint64_t bytes = t[k]->end - t[k]->begin;
        tf->count = t[0]->dim[0];
        tf->task_bytes[k] = (size_t)(bytes / tf->count);
        if (bytes > SIZE_MAX || !(tf->data[k] = malloc(bytes ? (size_t)bytes : 1)))
            ok = rt_errorf(err, errsize, "%s: out of memory for the %" PRIu64 " bytes of %s", path, bytes,
                           NAMES[k]);
        else if ((ok = rt_st_read(&st, t[k]->begin, bytes, tf->data[k], err, errsize)))
            rt_st_copy_le(tf->data[k], tf->data[k], (size_t)(bytes / t[k]->esize), t[k]->esize);
    }
    for (int k = 0; ok && k < 4; k++)
        ok = !l->field[k].labels || labels_in_range(tf, l, k, path, err, errsize);
    rt_st_close(&st);
    if (!ok) {
        rt_tasks_close(tf);
        return NULL;
    }
    return tf;
}

void rt_tasks_close(RtTaskFile *t)
{
    if (!t)
        return;
    for (int k = 0; k < 4; k++)
        free(t->data[k]);
    free(t);
}

uint64_t rt_tasks_count(const RtTaskFile *t) { return t->count; }

uint64_t rt_tasks_bytes(const RtTaskFile *t)
{
    uint64_t n = 0;
    for (int k = 0; k < 4; k++)
        n += t->count * t->task_bytes[k];
    return n;
}

void rt_tasks_sample(const void *ctx, uint64_t seed, uint64_t task, void *sx, void *sy, void *qx, void *qy)
{
    const RtTasksSource *src = ctx;
    const RtTaskFile *f = src->train;
    uint64_t i;
    if (task & RT_EVAL_TASK) {
        f = src->eval ? src->eval : src->train;
        i = (task & ~RT_EVAL_TASK) % f->count;
    } else {
        RtRng r;
        rt_rng_stream(&r, seed, task);
        i = rt_rng_below(&r, (uint32_t)f->count);
    }
    void *out[4] = {sx, sy, qx, qy};
    for (int k = 0; k < 4; k++)
        memcpy(out[k], f->data[k] + i * f->task_bytes[k], f->task_bytes[k]);
}
