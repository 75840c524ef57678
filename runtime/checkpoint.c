/* Checkpoints in the safetensors format: the writer, a strict JSON reader
 * for the header, and the loader that checks a file against the model's
 * layout before it writes a byte of the caller's buffers.
 *
 * Everything read from a file is untrusted: the header is parsed with
 * bounded depth and a bounded number of values, every offset and size is
 * checked for overflow, and the only allocations sized by the file are the
 * header (at most RT_CHECKPOINT_MAX_HEADER bytes, and no more than the file
 * holds), its parsed values (at most MAX_VALUES) and, once every check has
 * passed, the data section. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"

enum {
    MAX_DEPTH = 16,             /* nesting of JSON values (a checkpoint needs 3) */
    MAX_VALUES = 1 << 20,       /* JSON values in one header */
    SHOW_NAME = 64,             /* bytes of a name quoted in a message */
    SHOW_DIMS = 8,              /* extents of a shape quoted in a message */
    SHOW_LIST = 200,            /* bytes of a list of names in a message */
    SWAP_CHUNK = 4096,          /* bytes converted at a time on big-endian hosts */
};

static const char METADATA[] = "__metadata__";

static const char *dtype_name(RtReal real)
{
    return real == RT_F32 ? "F32" : "F64";
}

static bool host_little_endian(void)
{
    const uint16_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

/* Copy count elements of esize bytes between host order and little-endian
 * order (the same on a little-endian host; each reversed on a big one). */
static void copy_le(void *dst, const void *src, size_t count, size_t esize)
{
    if (host_little_endian()) {
        if (count)
            memcpy(dst, src, count * esize);
        return;
    }
    unsigned char *d = dst;
    const unsigned char *s = src;
    for (size_t i = 0; i < count; i++, d += esize, s += esize)
        for (size_t k = 0; k < esize; k++)
            d[k] = s[esize - 1 - k];
}

/* *out = a * b, false on overflow. */
static bool mul_u64(uint64_t a, uint64_t b, uint64_t *out)
{
    if (b && a > UINT64_MAX / b)
        return false;
    *out = a * b;
    return true;
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

static bool utf8_valid(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s), len;
    for (size_t i = 0; i < n; i += len)
        if (!utf8_seq(p + i, n - i, &len))
            return false;
    return true;
}

/* A name or other string from a file, made safe to quote in a message:
 * control bytes become '?', and a long one is cut with "...". */
static const char *show(const char *s, char buf[SHOW_NAME + 4])
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
    bool ok = !dup || json_fail(j, j->v[obj].pos, "duplicate key \"%s\"", show(dup, buf));
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

static void json_free(Json *j)
{
    free(j->text);
    free(j->v);
}

/* ------------------------------------------------------------------------
 * The caller's layout */

static bool reserved(const char *name)
{
    return strcmp(name, METADATA) == 0 || strcmp(name, RT_CHECKPOINT_STATE) == 0;
}

/* A parameter's name and index, to sort by name. */
typedef struct {
    const char *name;
    int index;
} Named;

static int cmp_named(const void *a, const void *b)
{
    return strcmp(((const Named *)a)->name, ((const Named *)b)->name);
}

/* Check that c describes a sane layout, and give its parameters sorted by
 * name in *order (to free).  Faults here are the caller's. */
static bool check_layout(const char *path, const RtCheckpoint *c, Named **order, char *err,
                         size_t errsize)
{
    *order = NULL;
    if (c->real != RT_F32 && c->real != RT_F64)
        return rt_errorf(err, errsize, "%s: invalid checkpoint layout: unknown element type", path);
    if (c->nparam < 0 || (c->nparam > 0 && (!c->param || !c->shape)))
        return rt_errorf(err, errsize, "%s: invalid checkpoint layout: no tensor list", path);
    size_t esize = rt_real_bytes(c->real);
    if (c->nreal > SIZE_MAX / esize || c->nstate > SIZE_MAX / esize)
        return rt_errorf(err, errsize, "%s: invalid checkpoint layout: too many reals", path);
    if ((c->nreal && !c->params) || (c->has_state && c->nstate && !c->state))
        return rt_errorf(err, errsize, "%s: invalid checkpoint layout: no buffer", path);
    if (c->model && !utf8_valid(c->model))
        return rt_errorf(err, errsize, "%s: invalid checkpoint layout: fingerprint is not UTF-8", path);
    for (int i = 0; i < c->nparam; i++) {
        const RtParam *p = &c->param[i];
        const RtShape *s = &c->shape[i];
        if (!p->name || !*p->name || reserved(p->name) || !utf8_valid(p->name))
            return rt_errorf(err, errsize, "%s: invalid checkpoint layout: tensor %d has an invalid "
                        "name", path, i);
        uint64_t n = 1;
        bool ok = s->rank >= 0 && (s->rank == 0 || s->dim);
        for (int k = 0; ok && k < s->rank; k++)
            ok = s->dim[k] >= 0 && mul_u64(n, (uint64_t)s->dim[k], &n);
        if (!ok || n != p->count)
            return rt_errorf(err, errsize, "%s: invalid checkpoint layout: the shape of %s does not "
                        "hold its %zu reals", path, p->name, p->count);
        if (p->offset > c->nreal || p->count > c->nreal - p->offset)
            return rt_errorf(err, errsize, "%s: invalid checkpoint layout: %s lies outside the %zu "
                        "reals", path, p->name, c->nreal);
    }
    Named *ord = malloc((size_t)(c->nparam ? c->nparam : 1) * sizeof *ord);
    if (!ord)
        return rt_errorf(err, errsize, "%s: out of memory", path);
    for (int i = 0; i < c->nparam; i++)
        ord[i] = (Named){c->param[i].name, i};
    qsort(ord, (size_t)c->nparam, sizeof *ord, cmp_named);
    for (int i = 1; i < c->nparam; i++)
        if (strcmp(ord[i - 1].name, ord[i].name) == 0) {
            rt_errorf(err, errsize, "%s: invalid checkpoint layout: two tensors are named %s", path,
                 ord[i].name);
            free(ord);
            return false;
        }
    *order = ord;
    return true;
}

/* ------------------------------------------------------------------------
 * Writing */

typedef struct {
    char *p;
    size_t len, cap;
    bool oom;
} Buf;

static void buf_put(Buf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->cap - b->len < n + 1) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->len < n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_puts(Buf *b, const char *s)
{
    buf_put(b, s, strlen(s));
}

static void buf_u64(Buf *b, uint64_t n)
{
    char s[24];
    snprintf(s, sizeof s, "%" PRIu64, n);
    buf_puts(b, s);
}

/* A JSON string, escaped as serde_json (the reference's) escapes it. */
static void buf_json_string(Buf *b, const char *s)
{
    buf_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        const char *e = c == '"' ? "\\\"" : c == '\\' ? "\\\\" : c == '\b' ? "\\b"
                      : c == '\f' ? "\\f" : c == '\n' ? "\\n" : c == '\r' ? "\\r"
                      : c == '\t' ? "\\t" : NULL;
        char u[8];
        if (!e && c < 0x20) {
            snprintf(u, sizeof u, "\\u%04x", c);
            e = u;
        }
        if (e)
            buf_puts(b, e);
        else
            buf_put(b, s, 1);
    }
    buf_put(b, "\"", 1);
}

