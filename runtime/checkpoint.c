/* Checkpoints in the safetensors format: the writer, and the loader that
 * checks a file against the model's layout before it writes a byte of the
 * caller's buffers.  Files are read through runtime/safetensors.c, which
 * checks the header and the data's tiling; the only allocation sized by
 * the file here is, once every check has passed, the data section. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "safetensors.h"

enum {
    SHOW_NAME = RT_ST_SHOW_NAME,
    SHOW_LIST = 200,            /* bytes of a list of names in a message */
    SWAP_CHUNK = 4096,          /* bytes converted at a time on big-endian hosts */
};

static const char METADATA[] = RT_ST_METADATA;

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
    if (c->model && !rt_st_utf8_valid(c->model))
        return rt_errorf(err, errsize, "%s: invalid checkpoint layout: fingerprint is not UTF-8", path);
    for (int i = 0; i < c->nparam; i++) {
        const RtParam *p = &c->param[i];
        const RtShape *s = &c->shape[i];
        if (!p->name || !*p->name || reserved(p->name) || !rt_st_utf8_valid(p->name))
            return rt_errorf(err, errsize, "%s: invalid checkpoint layout: tensor %d has an invalid "
                        "name", path, i);
        uint64_t n = 1;
        bool ok = s->rank >= 0 && (s->rank == 0 || s->dim);
        for (int k = 0; ok && k < s->rank; k++)
            ok = s->dim[k] >= 0 && rt_st_mul_u64(n, (uint64_t)s->dim[k], &n);
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
            rt_st_copy_le(tmp, e[i].data + at, chunk / esize, esize);
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
/* Append name to a ", "-separated list that stops growing at SHOW_LIST. */
static void list_add(char *list, size_t *len, const char *name)
{
    char nb[SHOW_NAME + 4];
    if (*len >= SHOW_LIST)
        return;
    int n = snprintf(list + *len, SHOW_LIST + 8 - *len, "%s%s", *len ? ", " : "",
                     rt_st_show(name, nb));
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

/* The metadata (a string-to-string object: rt_st_read_header checked it),
 * checked: the format, when given, ours; the fingerprint, when both sides
 * have one, equal. */
static bool check_metadata(const RtSafetensors *st, const RtCheckpoint *c, const char **iteration,
                           char *err, size_t errsize)
{
    const char *path = st->path, *fmt = rt_st_meta(st, "format"), *model = rt_st_meta(st, "model");
    char b1[SHOW_NAME + 4], b2[SHOW_NAME + 4];
    if (fmt && strcmp(fmt, RT_CHECKPOINT_FORMAT) != 0)
        return rt_errorf(err, errsize, "%s: format \"%s\" is not " RT_CHECKPOINT_FORMAT, path,
                    rt_st_show(fmt, b1));
    if (model && c->model && strcmp(model, c->model) != 0)
        return rt_errorf(err, errsize, "%s: saved from a different model (fingerprint %s; this "
                    "model's is %s)", path, rt_st_show(model, b1), rt_st_show(c->model, b2));
    *iteration = rt_st_meta(st, "iteration");
    return true;
}

/* The tensors of the file against the caller's layout: the same names,
 * dtype and shapes; the state when asked for.  match[i] gets the file
 * tensor of c->param[i], *state that of the state. */
static bool match_layout(const RtSafetensors *st, const RtCheckpoint *c, const Named *order, int *match,
                         int *state, char *err, size_t errsize)
{
    const char *path = st->path;
    const RtStTensor *file = st->tensor;
    int nfile = st->ntensor;
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
        if (strcmp(file[f].dtype, dtype_name(c->real)) != 0 && (f != *state || c->has_state))
            return rt_errorf(err, errsize, "%s: the checkpoint holds %s (%s) but the model is %s", path,
                        file[f].dtype, rt_st_show(file[f].name, nb), dtype_name(c->real));
    for (int i = 0; i < c->nparam; i++) {
        const RtStTensor *t = &file[match[i]];
        const RtShape *s = &c->shape[i];
        bool same = t->rank == s->rank;
        for (int k = 0; same && k < s->rank; k++)
            same = t->dim[k] == (uint64_t)s->dim[k];
        if (!same)
            return rt_errorf(err, errsize, "%s: %s has shape %s in the checkpoint, %s in the model",
                        path, c->param[i].name, rt_st_show_shape(t->rank, t->dim, NULL, s1, sizeof s1),
                        rt_st_show_shape(s->rank, NULL, s->dim, s2, sizeof s2));
    }
    if (!c->has_state)
        return true;
    if (*state < 0)
        return rt_errorf(err, errsize, "%s: holds no optimiser state (it was saved without it)", path);
    const RtStTensor *t = &file[*state];
    if (t->rank != 1 || t->dim[0] != c->nstate)
        return rt_errorf(err, errsize, "%s: the optimiser state has shape %s in the checkpoint, [%zu] "
                    "for this model's optimiser", path,
                    rt_st_show_shape(t->rank, t->dim, NULL, s1, sizeof s1), c->nstate);
    return true;
}

/* Read the checkpoint open in st into c, after checking all of it. */
static bool read_checkpoint(RtSafetensors *st, RtCheckpoint *c, char *err, size_t errsize)
{
    static const char *const dtypes[] = {"F32", "F64", NULL};
    static const RtStSpec spec = {"a checkpoint", dtypes, "a mamlc checkpoint holds F32 or F64"};
    const char *path = st->path;
    Named *order;
    if (!check_layout(path, c, &order, err, errsize))
        return false;
    bool ok = false;
    int *match = NULL;
    unsigned char *data = NULL;
    if (!rt_st_read_header(st, &spec, err, errsize))
        goto out;
    match = malloc((size_t)(c->nparam ? c->nparam : 1) * sizeof *match);
    if (!match) {
        rt_errorf(err, errsize, "%s: out of memory", path);
        goto out;
    }

    /* The file against the model. */
    const char *iteration = NULL;
    long iter = 0;
    int state;
    if (!check_metadata(st, c, &iteration, err, errsize) ||
        !match_layout(st, c, order, match, &state, err, errsize))
        goto out;
    if (c->has_state && !iteration) {
        rt_errorf(err, errsize, "%s: holds optimiser state but no iteration", path);
        goto out;
    }
    if (c->has_state && !parse_iteration(iteration, &iter)) {
        char b[SHOW_NAME + 4];
        rt_errorf(err, errsize, "%s: bad header: iteration \"%s\" is not a count", path,
             rt_st_show(iteration, b));
        goto out;
    }

    /* Only now the data: all of it, then into the caller's buffers. */
    uint64_t total = st->data_bytes;
    if (total > SIZE_MAX || !(data = malloc(total ? (size_t)total : 1))) {
        rt_errorf(err, errsize, "%s: out of memory for %" PRIu64 " bytes of data", path, total);
        goto out;
    }
    if (!rt_st_read(st, 0, total, data, err, errsize))
        goto out;
    size_t esize = rt_real_bytes(c->real);
    for (int i = 0; i < c->nparam; i++)
        rt_st_copy_le((unsigned char *)c->params + c->param[i].offset * esize,
                data + st->tensor[match[i]].begin, c->param[i].count, esize);
    if (c->has_state) {
        rt_st_copy_le(c->state, data + st->tensor[state].begin, c->nstate, esize);
        c->iteration = iter;
    }
    ok = true;
out:
    free(data);
    free(match);
    free(order);
    return ok;
}

bool rt_checkpoint_load(const char *path, RtCheckpoint *c, char *err, size_t errsize)
{
    RtSafetensors st;
    if (!rt_st_open(&st, path, err, errsize))
        return false;
    bool ok = read_checkpoint(&st, c, err, errsize);
    rt_st_close(&st);
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
