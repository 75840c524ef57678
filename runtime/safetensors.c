/* The safetensors reader: a strict JSON parser for the header, and the
 * checks of the header against the format and the file's length. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "safetensors.h"

enum {
    MAX_DEPTH = 16,             /* nesting of JSON values (a checkpoint needs 3) */
    MAX_VALUES = 1 << 20,       /* JSON values in one header */
    SHOW_NAME = RT_ST_SHOW_NAME,
    SHOW_DIMS = 8,              /* extents of a shape quoted in a message */
};

static bool host_little_endian(void)
{
    const uint16_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

void rt_st_copy_le(void *dst, const void *src, size_t count, size_t esize)
{
    if (host_little_endian()) {
        if (count && dst != src)
            memcpy(dst, src, count * esize);
        return;
    }
    unsigned char *d = dst, tmp[16];
    const unsigned char *s = src;
    for (size_t i = 0; i < count; i++, d += esize, s += esize) {
        memcpy(tmp, s, esize);
        for (size_t k = 0; k < esize; k++)
            d[k] = tmp[esize - 1 - k];
    }
}

/* Whether s[0..n) is well-formed UTF-8 (no overlong forms, surrogates or
 * code points past U+10FFFF); *len gets the length of the sequence at s. */
static bool utf8_seq(const unsigned char *s, size_t n, size_t *len)
{
    unsigned char c = s[0];
    unsigned char lo = 0x80, hi = 0xBF;
    size_t k;
    if (c < 0x80)
        k = 1;
    else if (c >= 0xC2 && c <= 0xDF)
        k = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        k = 3;
        if (c == 0xE0)
            lo = 0xA0;
        if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        k = 4;
        if (c == 0xF0)
            lo = 0x90;
        if (c == 0xF4)
            hi = 0x8F;
    } else
        return false;
    if (k > n)
        return false;
    for (size_t i = 1; i < k; i++) {
        if (s[i] < lo || s[i] > hi)
            return false;
        lo = 0x80, hi = 0xBF;
    }
    *len = k;
    return true;
}

bool rt_st_utf8_valid(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s), len;
    for (size_t i = 0; i < n; i += len)
        if (!utf8_seq(p + i, n - i, &len))
            return false;
    return true;
}

const char *rt_st_show(const char *s, char buf[SHOW_NAME + 4])
{
    size_t i = 0;
    for (; s[i] && i < SHOW_NAME; i++)
        buf[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7F ? '?' : s[i];
    if (s[i]) {
        while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80)   /* not inside a character */
            i--;
        memcpy(buf + i, "...", 3);
        i += 3;
    }
    buf[i] = '\0';
    return buf;
}

/* ------------------------------------------------------------------------
 * A strict JSON reader for the header.  It builds a tree of values indexed
 * by position in one array.  Only what a safetensors header holds is
 * accepted: objects (without duplicate keys), arrays, strings (well-formed
 * UTF-8, escapes decoded, no NUL) and non-negative integers below 2^64;
 * true, false, null, negative and fractional numbers are refused. */

typedef enum { J_OBJECT, J_ARRAY, J_STRING, J_INT } JsonKind;

typedef struct {
    JsonKind kind;
    uint32_t pos;               /* byte offset of the value in the header */
    int32_t next;               /* next member or element of the parent; -1 ends */
    int32_t first;              /* object, array: first member or element; -1 if empty */
    int32_t count;              /* object, array: members or elements */
    const char *key;            /* a member of an object: its key; else NULL */
    union {
        const char *str;        /* string: NUL-terminated, no NUL inside */
        uint64_t num;           /* integer */
    } u;
} JsonValue;

typedef struct {
    const char *src;            /* the header */
    size_t len, at;
    char *text;                 /* decoded strings, each at its offset in src */
    JsonValue *v;
    int32_t nv, cap;
    char msg[160];              /* what went wrong, with the byte offset */
} Json;

