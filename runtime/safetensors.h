/* A strict reader of safetensors files (github.com/huggingface/safetensors):
 *
 *   u64 (little-endian) N | N bytes of JSON header | data
 *
 * The header maps each tensor name to {"dtype", "shape", "data_offsets"}
 * (byte offsets into the data, which the tensors must tile exactly) and may
 * hold string metadata under "__metadata__".  What checkpoints
 * (runtime/checkpoint.c) and task files (runtime/tasks.c) read through.
 *
 * Everything read from a file is untrusted: the header is parsed with
 * bounded depth and a bounded number of values, every offset and size is
 * checked for overflow, and the only allocations sized by the file are the
 * header (at most RT_ST_MAX_HEADER bytes, and no more than the file holds)
 * and its parsed values; the data is read only when the caller asks. */
#ifndef MAMLC_SAFETENSORS_H
#define MAMLC_SAFETENSORS_H

#include "runtime.h"

#define RT_ST_MAX_HEADER 100000000  /* bytes of JSON header, as the reference */
#define RT_ST_METADATA "__metadata__"
enum { RT_ST_SHOW_NAME = 64 };      /* bytes of a name quoted in a message */

/* One tensor of a file, as its header describes it (checked: its extents'
 * product times esize is end - begin). */
typedef struct {
    const char *name;
    const char *dtype;          /* "F32", "I32", ...: one the caller accepts */
    size_t esize;               /* bytes of one element */
    int rank;
    const uint64_t *dim;
    uint64_t begin, end;        /* data_offsets */
} RtStTensor;

/* What the caller reads, for the messages and the dtype check. */
typedef struct {
    const char *what;           /* "a checkpoint": "not a checkpoint: header length ..." */
    const char *const *dtypes;  /* the dtypes accepted, NULL-terminated; NULL: all of
                                   the format's (BOOL, U8, I8, ..., F64) */
    const char *refused;        /* why another is refused: "a mamlc checkpoint holds F32 or F64" */
} RtStSpec;

typedef struct {
    const char *path;           /* as named in messages */
    FILE *f;
    uint64_t size;              /* of the file */
    uint64_t data_at;           /* where the data starts: 8 + N */
    uint64_t data_bytes;        /* of the data, which the tensors tile */
    int ntensor;
    RtStTensor *tensor;         /* sorted by begin */
    int nmeta;
    const char **meta;          /* key, value, key, value, ... */
    char *text;                 /* the header's decoded strings */
    uint64_t *dims;             /* every tensor's extents */
} RtSafetensors;

/* Open path for reading: a regular file (a FIFO or a folder is refused
 * without blocking).  On success st->f and st->size are set, and
 * rt_st_close must follow. */
bool rt_st_open(RtSafetensors *st, const char *path, char *err, size_t errsize);

/* Read and check the whole header of the open file: its length, the JSON,
 * every tensor (dtype among spec's, shape, offsets agreeing), the tensors'
 * exact tiling of the data and the data's length, and the metadata (an
 * object of strings).  False with a message naming the file otherwise. */
bool rt_st_read_header(RtSafetensors *st, const RtStSpec *spec, char *err, size_t errsize);

/* The metadata value of key, or NULL. */
const char *rt_st_meta(const RtSafetensors *st, const char *key);

/* The tensor named name, or NULL. */
const RtStTensor *rt_st_find(const RtSafetensors *st, const char *name);

/* Read bytes [begin, begin + n) of the data into dst, as stored. */
bool rt_st_read(RtSafetensors *st, uint64_t begin, uint64_t n, void *dst, char *err, size_t errsize);

void rt_st_close(RtSafetensors *st);

/* Copy count elements of esize (at most 16) bytes between host order and
 * little-endian order; dst may be src. */
void rt_st_copy_le(void *dst, const void *src, size_t count, size_t esize);

/* Whether s is well-formed UTF-8. */
bool rt_st_utf8_valid(const char *s);

/* s made safe to quote in a message: control bytes become '?', and a long
 * one is cut with "...". */
const char *rt_st_show(const char *s, char buf[RT_ST_SHOW_NAME + 4]);

/* "[40, 1]": a shape of extents u (or, u NULL, i), for a message. */
const char *rt_st_show_shape(int rank, const uint64_t *u, const int *i, char *buf, size_t size);

/* *out = a * b, false on overflow. */
static inline bool rt_st_mul_u64(uint64_t a, uint64_t b, uint64_t *out)
{
    if (b && a > UINT64_MAX / b)
        return false;
    *out = a * b;
    return true;
}

#endif