/* One tensor as written: a parameter, or the state (shape NULL: [count]). */
typedef struct {
    const char *name;
    const RtShape *shape;
    const unsigned char *data;
    size_t count;
} Entry;

static int cmp_entry(const void *a, const void *b)
{
    return strcmp(((const Entry *)a)->name, ((const Entry *)b)->name);
}

/* The header, padded with spaces to a multiple of 8 bytes, for the entries
 * in the order given. */
static void put_header(Buf *b, const RtCheckpoint *c, const Entry *e, int n)
{
    size_t esize = rt_real_bytes(c->real);
    buf_puts(b, "{\"__metadata__\":{\"format\":\"" RT_CHECKPOINT_FORMAT "\"");
    if (c->model) {
        buf_puts(b, ",\"model\":");
        buf_json_string(b, c->model);
    }
    if (c->has_state) {
        buf_puts(b, ",\"iteration\":\"");
        buf_u64(b, (uint64_t)c->iteration);
        buf_puts(b, "\"");
    }
    buf_puts(b, "}");
    uint64_t at = 0;
    for (int i = 0; i < n; i++) {
        buf_puts(b, ",");
        buf_json_string(b, e[i].name);
        buf_puts(b, ":{\"dtype\":\"");
        buf_puts(b, dtype_name(c->real));
        buf_puts(b, "\",\"shape\":[");
        if (e[i].shape)
            for (int k = 0; k < e[i].shape->rank; k++) {
                buf_puts(b, k ? "," : "");
                buf_u64(b, (uint64_t)e[i].shape->dim[k]);
            }
        else
            buf_u64(b, e[i].count);
        buf_puts(b, "],\"data_offsets\":[");
        buf_u64(b, at);
        at += (uint64_t)e[i].count * esize;
        buf_puts(b, ",");
        buf_u64(b, at);
        buf_puts(b, "]}");
    }
    buf_puts(b, "}");
    while (!b->oom && b->len % 8)
        buf_puts(b, " ");
}

