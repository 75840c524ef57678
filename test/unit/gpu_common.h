/* What the GPU target's tests share (test/unit/test_gpu_host.c,
 * test/gpu/test_gpu_device.c): reading a model file, random numbers, and
 * the runtime's tree sum over tasks written out as its definition. */
#ifndef MAMLC_TEST_GPU_COMMON_H
#define MAMLC_TEST_GPU_COMMON_H

#include <stdio.h>
#include <stdlib.h>

/* The text of the file at path, NUL-terminated (free it), or NULL. */
static inline char *gpu_test_read(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) {
        free(s);
        s = NULL;
    }
    if (s)
        s[n] = 0;
    fclose(f);
    return s;
}

/* Uniform on (0, 1). */
static inline double gpu_test_urand(void) { return (rand() + 0.5) / ((double)RAND_MAX + 1); }

/* Element e of node [lo, hi) of runtime/batch.c's tree over the leaves
 * (leaf t at leaf + t * stride): left + right, mid = lo + (hi - lo) / 2. */
static inline double gpu_test_tree(const double *leaf, size_t stride, size_t e, int lo, int hi)
{
    if (hi - lo == 1)
        return leaf[(size_t)lo * stride + e];
    int mid = lo + (hi - lo) / 2;
    return gpu_test_tree(leaf, stride, e, lo, mid) + gpu_test_tree(leaf, stride, e, mid, hi);
}

#endif