static bool json_fail(Json *j, size_t pos, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static bool json_fail(Json *j, size_t pos, const char *fmt, ...)
{
    int n = snprintf(j->msg, sizeof j->msg, "byte %zu: ", pos);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(j->msg + n, sizeof j->msg - (size_t)n, fmt, ap);
    va_end(ap);
    return false;
}

static void json_skip_space(Json *j)
{
    while (j->at < j->len && (j->src[j->at] == ' ' || j->src[j->at] == '\t' ||
                              j->src[j->at] == '\n' || j->src[j->at] == '\r'))
        j->at++;
}

/* A new value at the current position; -1 (message set) past MAX_VALUES
 * or without memory. */
static int32_t json_new(Json *j, JsonKind kind)
{
    if (j->nv == MAX_VALUES) {
        json_fail(j, j->at, "more than %d values", MAX_VALUES);
        return -1;
    }
    if (j->nv == j->cap) {
        int32_t cap = j->cap ? 2 * j->cap : 64;
        JsonValue *v = realloc(j->v, (size_t)cap * sizeof *v);
        if (!v) {
            json_fail(j, j->at, "out of memory");
            return -1;
        }
        j->v = v;
        j->cap = cap;
    }
    j->v[j->nv] = (JsonValue){kind, (uint32_t)j->at, -1, -1, 0, NULL, {NULL}};
    return j->nv++;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* The 4 hex digits of a \u escape at src[at]. */
static bool json_hex4(Json *j, size_t at, unsigned *out)
{
    if (j->len - at < 4)
        return json_fail(j, at, "\\u needs 4 hex digits");
    unsigned u = 0;
    for (int i = 0; i < 4; i++) {
        int d = hex_digit(j->src[at + (size_t)i]);
        if (d < 0)
            return json_fail(j, at, "\\u needs 4 hex digits");
        u = u << 4 | (unsigned)d;
    }
    *out = u;
    return true;
}

// string = '"' (char | '\' escape)* '"'
// Decoded text is never longer than its source, so it is written at the
// string's own offset in j->text, and the NUL where the closing quote is.
static bool json_string(Json *j, const char **out)
{
    size_t open = j->at++;
    char *w = j->text + j->at;
    for (;;) {
        if (j->at >= j->len)
            return json_fail(j, open, "string not terminated");
        unsigned char c = (unsigned char)j->src[j->at];
        if (c == '"') {
            *w = '\0';
            *out = j->text + open + 1;
            j->at++;
            return true;
        }
        if (c < 0x20)
            return json_fail(j, j->at, "control character in a string");
        if (c >= 0x80) {
            size_t k;
            if (!utf8_seq((const unsigned char *)j->src + j->at, j->len - j->at, &k))
                return json_fail(j, j->at, "invalid UTF-8");
            memcpy(w, j->src + j->at, k);
            w += k;
            j->at += k;
            continue;
        }
        if (c != '\\') {
            *w++ = (char)c;
            j->at++;
            continue;
        }
        size_t esc = j->at++;
        if (j->at >= j->len)
            return json_fail(j, open, "string not terminated");
        static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
        char e = j->src[j->at++];
        const char *p = e ? strchr(from, e) : NULL;
        if (p) {
            *w++ = to[p - from];
            continue;
        }
        if (e != 'u')
            return json_fail(j, esc, "unknown escape");
        unsigned cp;
        if (!json_hex4(j, j->at, &cp))
            return false;
        j->at += 4;
        if (cp >= 0xDC00 && cp <= 0xDFFF)
            return json_fail(j, esc, "lone surrogate in \\u escape");
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            unsigned lo;
            if (j->len - j->at < 2 || j->src[j->at] != '\\' || j->src[j->at + 1] != 'u' ||
                !json_hex4(j, j->at + 2, &lo) || lo < 0xDC00 || lo > 0xDFFF)
                return json_fail(j, esc, "lone surrogate in \\u escape");
            j->at += 6;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        }
        if (cp == 0)
            return json_fail(j, esc, "\\u0000 in a string");
        if (cp < 0x80)
            *w++ = (char)cp;
        else if (cp < 0x800) {
            *w++ = (char)(0xC0 | cp >> 6);
            *w++ = (char)(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            *w++ = (char)(0xE0 | cp >> 12);
            *w++ = (char)(0x80 | (cp >> 6 & 0x3F));
            *w++ = (char)(0x80 | (cp & 0x3F));
        } else {
            *w++ = (char)(0xF0 | cp >> 18);
            *w++ = (char)(0x80 | (cp >> 12 & 0x3F));
            *w++ = (char)(0x80 | (cp >> 6 & 0x3F));
            *w++ = (char)(0x80 | (cp & 0x3F));
        }
    }
}

// integer = "0" | [1-9] [0-9]*      (below 2^64)
static bool json_int(Json *j, uint64_t *out)
{
    size_t start = j->at;
    uint64_t n = 0;
    while (j->at < j->len && j->src[j->at] >= '0' && j->src[j->at] <= '9') {
        unsigned d = (unsigned)(j->src[j->at] - '0');
        if (n > (UINT64_MAX - d) / 10)
            return json_fail(j, start, "integer too large");
        n = n * 10 + d;
        j->at++;
    }
    if (j->at - start > 1 && j->src[start] == '0')
        return json_fail(j, start, "leading zero in an integer");
    if (j->at < j->len && (j->src[j->at] == '.' || j->src[j->at] == 'e' || j->src[j->at] == 'E'))
        return json_fail(j, start, "expected an integer");
    *out = n;
    return true;
}

static int cmp_str_ptr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Refuse an object with two members of the same key.  Sorting keeps a
 * header with many keys from costing quadratic time. */
static bool json_unique_keys(Json *j, int32_t obj)
{
    int32_t n = j->v[obj].count;
    if (n < 2)
        return true;
    const char *small[8];
    const char **key = n <= 8 ? small : malloc((size_t)n * sizeof *key);
    if (!key)
        return json_fail(j, j->v[obj].pos, "out of memory");
    int32_t i = 0;
    for (int32_t m = j->v[obj].first; m >= 0; m = j->v[m].next)
        key[i++] = j->v[m].key;
    qsort(key, (size_t)n, sizeof *key, cmp_str_ptr);
    const char *dup = NULL;
    for (i = 1; i < n && !dup; i++)
        if (strcmp(key[i - 1], key[i]) == 0)
            dup = key[i];
    char buf[SHOW_NAME + 4];
    bool ok = !dup || json_fail(j, j->v[obj].pos, "duplicate key \"%s\"", rt_st_show(dup, buf));
    if (key != small)
        free(key);
    return ok;
}

static int32_t json_value(Json *j, int depth);

// object = "{" (string ":" value ("," string ":" value)*)? "}"
// array  = "[" (value ("," value)*)? "]"
static int32_t json_container(Json *j, int depth)
{
    bool object = j->src[j->at] == '{';
    char close = object ? '}' : ']';
    int32_t self = json_new(j, object ? J_OBJECT : J_ARRAY);
    if (self < 0)
        return -1;
    j->at++;
    json_skip_space(j);
    if (j->at < j->len && j->src[j->at] == close) {
        j->at++;
        return self;
    }
    int32_t last = -1;
    for (;;) {
        const char *key = NULL;
        if (object) {
            json_skip_space(j);
            if (j->at >= j->len || j->src[j->at] != '"') {
                json_fail(j, j->at, "expected a string key");
                return -1;
            }
            if (!json_string(j, &key))
                return -1;
            json_skip_space(j);
            if (j->at >= j->len || j->src[j->at] != ':') {
                json_fail(j, j->at, "expected ':' after a key");
                return -1;
            }
            j->at++;
        }
        int32_t m = json_value(j, depth + 1);
        if (m < 0)
            return -1;
        j->v[m].key = key;
        if (last < 0)
            j->v[self].first = m;
        else
            j->v[last].next = m;
        last = m;
        j->v[self].count++;
        json_skip_space(j);
        if (j->at < j->len && j->src[j->at] == ',') {
            j->at++;
            continue;
        }
        if (j->at < j->len && j->src[j->at] == close) {
            j->at++;
            break;
        }
        json_fail(j, j->at, "expected ',' or '%c'", close);
        return -1;
    }
    return object && !json_unique_keys(j, self) ? -1 : self;
}

// value = object | array | string | integer
static int32_t json_value(Json *j, int depth)
{
    json_skip_space(j);
    if (j->at >= j->len) {
        json_fail(j, j->at, "expected a value");
        return -1;
    }
    if (depth > MAX_DEPTH) {
        json_fail(j, j->at, "values nested more than %d deep", MAX_DEPTH);
        return -1;
    }
    char c = j->src[j->at];
    if (c == '{' || c == '[')
        return json_container(j, depth);
    if (c == '"') {
        int32_t s = json_new(j, J_STRING);
        const char *str;
        if (s < 0 || !json_string(j, &str))
            return -1;
        j->v[s].u.str = str;
        return s;
    }
    if (c >= '0' && c <= '9') {
        int32_t n = json_new(j, J_INT);
        uint64_t num = 0;
        if (n < 0 || !json_int(j, &num))
            return -1;
        j->v[n].u.num = num;
        return n;
    }
    json_fail(j, j->at, "expected an object, array, string or non-negative integer");
    return -1;
}

/* Parse the whole of src[0..len) as one value (surrounding whitespace
 * allowed); false with j->msg set if it is not. */
static bool json_parse(Json *j, const char *src, size_t len)
{
    *j = (Json){.src = src, .len = len};
    j->text = malloc(len + 1);
    if (!j->text)
        return json_fail(j, 0, "out of memory");
    if (json_value(j, 0) < 0)
        return false;
    json_skip_space(j);
    if (j->at != len)
        return json_fail(j, j->at, "unexpected bytes after the JSON value");
    return true;
}

/* ------------------------------------------------------------------------
 * The header */

/* Every dtype of the format, with its element size. */
static const struct {
    const char *name;
    size_t size;
} DTYPES[] = {
    {"BOOL", 1}, {"U8", 1}, {"I8", 1}, {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"I16", 2}, {"U16", 2},
    {"F16", 2}, {"BF16", 2}, {"I32", 4}, {"U32", 4}, {"F32", 4}, {"I64", 8}, {"U64", 8}, {"F64", 8},
};

/* The size of dtype when spec accepts it, else 0. */
static size_t accepted(const RtStSpec *spec, const char *dtype)
{
    bool ok = !spec->dtypes;
    for (int i = 0; !ok && spec->dtypes[i]; i++)
        ok = strcmp(spec->dtypes[i], dtype) == 0;
    for (size_t i = 0; ok && i < sizeof DTYPES / sizeof *DTYPES; i++)
        if (strcmp(DTYPES[i].name, dtype) == 0)
            return DTYPES[i].size;
    return 0;
}

static int cmp_tensor(const void *a, const void *b)
{
    const RtStTensor *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return 0;
}

const char *rt_st_show_shape(int rank, const uint64_t *u, const int *i, char *buf, size_t size)
{
    size_t len = 0;
    len += (size_t)snprintf(buf, size, "[");
    for (int k = 0; k < rank && len < size; k++) {
        if (k == SHOW_DIMS) {
            len += (size_t)snprintf(buf + len, size - len, ", ...");
            break;
        }
        uint64_t d = u ? u[k] : (uint64_t)i[k];
        len += (size_t)snprintf(buf + len, size - len, "%s%" PRIu64, k ? ", " : "", d);
    }
    if (len < size)
        snprintf(buf + len, size - len, "]");
    return buf;
}

/* The member `key` of object obj, or -1. */
static int32_t member(const Json *j, int32_t obj, const char *key)
{
    for (int32_t m = j->v[obj].first; m >= 0; m = j->v[m].next)
        if (strcmp(j->v[m].key, key) == 0)
            return m;
    return -1;
}

/* The tensor named by member m: dtype, shape (its extents from *dims on,
 * which advances) and data_offsets, checked for form and for agreeing with
 * each other. */
static bool file_tensor(const char *path, const RtStSpec *spec, const Json *j, int32_t m, RtStTensor *t,
                        uint64_t **dims, char *err, size_t errsize)
{
    char nb[SHOW_NAME + 4];
    const char *name = rt_st_show(j->v[m].key, nb);
    if (j->v[m].kind != J_OBJECT)
        return rt_errorf(err, errsize, "%s: bad header: tensor %s is not an object", path, name);
    for (int32_t k = j->v[m].first; k >= 0; k = j->v[k].next) {
        const char *key = j->v[k].key;
        if (strcmp(key, "dtype") && strcmp(key, "shape") && strcmp(key, "data_offsets")) {
            char kb[SHOW_NAME + 4];
            return rt_errorf(err, errsize, "%s: bad header: tensor %s has an unknown field \"%s\"",
                        path, name, rt_st_show(key, kb));
        }
    }
    int32_t dt = member(j, m, "dtype"), sh = member(j, m, "shape"),
            off = member(j, m, "data_offsets");
    if (dt < 0 || sh < 0 || off < 0)
        return rt_errorf(err, errsize, "%s: bad header: tensor %s has no \"%s\"", path, name,
                    dt < 0 ? "dtype" : sh < 0 ? "shape" : "data_offsets");
    if (j->v[dt].kind != J_STRING)
        return rt_errorf(err, errsize, "%s: bad header: the dtype of %s is not a string", path, name);
    const char *dtype = j->v[dt].u.str;
    if (!(t->esize = accepted(spec, dtype))) {
        char db[SHOW_NAME + 4];
        return rt_errorf(err, errsize, "%s: tensor %s holds %s; %s", path, name, rt_st_show(dtype, db),
                    spec->refused);
    }
    t->name = j->v[m].key;
    t->dtype = dtype;
    if (j->v[sh].kind != J_ARRAY)
        return rt_errorf(err, errsize, "%s: bad header: the shape of %s is not an array", path, name);
    uint64_t numel = 1;
    t->rank = j->v[sh].count;
    t->dim = *dims;
    for (int32_t d = j->v[sh].first; d >= 0; d = j->v[d].next) {
        if (j->v[d].kind != J_INT)
            return rt_errorf(err, errsize, "%s: bad header: the shape of %s holds a non-integer",
                        path, name);
        if (!rt_st_mul_u64(numel, j->v[d].u.num, &numel))
            return rt_errorf(err, errsize, "%s: bad header: the shape of %s is too large", path,
                        name);
        *(*dims)++ = j->v[d].u.num;
    }
    int32_t b = j->v[off].first;
    if (j->v[off].kind != J_ARRAY || j->v[off].count != 2 || j->v[b].kind != J_INT ||
        j->v[j->v[b].next].kind != J_INT)
        return rt_errorf(err, errsize, "%s: bad header: the data_offsets of %s are not two integers",
                    path, name);
    t->begin = j->v[b].u.num;
    t->end = j->v[j->v[b].next].u.num;
    if (t->end < t->begin)
        return rt_errorf(err, errsize, "%s: bad header: the data_offsets of %s, [%" PRIu64 ", %"
                    PRIu64 "], run backwards", path, name, t->begin, t->end);
    uint64_t bytes = 0;
    if (!rt_st_mul_u64(numel, t->esize, &bytes))
        return rt_errorf(err, errsize, "%s: bad header: the shape of %s is too large", path, name);
    if (bytes != t->end - t->begin) {
        char sb[128];
        return rt_errorf(err, errsize, "%s: bad header: the data_offsets of %s, [%" PRIu64 ", %"
                    PRIu64 "], hold %" PRIu64 " bytes, but %s %s needs %" PRIu64, path, name,
                    t->begin, t->end, t->end - t->begin, dtype,
                    rt_st_show_shape(t->rank, t->dim, NULL, sb, sizeof sb), bytes);
    }
    return true;
}

/* The tensors and metadata of the parsed header j (an object), into st. */
static bool read_tensors(RtSafetensors *st, const RtStSpec *spec, const Json *j, char *err,
                         size_t errsize)
{
    const char *path = st->path;
    int32_t md = member(j, 0, RT_ST_METADATA);
    size_t ndims = 0;
    for (int32_t m = j->v[0].first; m >= 0; m = j->v[m].next) {
        int32_t sh = m != md && j->v[m].kind == J_OBJECT ? member(j, m, "shape") : -1;
        ndims += sh >= 0 && j->v[sh].kind == J_ARRAY ? (size_t)j->v[sh].count : 0;
    }
    st->tensor = malloc((size_t)(j->v[0].count ? j->v[0].count : 1) * sizeof *st->tensor);
    st->dims = malloc((ndims ? ndims : 1) * sizeof *st->dims);
    if (!st->tensor || !st->dims)
        return rt_errorf(err, errsize, "%s: out of memory", path);
    uint64_t *dims = st->dims;
    for (int32_t m = j->v[0].first; m >= 0; m = j->v[m].next)
        if (m != md && !file_tensor(path, spec, j, m, &st->tensor[st->ntensor++], &dims, err, errsize))
            return false;
    qsort(st->tensor, (size_t)st->ntensor, sizeof *st->tensor, cmp_tensor);
    uint64_t total = 0;
    for (int i = 0; i < st->ntensor; i++) {
        char b1[SHOW_NAME + 4], b2[SHOW_NAME + 4];
        const RtStTensor *t = &st->tensor[i];
        if (t->begin < total)
            return rt_errorf(err, errsize, "%s: bad header: the data of %s [%" PRIu64 ", %" PRIu64 "] "
                 "overlaps that of %s [%" PRIu64 ", %" PRIu64 "]", path, rt_st_show(t->name, b1),
                 t->begin, t->end, rt_st_show(st->tensor[i - 1].name, b2), st->tensor[i - 1].begin,
                 st->tensor[i - 1].end);
        if (t->begin > total)
            return rt_errorf(err, errsize, "%s: bad header: %" PRIu64 " bytes of data before %s [%" PRIu64
                 ", %" PRIu64 "] belong to no tensor", path, t->begin - total,
                 rt_st_show(t->name, b1), t->begin, t->end);
        total = t->end;
    }
    uint64_t found = st->size - st->data_at;
    if (found < total)
        return rt_errorf(err, errsize, "%s: truncated: expected %" PRIu64 " bytes of data, found %" PRIu64,
             path, total, found);
    if (found > total)
        return rt_errorf(err, errsize, "%s: %" PRIu64 " bytes of data, but its tensors hold %" PRIu64,
             path, found, total);
    st->data_bytes = total;
    if (md < 0)
        return true;
    if (j->v[md].kind != J_OBJECT)
        return rt_errorf(err, errsize, "%s: bad header: __metadata__ is not an object", path);
    char b1[SHOW_NAME + 4];
    for (int32_t m = j->v[md].first; m >= 0; m = j->v[m].next)
        if (j->v[m].kind != J_STRING)
            return rt_errorf(err, errsize, "%s: bad header: __metadata__ entry \"%s\" is not a string",
                        path, rt_st_show(j->v[m].key, b1));
    st->meta = malloc((size_t)(2 * j->v[md].count + 1) * sizeof *st->meta);
    if (!st->meta)
        return rt_errorf(err, errsize, "%s: out of memory", path);
    for (int32_t m = j->v[md].first; m >= 0; m = j->v[m].next, st->nmeta++) {
        st->meta[2 * st->nmeta] = j->v[m].key;
        st->meta[2 * st->nmeta + 1] = j->v[m].u.str;
    }
    return true;
}

bool rt_st_read_header(RtSafetensors *st, const RtStSpec *spec, char *err, size_t errsize)
{
    const char *path = st->path;
    FILE *f = st->f;
    uint64_t size = st->size, n = 0;
    unsigned char len[8];
    if (size < 8)
        return rt_errorf(err, errsize, "%s: truncated: %" PRIu64 " byte%s, too short for the 8-byte "
                         "header length of a safetensors file", path, size, size == 1 ? "" : "s");
    if (fread(len, 1, 8, f) != 8)
        return rt_errorf(err, errsize, "%s: cannot read: %s", path, ferror(f) ? strerror(errno) : "truncated");
    for (int k = 0; k < 8; k++)
        n |= (uint64_t)len[k] << (8 * k);
    if (n > RT_ST_MAX_HEADER)
        return rt_errorf(err, errsize, "%s: not %s: header length %" PRIu64 " is over %d bytes",
                         path, spec->what, n, RT_ST_MAX_HEADER);
    if (n > size - 8)
        return rt_errorf(err, errsize, "%s: truncated: header length %" PRIu64 ", but %" PRIu64 " byte%s "
                         "follow%s it", path, n, size - 8, size - 8 == 1 ? "" : "s", size - 8 == 1 ? "s" : "");
    st->data_at = 8 + n;
    char *head = malloc(n ? n : 1);
    if (!head)
        return rt_errorf(err, errsize, "%s: out of memory for a header of %" PRIu64 " bytes", path, n);
    Json j = {0};
    bool ok = false;
    if (n && fread(head, 1, n, f) != n)
        rt_errorf(err, errsize, "%s: cannot read: %s", path, ferror(f) ? strerror(errno) : "truncated");
    else if (!json_parse(&j, head, n))
        rt_errorf(err, errsize, "%s: bad header: %s", path, j.msg);
    else if (j.v[0].kind != J_OBJECT)
        rt_errorf(err, errsize, "%s: bad header: not a JSON object", path);
    else
        ok = read_tensors(st, spec, &j, err, errsize);
    st->text = j.text;          /* the names and metadata point into it */
    free(j.v);
    free(head);
    return ok;
}

const char *rt_st_meta(const RtSafetensors *st, const char *key)
{
    for (int i = 0; i < st->nmeta; i++)
        if (strcmp(st->meta[2 * i], key) == 0)
            return st->meta[2 * i + 1];
    return NULL;
}

const RtStTensor *rt_st_find(const RtSafetensors *st, const char *name)
{
    for (int i = 0; i < st->ntensor; i++)
        if (strcmp(st->tensor[i].name, name) == 0)
            return &st->tensor[i];
    return NULL;
}

bool rt_st_read(RtSafetensors *st, uint64_t begin, uint64_t n, void *dst, char *err, size_t errsize)
{
    FILE *f = st->f;
    if (begin > st->data_bytes || n > st->data_bytes - begin)
        return rt_errorf(err, errsize, "%s: cannot read: bytes [%" PRIu64 ", %" PRIu64 ") lie outside the data",
                         st->path, begin, begin + n);
    if (n && (fseeko(f, (off_t)(st->data_at + begin), SEEK_SET) != 0 || fread(dst, 1, (size_t)n, f) != n))
        return rt_errorf(err, errsize, "%s: cannot read: %s", st->path, ferror(f) ? strerror(errno) : "truncated");
    return true;
}

bool rt_st_open(RtSafetensors *st, const char *path, char *err, size_t errsize)
{
    *st = (RtSafetensors){.path = path};
    /* Non-blocking, so that opening a FIFO does not wait for a writer. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return rt_errorf(err, errsize, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    bool stat_ok = fstat(fd, &sb) == 0;
    if (!stat_ok || !S_ISREG(sb.st_mode)) {
        int e = errno;
        close(fd);
        return rt_errorf(err, errsize, "%s: %s", path, stat_ok ? "not a regular file" : strerror(e));
    }
    FILE *f = fcntl(fd, F_SETFL, 0) == 0 ? fdopen(fd, "rb") : NULL;
    if (!f) {
        int e = errno;
        close(fd);
        return rt_errorf(err, errsize, "%s: cannot open: %s", path, strerror(e));
    }
    st->f = f;
    st->size = (uint64_t)sb.st_size;
    return true;
}

void rt_st_close(RtSafetensors *st)
{
    if (st->f)
        fclose(st->f);
    free(st->tensor);
    free(st->dims);
    free(st->meta);
    free(st->text);
    *st = (RtSafetensors){0};
}