/* Write the entries' data, little-endian. */
static bool put_data(FILE *f, const RtCheckpoint *c, const Entry *e, int n)
{
    size_t esize = rt_real_bytes(c->real);
    for (int i = 0; i < n; i++) {
        size_t bytes = e[i].count * esize;
        if (host_little_endian()) {
            if (bytes && fwrite(e[i].data, 1, bytes, f) != bytes)
                return false;
            continue;
        }
        unsigned char tmp[SWAP_CHUNK];
        for (size_t at = 0; at < bytes; at += sizeof tmp) {
            size_t chunk = bytes - at < sizeof tmp ? bytes - at : sizeof tmp;
            copy_le(tmp, e[i].data + at, chunk / esize, esize);
            if (fwrite(tmp, 1, chunk, f) != chunk)
                return false;
        }
    }
    return true;
}

bool rt_checkpoint_save(const char *path, const RtCheckpoint *c, char *err, size_t errsize)
{
    Named *order;
    if (!check_layout(path, c, &order, err, errsize))
        return false;
    if (c->has_state && c->iteration < 0) {
        free(order);
        return rt_errorf(err, errsize, "%s: invalid checkpoint layout: iteration %ld", path,
                    c->iteration);
    }
    size_t esize = rt_real_bytes(c->real);
    int n = c->nparam + (c->has_state ? 1 : 0);
    Entry *e = malloc((size_t)(n ? n : 1) * sizeof *e);
    if (!e) {
        free(order);
        return rt_errorf(err, errsize, "%s: out of memory", path);
    }
    for (int i = 0; i < c->nparam; i++) {
        const RtParam *p = &c->param[order[i].index];
        e[i] = (Entry){p->name, &c->shape[order[i].index],
                       (const unsigned char *)c->params + p->offset * esize, p->count};
    }
    if (c->has_state)
        e[c->nparam] = (Entry){RT_CHECKPOINT_STATE, NULL, c->state, c->nstate};
    free(order);
    qsort(e, (size_t)n, sizeof *e, cmp_entry);

    Buf h = {0};
    put_header(&h, c, e, n);
    if (h.oom || h.len > RT_CHECKPOINT_MAX_HEADER) {
        free(h.p);
        free(e);
        return rt_errorf(err, errsize, h.oom ? "%s: out of memory" : "%s: the header would be over "
                    "%d bytes, more than readers accept", path, RT_CHECKPOINT_MAX_HEADER);
    }
    unsigned char len[8];
    for (int k = 0; k < 8; k++)
        len[k] = (unsigned char)((uint64_t)h.len >> (8 * k));

    RtReplace r;
    if (!rt_replace_begin(&r, path)) {
        int e0 = errno;
        free(h.p);
        free(e);
        return rt_errorf(err, errsize, "%s: cannot create a file beside it: %s", path, strerror(e0));
    }
    bool ok = fwrite(len, 1, 8, r.f) == 8 && fwrite(h.p, 1, h.len, r.f) == h.len && put_data(r.f, c, e, n);
    ok = rt_replace_end(&r, ok);
    if (!ok)
        rt_errorf(err, errsize, "%s: cannot write: %s", path, strerror(errno));
    free(h.p);
    free(e);
    return ok;
}

/* ------------------------------------------------------------------------
 * Reading */

/* One tensor of a file, as its header describes it. */
typedef struct {
    const char *name;
    int32_t shape;              /* the array value of its shape */
    RtReal real;
    uint64_t begin, end;        /* data_offsets */
} FileTensor;

static int cmp_file_tensor(const void *a, const void *b)
{
    const FileTensor *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return 0;
}

/* "[40, 1]" for a shape in a file, or (file NULL) for s. */
static const char *show_shape(const Json *j, int32_t arr, const RtShape *s, char *buf,
                              size_t size)
{
    size_t len = 0;
    int n = j ? j->v[arr].count : s->rank;
    int32_t m = j ? j->v[arr].first : -1;
    len += (size_t)snprintf(buf, size, "[");
    for (int k = 0; k < n && len < size; k++) {
        if (k == SHOW_DIMS) {
            len += (size_t)snprintf(buf + len, size - len, ", ...");
            break;
        }
        uint64_t d = j ? j->v[m].u.num : (uint64_t)s->dim[k];
        len += (size_t)snprintf(buf + len, size - len, "%s%" PRIu64, k ? ", " : "", d);
        if (j)
            m = j->v[m].next;
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

/* The tensor named by member m: dtype, shape and data_offsets, checked
 * for form and for agreeing with each other. */
static bool file_tensor(const char *path, const Json *j, int32_t m, FileTensor *t, char *err,
                        size_t errsize)
{
    char nb[SHOW_NAME + 4];
    const char *name = show(j->v[m].key, nb);
    if (j->v[m].kind != J_OBJECT)
        return rt_errorf(err, errsize, "%s: bad header: tensor %s is not an object", path, name);
    for (int32_t k = j->v[m].first; k >= 0; k = j->v[k].next) {
        const char *key = j->v[k].key;
        if (strcmp(key, "dtype") && strcmp(key, "shape") && strcmp(key, "data_offsets")) {
            char kb[SHOW_NAME + 4];
            return rt_errorf(err, errsize, "%s: bad header: tensor %s has an unknown field \"%s\"",
                        path, name, show(key, kb));
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
    if (strcmp(dtype, "F32") && strcmp(dtype, "F64")) {
        char db[SHOW_NAME + 4];
        return rt_errorf(err, errsize, "%s: tensor %s holds %s; a mamlc checkpoint holds F32 or F64",
                    path, name, show(dtype, db));
    }
    t->name = j->v[m].key;
    t->real = strcmp(dtype, "F32") == 0 ? RT_F32 : RT_F64;
    t->shape = sh;
    if (j->v[sh].kind != J_ARRAY)
        return rt_errorf(err, errsize, "%s: bad header: the shape of %s is not an array", path, name);
    uint64_t numel = 1;
    for (int32_t d = j->v[sh].first; d >= 0; d = j->v[d].next) {
        if (j->v[d].kind != J_INT)
            return rt_errorf(err, errsize, "%s: bad header: the shape of %s holds a non-integer",
                        path, name);
        if (!mul_u64(numel, j->v[d].u.num, &numel))
            return rt_errorf(err, errsize, "%s: bad header: the shape of %s is too large", path,
                        name);
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
    if (!mul_u64(numel, rt_real_bytes(t->real), &bytes))
        return rt_errorf(err, errsize, "%s: bad header: the shape of %s is too large", path, name);
    if (bytes != t->end - t->begin) {
        char sb[128];
        return rt_errorf(err, errsize, "%s: bad header: the data_offsets of %s, [%" PRIu64 ", %"
                    PRIu64 "], hold %" PRIu64 " bytes, but %s %s needs %" PRIu64, path, name,
                    t->begin, t->end, t->end - t->begin, dtype,
                    show_shape(j, sh, NULL, sb, sizeof sb), bytes);
    }
    return true;
}

/* Append name to a ", "-separated list that stops growing at SHOW_LIST. */
static void list_add(char *list, size_t *len, const char *name)
{
    char nb[SHOW_NAME + 4];
    if (*len >= SHOW_LIST)
        return;
    int n = snprintf(list + *len, SHOW_LIST + 8 - *len, "%s%s", *len ? ", " : "",
                     show(name, nb));
    *len += (size_t)n;
    if (*len >= SHOW_LIST) {
        memcpy(list + SHOW_LIST, ", ...", 6);
        *len = SHOW_LIST;
    }
}

/* "iteration" metadata: a decimal in [0, LONG_MAX]. */
static bool parse_iteration(const char *s, long *out)
{
    if (!*s || (s[0] == '0' && s[1]))
        return false;
    long n = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || n > (LONG_MAX - (*s - '0')) / 10)
            return false;
        n = n * 10 + (*s - '0');
    }
    *out = n;
    return true;
}

/* The metadata, checked: a string-to-string object; the format, when
 * given, ours; the fingerprint, when both sides have one, equal. */
static bool check_metadata(const char *path, const Json *j, int32_t md, const RtCheckpoint *c,
                           const char **iteration, char *err, size_t errsize)
{
    *iteration = NULL;
    if (md < 0)
        return true;
    if (j->v[md].kind != J_OBJECT)
        return rt_errorf(err, errsize, "%s: bad header: __metadata__ is not an object", path);
    char b1[SHOW_NAME + 4], b2[SHOW_NAME + 4];
    for (int32_t m = j->v[md].first; m >= 0; m = j->v[m].next)
        if (j->v[m].kind != J_STRING)
            return rt_errorf(err, errsize, "%s: bad header: __metadata__ entry \"%s\" is not a string",
                        path, show(j->v[m].key, b1));
    int32_t fmt = member(j, md, "format"), model = member(j, md, "model"),
            it = member(j, md, "iteration");
    if (fmt >= 0 && strcmp(j->v[fmt].u.str, RT_CHECKPOINT_FORMAT) != 0)
        return rt_errorf(err, errsize, "%s: format \"%s\" is not " RT_CHECKPOINT_FORMAT, path,
                    show(j->v[fmt].u.str, b1));
    if (model >= 0 && c->model && strcmp(j->v[model].u.str, c->model) != 0)
        return rt_errorf(err, errsize, "%s: saved from a different model (fingerprint %s; this "
                    "model's is %s)", path, show(j->v[model].u.str, b1), show(c->model, b2));
    if (it >= 0)
        *iteration = j->v[it].u.str;
    return true;
}

/* The tensors of the file against the caller's layout: the same names,
 * dtype and shapes; the state when asked for.  file[] is sorted by offset;
 * match[i] gets the file tensor of c->param[i], *state that of the state. */
static bool match_layout(const char *path, const Json *j, const FileTensor *file, int nfile,
                         const RtCheckpoint *c, const Named *order, int *match, int *state,
                         char *err, size_t errsize)
{
    char extra[SHOW_LIST + 8] = "", missing[SHOW_LIST + 8] = "";
    size_t nextra = 0, nmissing = 0;
    *state = -1;
    for (int i = 0; i < c->nparam; i++)
        match[i] = -1;
    for (int f = 0; f < nfile; f++) {
        if (strcmp(file[f].name, RT_CHECKPOINT_STATE) == 0) {
            *state = f;
            continue;
        }
        int lo = 0, hi = c->nparam;       /* binary search of the sorted names */
        while (lo < hi) {
            int mid = lo + (hi - lo) / 2;
            if (strcmp(order[mid].name, file[f].name) < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo < c->nparam && strcmp(order[lo].name, file[f].name) == 0)
            match[order[lo].index] = f;
        else
            list_add(extra, &nextra, file[f].name);
    }
    for (int i = 0; i < c->nparam; i++)
        if (match[order[i].index] < 0)
            list_add(missing, &nmissing, order[i].name);
    if (nextra || nmissing)
        return rt_errorf(err, errsize, "%s: %s%s%s%s%s", path,
                    nmissing ? "tensors missing from the checkpoint: " : "", missing,
                    nmissing && nextra ? "; " : "",
                    nextra ? "tensors in the checkpoint but not in the model: " : "", extra);
    char nb[SHOW_NAME + 4], s1[128], s2[128];
    for (int f = 0; f < nfile; f++)
        if (file[f].real != c->real && (f != *state || c->has_state))
            return rt_errorf(err, errsize, "%s: the checkpoint holds %s (%s) but the model is %s", path,
                        dtype_name(file[f].real), show(file[f].name, nb), dtype_name(c->real));
    for (int i = 0; i < c->nparam; i++) {
        const FileTensor *t = &file[match[i]];
        const RtShape *s = &c->shape[i];
        bool same = j->v[t->shape].count == s->rank;
        int32_t d = j->v[t->shape].first;
        for (int k = 0; same && k < s->rank; k++, d = j->v[d].next)
            same = j->v[d].u.num == (uint64_t)s->dim[k];
        if (!same)
            return rt_errorf(err, errsize, "%s: %s has shape %s in the checkpoint, %s in the model",
                        path, c->param[i].name, show_shape(j, t->shape, NULL, s1, sizeof s1),
                        show_shape(NULL, 0, s, s2, sizeof s2));
    }
    if (!c->has_state)
        return true;
    if (*state < 0)
        return rt_errorf(err, errsize, "%s: holds no optimiser state (it was saved without it)", path);
    const FileTensor *t = &file[*state];
    if (j->v[t->shape].count != 1 || j->v[j->v[t->shape].first].u.num != c->nstate)
        return rt_errorf(err, errsize, "%s: the optimiser state has shape %s in the checkpoint, [%zu] "
                    "for this model's optimiser", path,
                    show_shape(j, t->shape, NULL, s1, sizeof s1), c->nstate);
    return true;
}

/* Read the checkpoint of `size` bytes in f (named path in messages) into c,
 * after checking all of it. */
static bool read_checkpoint(const char *path, FILE *f, uint64_t size, RtCheckpoint *c,
                            char *err, size_t errsize)
{
    Named *order;
    if (!check_layout(path, c, &order, err, errsize))
        return false;
    bool ok = false;
    char *head = NULL;
    Json j = {0};
    FileTensor *file = NULL;
    int *match = NULL;
    unsigned char *data = NULL;
    unsigned char len[8];
    uint64_t n = 0;

    if (size < 8) {
        rt_errorf(err, errsize, "%s: truncated: %" PRIu64 " byte%s, too short for the 8-byte header "
             "length of a safetensors file", path, size, size == 1 ? "" : "s");
        goto out;
    }
    if (fread(len, 1, 8, f) != 8) {
        rt_errorf(err, errsize, "%s: cannot read: %s", path, ferror(f) ? strerror(errno) : "truncated");
        goto out;
    }
    for (int k = 0; k < 8; k++)
        n |= (uint64_t)len[k] << (8 * k);
    if (n > RT_CHECKPOINT_MAX_HEADER) {
        rt_errorf(err, errsize, "%s: not a checkpoint: header length %" PRIu64 " is over %d bytes",
             path, n, RT_CHECKPOINT_MAX_HEADER);
        goto out;
    }
    if (n > size - 8) {
        rt_errorf(err, errsize, "%s: truncated: header length %" PRIu64 ", but %" PRIu64 " byte%s "
             "follow%s it", path, n, size - 8, size - 8 == 1 ? "" : "s", size - 8 == 1 ? "s" : "");
        goto out;
    }
    head = malloc(n ? n : 1);
    if (!head) {
        rt_errorf(err, errsize, "%s: out of memory for a header of %" PRIu64 " bytes", path, n);
        goto out;
    }
    if (n && fread(head, 1, n, f) != n) {
        rt_errorf(err, errsize, "%s: cannot read: %s", path, ferror(f) ? strerror(errno) : "truncated");
        goto out;
    }
    if (!json_parse(&j, head, n)) {
        rt_errorf(err, errsize, "%s: bad header: %s", path, j.msg);
        goto out;
    }
    if (j.v[0].kind != J_OBJECT) {
        rt_errorf(err, errsize, "%s: bad header: not a JSON object", path);
        goto out;
    }

    /* Every tensor, well-formed, and their data tiling [0, total). */
    int32_t md = member(&j, 0, METADATA);
    int nfile = 0;
    file = malloc((size_t)(j.v[0].count ? j.v[0].count : 1) * sizeof *file);
    match = malloc((size_t)(c->nparam ? c->nparam : 1) * sizeof *match);
    if (!file || !match) {
        rt_errorf(err, errsize, "%s: out of memory", path);
        goto out;
    }
    for (int32_t m = j.v[0].first; m >= 0; m = j.v[m].next)
        if (m != md && !file_tensor(path, &j, m, &file[nfile++], err, errsize))
            goto out;
    qsort(file, (size_t)nfile, sizeof *file, cmp_file_tensor);
    uint64_t total = 0;
    for (int i = 0; i < nfile; i++) {
        char b1[SHOW_NAME + 4], b2[SHOW_NAME + 4];
        const FileTensor *t = &file[i];
        if (t->begin < total) {
            rt_errorf(err, errsize, "%s: bad header: the data of %s [%" PRIu64 ", %" PRIu64 "] "
                 "overlaps that of %s [%" PRIu64 ", %" PRIu64 "]", path, show(t->name, b1),
                 t->begin, t->end, show(file[i - 1].name, b2), file[i - 1].begin,
                 file[i - 1].end);
            goto out;
        }
        if (t->begin > total) {
            rt_errorf(err, errsize, "%s: bad header: %" PRIu64 " bytes of data before %s [%" PRIu64
                 ", %" PRIu64 "] belong to no tensor", path, t->begin - total,
                 show(t->name, b1), t->begin, t->end);
            goto out;
        }
        total = t->end;
    }
    uint64_t found = size - 8 - n;
    if (found < total) {
        rt_errorf(err, errsize, "%s: truncated: expected %" PRIu64 " bytes of data, found %" PRIu64,
             path, total, found);
        goto out;
    }
    if (found > total) {
        rt_errorf(err, errsize, "%s: %" PRIu64 " bytes of data, but its tensors hold %" PRIu64,
             path, found, total);
        goto out;
    }

    /* The file against the model. */
    const char *iteration;
    long iter = 0;
    int state;
    if (!check_metadata(path, &j, md, c, &iteration, err, errsize) ||
        !match_layout(path, &j, file, nfile, c, order, match, &state, err, errsize))
        goto out;
    if (c->has_state && !iteration) {
        rt_errorf(err, errsize, "%s: holds optimiser state but no iteration", path);
        goto out;
    }
    if (c->has_state && !parse_iteration(iteration, &iter)) {
        char b[SHOW_NAME + 4];
        rt_errorf(err, errsize, "%s: bad header: iteration \"%s\" is not a count", path,
             show(iteration, b));
        goto out;
    }

    /* Only now the data: all of it, then into the caller's buffers. */
    if (total > SIZE_MAX || !(data = malloc(total ? (size_t)total : 1))) {
        rt_errorf(err, errsize, "%s: out of memory for %" PRIu64 " bytes of data", path, total);
        goto out;
    }
    if (total && fread(data, 1, (size_t)total, f) != total) {
        rt_errorf(err, errsize, "%s: cannot read: %s", path, ferror(f) ? strerror(errno) : "truncated");
        goto out;
    }
    size_t esize = rt_real_bytes(c->real);
    for (int i = 0; i < c->nparam; i++)
        copy_le((unsigned char *)c->params + c->param[i].offset * esize,
                data + file[match[i]].begin, c->param[i].count, esize);
    if (c->has_state) {
        copy_le(c->state, data + file[state].begin, c->nstate, esize);
        c->iteration = iter;
    }
    ok = true;
out:
    free(data);
    free(match);
    free(file);
    json_free(&j);
    free(head);
    free(order);
    return ok;
}

bool rt_checkpoint_load(const char *path, RtCheckpoint *c, char *err, size_t errsize)
{
    /* Non-blocking, so that opening a FIFO does not wait for a writer. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return rt_errorf(err, errsize, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    bool stat_ok = fstat(fd, &st) == 0;
    if (!stat_ok || !S_ISREG(st.st_mode)) {
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
    bool ok = read_checkpoint(path, f, (uint64_t)st.st_size, c, err, errsize);
    fclose(f);
    return ok;
}

/* ------------------------------------------------------------------------
 * Fingerprints: FNV-1a (64 bits) of a text describing the layout. */

static uint64_t fnv1a(uint64_t h, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= UINT64_C(0x100000001b3);
    }
    return h;
}

void rt_checkpoint_fingerprint(const RtCheckpoint *c, const char *extra,
                               char out[RT_FINGERPRINT_SIZE])
{
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    h = fnv1a(h, dtype_name(c->real), 3);
    for (int i = 0; i < c->nparam; i++) {
        char dims[24];
        h = fnv1a(h, "\n", 1);
        h = fnv1a(h, c->param[i].name, strlen(c->param[i].name));
        h = fnv1a(h, "[", 1);
        for (int k = 0; k < c->shape[i].rank; k++) {
            int len = snprintf(dims, sizeof dims, "%s%d", k ? "," : "", c->shape[i].dim[k]);
            h = fnv1a(h, dims, (size_t)len);
        }
        h = fnv1a(h, "]", 1);
    }
    if (extra) {
        h = fnv1a(h, "\n\n", 2);
        h = fnv1a(h, extra, strlen(extra));
    }
    snprintf(out, RT_FINGERPRINT_SIZE, "fnv1a64:%016" PRIx64, h);
}
