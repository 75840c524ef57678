/* Buffer planning: accesses for every value, arena offsets by linear scan.
 * See plan.h for the model. */
#include "plan.h"
#include "backend.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define BE_ALIGN 64

BeAccess be_access_dense(IrType t, BeBase base, int index, int64_t byte_off)
{
    BeAccess a;
    memset(&a, 0, sizeof a);
    a.base = base;
    a.dtype = t.dtype;
    a.index = index;
    a.byte_off = byte_off;
    a.rank = t.rank;
    int64_t s = 1;
    for (int k = t.rank - 1; k >= 0; k--) {
        a.stride[k] = s;
        s *= t.dim[k];
    }
    return a;
}

/* An access whose every element is the same one (a constant or a register):
 * the strides do not matter, so they are all zero. */
static BeAccess access_splat(const BeAccess *from, IrType t)
{
    BeAccess a = *from;
    a.dtype = t.dtype;
    a.rank = t.rank;
    memset(a.stride, 0, sizeof a.stride);
    return a;
}

/* BROADCAST: NumPy rules, the operand's dims aligned to the trailing dims. */
static BeAccess access_broadcast(const BeAccess *x, IrType xt, IrType t)
{
    BeAccess a = *x;
    a.rank = t.rank;
    int lead = t.rank - xt.rank;
    for (int i = 0; i < t.rank; i++) {
        int k = i - lead;
        if (k < 0 || (xt.dim[k] == 1 && t.dim[i] != 1))
            a.stride[i] = 0;
        else
            a.stride[i] = x->stride[k];
    }
    return a;
}

/* TRANSPOSE: result dim i is operand dim perm[i]. */
static BeAccess access_transpose(const BeAccess *x, const int *perm, int rank)
{
    BeAccess a = *x;
    for (int i = 0; i < rank; i++)
        a.stride[i] = x->stride[perm[i]];
    return a;
}

/* RESHAPE as a view: the new dims are grouped against the old ones (extent-1
 * dims dropped) so that each group covers the same elements; a group of old
 * dims must step as one dense run for its new dims to be affine.  Returns
 * false when some group does not, and the reshape needs a copy. */
static bool access_reshape(const BeAccess *x, IrType xt, IrType t, BeAccess *out)
{
    int od[IR_MAX_RANK];
    int64_t os[IR_MAX_RANK];
    int on = 0;
    for (int k = 0; k < xt.rank; k++) {
        if (xt.dim[k] != 1) {
            od[on] = xt.dim[k];
            os[on] = x->stride[k];
            on++;
        }
    }
    BeAccess a = *x;
    a.rank = t.rank;
    memset(a.stride, 0, sizeof a.stride);
    int oi = 0, ni = 0;
    while (oi < on && ni < t.rank) {
        if (t.dim[ni] == 1) {
            ni++;
            continue;
        }
        int oj = oi + 1, nj = ni + 1;
        int64_t op = od[oi], np = t.dim[ni];
        while (op != np) {
            if (np < op)
                np *= t.dim[nj++];
            else
                op *= od[oj++];
        }
        for (int k = oi; k < oj - 1; k++)
            if (os[k] != od[k + 1] * os[k + 1])
                return false;
        int64_t s = os[oj - 1];
        for (int k = nj - 1; k >= ni; k--) {
            a.stride[k] = t.dim[k] == 1 ? 0 : s;
            s *= t.dim[k];
        }
        oi = oj;
        ni = nj;
    }
    *out = a;
    return true;
}

/* --- arena space: a sorted list of free blocks below the high-water mark --- */

typedef struct {
    int64_t off, size;
} Block;

typedef struct {
    Block *free;        /* sorted by offset, never adjacent */
    int nfree;
    int64_t top;        /* high-water mark */
} Space;

static int64_t space_alloc(Space *s, int64_t size)
{
    int best = -1;
    for (int i = 0; i < s->nfree; i++)
        if (s->free[i].size >= size && (best < 0 || s->free[i].size < s->free[best].size))
            best = i;
    if (best >= 0) {
        int64_t off = s->free[best].off;
        s->free[best].off += size;
        s->free[best].size -= size;
        if (s->free[best].size == 0) {
            memmove(&s->free[best], &s->free[best + 1], (size_t)(s->nfree - best - 1) * sizeof(Block));
            s->nfree--;
        }
        return off;
    }
    /* A free block ending at the top grows instead of a fresh one. */
    if (s->nfree > 0) {
        Block *last = &s->free[s->nfree - 1];
        if (last->off + last->size == s->top) {
            int64_t off = last->off;
            s->top = off + size;
            s->nfree--;
            return off;
        }
    }
    int64_t off = s->top;
    s->top += size;
    return off;
}

static void space_free(Space *s, int64_t off, int64_t size)
{
    int i = 0;
    while (i < s->nfree && s->free[i].off < off)
        i++;
    bool prev = i > 0 && s->free[i - 1].off + s->free[i - 1].size == off;
    bool next = i < s->nfree && off + size == s->free[i].off;
    if (prev && next) {
        s->free[i - 1].size += size + s->free[i].size;
        memmove(&s->free[i], &s->free[i + 1], (size_t)(s->nfree - i - 1) * sizeof(Block));
        s->nfree--;
    } else if (prev) {
        s->free[i - 1].size += size;
    } else if (next) {
        s->free[i].off = off;
        s->free[i].size += size;
    } else {
        memmove(&s->free[i + 1], &s->free[i], (size_t)(s->nfree - i) * sizeof(Block));
        s->free[i].off = off;
        s->free[i].size = size;
        s->nfree++;
    }
}

static int64_t buffer_bytes(IrType t)
{
    int64_t b = ir_numel(t) * (int64_t)ir_dtype_size(t.dtype);
    return (b + BE_ALIGN - 1) / BE_ALIGN * BE_ALIGN;
}

/* Scratch sizes saturate here: far beyond any memory, and far from
 * overflowing int64_t when added up. */
#define BE_SCRATCH_CAP ((int64_t)1 << 50)

/* a * b for a, b >= 0, saturating at BE_SCRATCH_CAP */
static int64_t sat_mul(int64_t a, int64_t b)
{
    return b && a > BE_SCRATCH_CAP / b ? BE_SCRATCH_CAP : a * b;
}

/* bytes rounded up to BE_ALIGN */
static int64_t aligned(int64_t bytes)
{
    return (bytes + BE_ALIGN - 1) / BE_ALIGN * BE_ALIGN;
}

BeConvScratch be_conv_scratch(const IrFunc *f, const IrNode *n)
{
    /* x [N,C,H,W], w [O,C,KH,KW], y [N,O,Ho,Wo], whichever two are operands */
    IrType a = f->node[n->arg[0]].type, b = f->node[n->arg[1]].type;
    IrType x = n->op == OP_CONV2D_GRAD_X ? n->type : a;
    IrType y = n->op == OP_CONV2D ? n->type : n->op == OP_CONV2D_GRAD_X ? a : b;
    IrType w = n->op == OP_CONV2D_GRAD_W ? n->type : b;
    int64_t size = (int64_t)ir_dtype_size(n->type.dtype), pad = n->list[IR_CONV_PAD];
    int64_t stride = n->list[IR_CONV_STRIDE];
    int64_t k = (int64_t)w.dim[1] * w.dim[2] * w.dim[3], p = (int64_t)y.dim[2] * y.dim[3], o = w.dim[0];
    int64_t hp = x.dim[2] + 2 * pad, wp = x.dim[3] + 2 * pad;
    BeConvScratch s = {0};
    s.direct = !pad || (hp <= IR_MAX_DIM && wp <= IR_MAX_DIM && sat_mul(sat_mul(x.dim[1], hp), wp) <= IR_MAX_NUMEL);
    /* g of conv2d_grad_x by phases: read at rows qh - jh for dx rows h =
     * stride*qh + rh - pad < H and kernel rows kh = rh + stride*jh < KH */
    s.gpad_top = (w.dim[2] + stride - 1) / stride - 1;
    s.gpad_left = (w.dim[3] + stride - 1) / stride - 1;
    int64_t qh = (x.dim[2] - 1 + pad) / stride + 1, qw = (x.dim[3] - 1 + pad) / stride + 1;
    s.gpad_h = (qh > y.dim[2] ? qh : y.dim[2]) + s.gpad_top;
    s.gpad_w = (qw > y.dim[3] ? qw : y.dim[3]) + s.gpad_left;
    s.phased = n->op == OP_CONV2D_GRAD_X && stride * stride <= BE_CONV_MAX_PHASES && s.gpad_h <= IR_MAX_DIM &&
               s.gpad_w <= IR_MAX_DIM && sat_mul(sat_mul(o, s.gpad_h), s.gpad_w) <= IR_MAX_NUMEL;
    s.w = 0;
    s.x = aligned(sat_mul(sat_mul(o, k), size));
    s.g = s.x + aligned(sat_mul(sat_mul(k, p), size));
    s.pad = s.g + aligned(sat_mul(sat_mul(o, p), size));
    s.gpad = s.pad + (s.direct && pad ? aligned(sat_mul(sat_mul(sat_mul(x.dim[1], hp), wp), size)) : 0);
    s.bytes = s.gpad + (s.phased ? aligned(sat_mul(sat_mul(sat_mul(o, s.gpad_h), s.gpad_w), size)) : 0);
    return s;
}

int be_tile_cols(DType dt) { return 64 / (int)ir_dtype_size(dt); }

int be_vector_lanes(DType dt) { return 32 / (int)ir_dtype_size(dt); }

int64_t be_tile_pad(int64_t n, DType dt)
{
    int64_t nr = be_tile_cols(dt), full = n / nr * nr, w = 1;
    while (w < n - full)
        w *= 2;
    return full + (n > full ? w : 0);
}

/* The cost a term of one column of tiles of width w over m rows. */
static double tile_column_cost(int64_t m, int64_t w, int64_t vl)
{
    double v = (double)((w + vl - 1) / vl), rem = (double)(m % BE_TILE_ROWS);
    return (double)(m / BE_TILE_ROWS) * fmax(BE_TILE_ROWS * v / 2, 4) + (rem ? fmax(rem * v / 2, 4) : 0);
}

double be_gemm_cost(int64_t m, int64_t n, int64_t kd, bool scattered, bool accumulate, bool padded, DType dt)
{
    int64_t vl = be_vector_lanes(dt), nr = be_tile_cols(dt), j0 = n / nr * nr;
    double per_term = (double)(n / nr) * tile_column_cost(m, nr, vl);
    if (padded && n > j0)
        per_term += tile_column_cost(m, be_tile_pad(n, dt) - j0, vl);
    for (int64_t w = nr / 2; !padded && w >= 1; w /= 2) {
        per_term += (double)((n - j0) / w) * tile_column_cost(m, w, vl);
        j0 += (n - j0) / w * w;
    }
    double stores = (double)m * (scattered ? (double)n : (double)((n + vl - 1) / vl)) * (accumulate ? 2 : 1);
    return per_term * (double)kd + stores;
}

static bool in_memory(const BeAccess *a)
{
    return a->base == BE_INPUT || a->base == BE_OUTPUT || a->base == BE_ARENA;
}

/* A rough cost, in be_gemm_cost's cycles, of an m x n product of kd terms
 * as dot products along k (be_matmul_plan's `dot`): tiles of one row by vl
 * columns, whose step of vl terms takes vl multiply-adds and vl + 1 vector
 * loads (two a cycle), and at least the latency, 4 cycles; then about 12
 * cycles of shuffles and adds a tile, and the stores. */
static double dot_cost(int64_t m, int64_t n, int64_t kd, bool scattered, DType dt)
{
    int64_t vl = be_vector_lanes(dt), tiles = m * ((n + vl - 1) / vl);
    double step = (double)(vl + 1) / 2 > 4 ? (double)(vl + 1) / 2 : 4;
    double stores = (double)m * (scattered ? (double)n : (double)((n + vl - 1) / vl));
    return (double)tiles * ((double)((kd + vl - 1) / vl) * step + 12) + stores;
}

BeMatmulPlan be_matmul_plan(IrType c, const BeAccess *a, IrType at, const BeAccess *b, IrType bt)
{
    int64_t m = at.dim[0], k = at.dim[1], n = bt.dim[1];
    /* the vector operand: b's rows (stride b->stride[1]) or a's columns (a->stride[0]) */
    bool dense_b = !in_memory(b) || b->stride[1] == 0 || b->stride[1] == 1;
    bool dense_a = !in_memory(a) || a->stride[0] == 0 || a->stride[0] == 1;
    DType dt = c.dtype;
    BeMatmulPlan p = {.swap = false, .pack = true};
    double best = be_gemm_cost(m, n, k, false, false, true, dt) + (double)(k * be_tile_pad(n, dt));
    double cost = be_gemm_cost(n, m, k, n > 1, false, true, dt) + (double)(k * be_tile_pad(m, dt));
    if (cost < best)
        p = (BeMatmulPlan){.swap = true, .pack = true}, best = cost;
    cost = be_gemm_cost(m, n, k, false, false, false, dt);
    if (dense_b && cost <= best)
        p = (BeMatmulPlan){.swap = false, .pack = false}, best = cost;
    cost = be_gemm_cost(n, m, k, n > 1, false, false, dt);
    if (dense_a && cost < best)
        p = (BeMatmulPlan){.swap = true, .pack = false}, best = cost;
    /* dot products only where clearly cheaper: the estimates are rough */
    int64_t vl = be_vector_lanes(dt);
    if (in_memory(a) && in_memory(b) && a->stride[1] == 1 && b->stride[0] == 1 && k >= 2 * vl) {
        double d = dot_cost(m, n, k, false, dt), ds = dot_cost(n, m, k, m > 1, dt);
        if (d < 0.8 * best || ds < 0.8 * best)
            return (BeMatmulPlan){.dot = true, .swap = ds < d};
    }
    int64_t size = (int64_t)ir_dtype_size(dt);
    if (p.pack)
        p.bytes = aligned(sat_mul(sat_mul(k, be_tile_pad(p.swap ? m : n, dt)), size));
    /* the scalar operand: a's rows (k stride a->stride[1]) or b's columns (b->stride[0]) */
    const BeAccess *s = p.swap ? b : a;
    int64_t ks = s->stride[p.swap ? 0 : 1], rows = p.swap ? n : m, cols = p.swap ? m : n;
    if (in_memory(s) && ks != 0 && ks != 1 && k > 1 && cols >= BE_PACK_ROWS_TILES * be_tile_cols(dt)) {
        p.pack_rows = true;
        p.rows_at = p.bytes;
        p.bytes += aligned(sat_mul(sat_mul(rows, k), size));
    }
    return p;
}

/* last[root[x]] = at for every operand x the loop of v reads (through its
 * fused operands, which have no buffer). */
static void read_leaves(const IrFunc *f, const BePlan *p, ValueId v, int at, const int *root, int *last)
{
    const IrNode *nd = &f->node[v];
    for (int a = 0; a < ir_op_info[nd->op].arity; a++) {
        ValueId x = nd->arg[a];
        if (p->fused_into[x] >= 0)
            read_leaves(f, p, x, at, root, last);
        else if (root[x] >= 0)
            last[root[x]] = at;
    }
}

/* Values below this size are not computed in place: they stay in the L2
 * anyway, and a value function computing in place is one of its own (the
 * conv net's 247 functions would be 282, and its compile time longer). */
enum { IN_PLACE_BYTES = 256 << 10 };

/* Whether access a walks a value of type t as a dense buffer of t does
 * (its strides; its offset aside). */
static bool dense_strides(const BeAccess *a, IrType t)
{
    BeAccess dense = be_access_dense(t, BE_ARENA, 0, 0);
    return !memcmp(a->stride, dense.stride, sizeof(int64_t) * (size_t)t.rank);
}

/* leaf[*n ..] <- the operands the loop of v reads, through its fused
 * operands (at most BE_FUSE_LEAVES: fused_leaves); false if a product is
 * fused among them. */
static bool loop_leaves(const IrFunc *f, const BePlan *p, ValueId v, ValueId *leaf, int *n)
{
    const IrNode *nd = &f->node[v];
    for (int a = 0; a < ir_op_info[nd->op].arity; a++) {
        ValueId x = nd->arg[a];
        if (p->fused_into[x] < 0)
            leaf[(*n)++] = x;
        else if (f->node[x].op == OP_MATMUL || !loop_leaves(f, p, x, leaf, n))
            return false;
    }
    return true;
}

/* An arena buffer that elementwise value v (of at least IN_PLACE_BYTES)
 * may compute in place: one whose last reader is v, of v's size, and read
 * by v's loop (with its fused operands, no product among them) only
 * through v's own dense access, so that each element is read before it is
 * written over; or -1. */
static int in_place(const IrFunc *f, const BePlan *p, ValueId v, const int *root, const int *last)
{
    const IrNode *nd = &f->node[v];
    int kind = ir_op_info[nd->op].kind;
    if ((kind != KIND_UNARY && kind != KIND_BINARY) || p->acc[v].base != BE_ARENA ||
        buffer_bytes(nd->type) < IN_PLACE_BYTES)
        return -1;
    ValueId leaf[BE_FUSE_LEAVES];
    int nleaf = 0;
    if (!loop_leaves(f, p, v, leaf, &nleaf))
        return -1;
    for (int i = 0; i < nleaf; i++) {
        int r = root[leaf[i]];
        if (r < 0 || last[r] != v || buffer_bytes(f->node[r].type) != buffer_bytes(nd->type))
            continue;
        bool same = true;
        for (int j = 0; j < nleaf; j++) {
            const BeAccess *a = &p->acc[leaf[j]];
            if (root[leaf[j]] == r)
                same &= ir_type_eq(f->node[leaf[j]].type, nd->type) && a->offset == 0 && dense_strides(a, nd->type);
        }
        if (same)
            return r;
    }
    return -1;
}

/* Place every arena buffer: walk the nodes in order, take space for each
 * computed value (and its scratch, given back at once), and give back the
 * buffers whose last reader was this node; an elementwise value takes over
 * the buffer of an operand it reads last where it can (in_place). */
static void place_buffers(const IrFunc *f, BePlan *p, const bool *live)
{
    int n = f->nnode;
    /* root[v]: the value whose arena buffer v's access reads, or -1. */
    int *root = arena_alloc(&p->arena, sizeof(int) * (size_t)(n + 1));
    int *last = arena_alloc(&p->arena, sizeof(int) * (size_t)(n + 1));
    for (int v = 0; v < n; v++) {
        root[v] = -1;
        last[v] = -1;
        if (!live[v])
            continue;
        const IrNode *nd = &f->node[v];
        if (p->computed[v]) {
            if (p->acc[v].base == BE_ARENA)
                root[v] = v;
        } else if (nd->op != OP_INPUT && nd->op != OP_CONST && p->fused_into[v] < 0) {
            root[v] = root[nd->arg[0]];
        }
        if (p->fused_into[v] < 0)
            read_leaves(f, p, v, v, root, last);
    }
    for (int j = 0; j < f->noutput; j++)
        if (p->out_copy[j] && root[f->output[j]] >= 0)
            last[root[f->output[j]]] = n;

    /* dies[i]: a list (through next[]) of the buffers whose last reader is i. */
    int *dies = arena_alloc(&p->arena, sizeof(int) * (size_t)(n + 1));
    int *next = arena_alloc(&p->arena, sizeof(int) * (size_t)(n + 1));
    for (int i = 0; i <= n; i++)
        dies[i] = -1;
    for (int v = 0; v < n; v++) {
        if (root[v] == v && last[v] >= 0) {
            next[v] = dies[last[v]];
            dies[last[v]] = v;
        }
    }

    Space s = {arena_alloc(&p->arena, sizeof(Block) * (size_t)(n + 1)), 0, 0};
    bool *taken = arena_alloc(&p->arena, sizeof(bool) * (size_t)(n + 1));    /* by a value in place */
    int64_t held = 0, peak = 0;
    for (int v = 0; v < n; v++) {
        taken[v] = false;
        int r = root[v] == v ? in_place(f, p, v, root, last) : -1;
        if (r >= 0) {
            p->acc[v].byte_off = p->acc[r].byte_off;
            taken[r] = true;
        } else if (root[v] == v) {
            p->acc[v].byte_off = space_alloc(&s, buffer_bytes(f->node[v].type));
            held += buffer_bytes(f->node[v].type);
        }
        if (p->scratch_bytes[v])
            p->scratch_off[v] = space_alloc(&s, p->scratch_bytes[v]);
        if (held + p->scratch_bytes[v] > peak)
            peak = held + p->scratch_bytes[v];
        for (int r = dies[v]; r >= 0; r = next[r]) {
            if (taken[r])
                continue;
            space_free(&s, p->acc[r].byte_off, buffer_bytes(f->node[r].type));
            held -= buffer_bytes(f->node[r].type);
        }
        if (p->scratch_bytes[v])
            space_free(&s, p->scratch_off[v], p->scratch_bytes[v]);
    }
    p->arena_bytes = (size_t)s.top;
    p->live_peak_bytes = (size_t)peak;
    /* Views were planned before their buffers were placed. */
    for (int v = 0; v < n; v++)
        if (root[v] >= 0 && root[v] != v)
            p->acc[v].byte_off = p->acc[root[v]].byte_off;
}

enum { FUSE_PRODUCT_BYTES = 32 << 10 };

static bool elementwise(const IrNode *n)
{
    int kind = ir_op_info[n->op].kind;
    return kind == KIND_UNARY || kind == KIND_BINARY;
}

/* + - * and negation: the ops that fused code applies to whole vectors (a
 * product's register tiles, a blocked sum's lanes). */
static bool lane_op(IrOp op)
{
    return op == OP_ADD || op == OP_SUB || op == OP_MUL || op == OP_NEG;
}

/* The run of reduce_sum n's operand, dense, that its innermost reduced dims
 * make: their extents' product, extent-1 dims skipped. */
static int64_t sum_run(const IrFunc *f, const IrNode *n)
{
    IrType t = f->node[n->arg[0]].type;
    bool red[IR_MAX_RANK] = {false};
    for (int i = 0; i < n->nlist; i++)
        red[n->list[i]] = true;
    int64_t run = 1;
    for (int k = t.rank - 1; k >= 0 && (red[k] || t.dim[k] == 1); k--)
        run *= t.dim[k];
    return run;
}

/* Whether reduce_sum r can compute v, its operand, in its blocked loop: v
 * is + - * or negation of operands each dense over v's shape or one
 * element, and r's run is long enough to be blocked. */
static bool sum_fuses(const IrFunc *f, const BePlan *p, const IrNode *r, ValueId v)
{
    const IrNode *n = &f->node[v];
    if (r->op != OP_REDUCE_SUM || sum_run(f, r) < BE_SUM_LANES || !lane_op(n->op))
        return false;
    for (int a = 0; a < ir_op_info[n->op].arity; a++) {
        const BeAccess *x = &p->acc[n->arg[a]];
        bool one = x->base == BE_IMM || x->base == BE_REG;
        bool packed = in_memory(x) && dense_strides(x, n->type);
        if (!one && !packed)
            return false;
    }
    return true;
}

/* The operands the loop of value v reads, its fused operands' in their
 * place (a fused product counting as one). */
static int fused_leaves(const IrFunc *f, const BePlan *p, ValueId v)
{
    const IrNode *n = &f->node[v];
    int k = 0;
    for (int a = 0; a < ir_op_info[n->op].arity; a++) {
        ValueId x = n->arg[a];
        k += p->fused_into[x] >= 0 && f->node[x].op != OP_MATMUL ? fused_leaves(f, p, x) : 1;
    }
    return k;
}

/* The terms of product v (its operands' shared dim). */
static int64_t terms(const IrFunc *f, ValueId v)
{
    return f->node[f->node[v].arg[0]].type.dim[1];
}

static BeMatmulPlan product_plan(const IrFunc *f, const BePlan *p, ValueId v)
{
    const IrNode *n = &f->node[v];
    return be_matmul_plan(n->type, &p->acc[n->arg[0]], f->node[n->arg[0]].type, &p->acc[n->arg[1]],
                          f->node[n->arg[1]].type);
}

bool be_product_pair(const IrFunc *f, const BePlan *p, ValueId v, ValueId *main, ValueId *other)
{
    const IrNode *n = &f->node[v];
    if (n->op != OP_ADD)
        return false;
    ValueId x = n->arg[0], y = n->arg[1];
    if (p->fused_into[x] != v || p->fused_into[y] != v || f->node[x].op != OP_MATMUL || f->node[y].op != OP_MATMUL)
        return false;
    bool second = terms(f, y) > terms(f, x);
    *main = second ? y : x;
    *other = second ? x : y;
    return true;
}

/* Whether product v, read by the add r with the product u fused into it
 * already, can run in u's tiles: the two are the same way round, and
 * neither packs its vector operand (the tiles then hold no padding
 * columns, and the lesser product's operands are read in place), and
 * neither runs as dot products. */
static bool joins_product(const IrFunc *f, const BePlan *p, const IrNode *r, ValueId u, ValueId v)
{
    if (r->op != OP_ADD || f->node[u].op != OP_MATMUL || p->fused_into[u] < 0)
        return false;
    BeMatmulPlan a = product_plan(f, p, u), b = product_plan(f, p, v);
    return a.swap == b.swap && !a.pack && !b.pack && !a.dot && !b.dot;
}

/* Whether v's loop, with its fused operands, holds only + - * and
 * negation, and no product yet: what a product's tiles can apply to their
 * results before storing them. */
static bool tile_epilogue(const IrFunc *f, const BePlan *p, ValueId v)
{
    const IrNode *n = &f->node[v];
    if (!lane_op(n->op))
        return false;
    for (int a = 0; a < ir_op_info[n->op].arity; a++) {
        ValueId x = n->arg[a];
        if (p->fused_into[x] >= 0 && (f->node[x].op == OP_MATMUL || !tile_epilogue(f, p, x)))
            return false;
    }
    return true;
}

/* Fuse v into its one reader's loop where plan_fusion says it may
 * (`product`: the second round, of products). */
static void fuse(const IrFunc *f, BePlan *p, const int *uses, const int *reader, ValueId v, bool product)
{
    const IrNode *nd = &f->node[v];
    int r = reader[v];
    if (!p->computed[v] || p->acc[v].base != BE_ARENA || uses[v] != 1 ||
        (product ? nd->op != OP_MATMUL : !elementwise(nd)))
        return;
    const IrNode *rd = &f->node[r];
    bool viewed = !p->computed[r] && p->fused_into[r] < 0;   /* no loop computes r */
    bool into_sum = !product && sum_fuses(f, p, rd, v);
    if (viewed || (!into_sum && (!elementwise(rd) || rd->op == OP_EQ || !ir_type_eq(rd->type, nd->type))))
        return;
    int top = p->fused_into[r] >= 0 ? p->fused_into[r] : r;   /* whose loop reads v */
    ValueId other = product ? rd->arg[rd->arg[0] == v] : -1;
    bool joins = product && joins_product(f, p, rd, other, v);
    if (!product) {
        for (int a = 0; a < ir_op_info[nd->op].arity; a++)
            if (p->fused_into[nd->arg[a]] >= 0)
                return;
    } else if (buffer_bytes(nd->type) < FUSE_PRODUCT_BYTES || !p->computed[top] ||
               (!joins && !tile_epilogue(f, p, top))) {
        return;
    }
    p->fused_into[v] = r;
    if (fused_leaves(f, p, top) > BE_FUSE_LEAVES) {
        p->fused_into[v] = -1;
        return;
    }
    p->computed[v] = false;
    p->acc[v].base = BE_NONE;
    if (product) {
        /* the tiles' scratch: the main product's (be_product_pair) */
        ValueId main, lesser;
        if (!joins || (be_product_pair(f, p, r, &main, &lesser) && main == v))
            p->scratch_bytes[top] = p->scratch_bytes[v];
        p->scratch_bytes[v] = 0;
    }
}

/* Products by their terms per element (k), then by position. */
typedef struct {
    int64_t k;
    ValueId v;
} ByTerms;

static int by_terms(const void *a, const void *b)
{
    const ByTerms *x = a, *y = b;
    return x->k != y->k ? (x->k > y->k) - (x->k < y->k) : (x->v > y->v) - (x->v < y->v);
}

/* Fuse each elementwise value in an arena buffer, with no fused operand,
 * whose one reader is an elementwise value of the same shape and element
 * type that code computes (not a view: stop_grad) and which then is not
 * fused itself (one level), or a blocked sum that can compute it
 * (sum_fuses), while the reader's loop reads at most BE_FUSE_LEAVES
 * operands.  Then fuse each product in an arena buffer of at least
 * FUSE_PRODUCT_BYTES read only by such a loop of + - * and negation (the
 * product's tiles compute that loop's value: `tile_epilogue`); its scratch
 * moves to the loop's node.  (A smaller product stays in the cache between
 * the two: fusing it would save little and cost compile time, its function
 * being shared less.)  Products go in order of their terms per element,
 * fewest first: where a loop reads two, the shorter one's tiles, which wait
 * on memory anyway, take the loop's loads, unless the longer one can join
 * them (joins_product): then both run in the longer one's tiles. */
static void plan_fusion(const IrFunc *f, BePlan *p, const bool *live)
{
    int n = f->nnode;
    int *uses = arena_alloc(&p->arena, sizeof(int) * (size_t)(n + 1));
    int *reader = arena_alloc(&p->arena, sizeof(int) * (size_t)(n + 1));
    ByTerms *products = arena_alloc(&p->arena, sizeof(ByTerms) * (size_t)(n + 1));
    int nproducts = 0;
    for (int v = 0; v < n; v++) {
        uses[v] = 0;
        reader[v] = -1;
        p->fused_into[v] = -1;
    }
    for (int v = 0; v < n; v++) {
        const IrNode *nd = &f->node[v];
        for (int a = 0; live[v] && a < ir_op_info[nd->op].arity; a++) {
            uses[nd->arg[a]]++;
            reader[nd->arg[a]] = v;
        }
        if (nd->op == OP_MATMUL)
            products[nproducts++] = (ByTerms){terms(f, v), v};
    }
    for (int v = 0; v < n; v++)
        fuse(f, p, uses, reader, v, false);
    qsort(products, (size_t)nproducts, sizeof *products, by_terms);
    for (int i = 0; i < nproducts; i++)
        fuse(f, p, uses, reader, products[i].v, true);
}

void be_plan(const IrFunc *f, BePlan *p)
{
    int n = f->nnode;
    memset(p, 0, sizeof *p);
    p->nnode = n;
    p->noutput = f->noutput;
    p->acc = arena_alloc(&p->arena, sizeof(BeAccess) * (size_t)(n + 1));
    p->computed = arena_alloc(&p->arena, sizeof(bool) * (size_t)(n + 1));
    p->fused_into = arena_alloc(&p->arena, sizeof(int) * (size_t)(n + 1));
    p->out_copy = arena_alloc(&p->arena, sizeof(bool) * (size_t)(f->noutput + 1));
    p->scratch_off = arena_alloc(&p->arena, sizeof(int64_t) * (size_t)(n + 1));
    p->scratch_bytes = arena_alloc(&p->arena, sizeof(int64_t) * (size_t)(n + 1));

    bool *live = arena_alloc(&p->arena, sizeof(bool) * (size_t)(n + 1));
    int *out_pos = arena_alloc(&p->arena, sizeof(int) * (size_t)(n + 1));
    for (int v = 0; v < n; v++)
        out_pos[v] = -1;
    for (int j = f->noutput - 1; j >= 0; j--) {
        live[f->output[j]] = true;
        out_pos[f->output[j]] = j;
    }
    for (int v = n - 1; v >= 0; v--)
        if (live[v])
            for (int a = 0; a < ir_op_info[f->node[v].op].arity; a++)
                live[f->node[v].arg[a]] = true;

    for (int v = 0; v < n; v++) {
        const IrNode *nd = &f->node[v];
        BeAccess *a = &p->acc[v];
        if (!live[v]) {
            a->base = BE_NONE;
            a->dtype = nd->type.dtype;
            a->rank = nd->type.rank;
            continue;
        }
        const BeAccess *x = nd->arg[0] >= 0 ? &p->acc[nd->arg[0]] : NULL;
        IrType xt = nd->arg[0] >= 0 ? f->node[nd->arg[0]].type : nd->type;
        bool splat = x && (x->base == BE_IMM || x->base == BE_REG);
        switch (nd->op) {
        case OP_INPUT:
            *a = be_access_dense(nd->type, BE_INPUT, nd->ival, 0);
            continue;
        case OP_CONST:
            *a = be_access_dense(nd->type, BE_IMM, 0, 0);
            *a = access_splat(a, nd->type);
            a->imm = nd->value;
            continue;
        case OP_STOP_GRAD:
            *a = *x;
            continue;
        case OP_BROADCAST:
            *a = splat ? access_splat(x, nd->type) : access_broadcast(x, xt, nd->type);
            continue;
        case OP_TRANSPOSE:
            *a = splat ? access_splat(x, nd->type) : access_transpose(x, nd->list, nd->type.rank);
            continue;
        case OP_RESHAPE:
            if (splat || ir_numel(nd->type) == 1) {
                if (splat) {
                    *a = access_splat(x, nd->type);
                    continue;
                }
                /* One element: any strides reach it. */
                *a = *x;
                a->rank = nd->type.rank;
                memset(a->stride, 0, sizeof a->stride);
                continue;
            }
            if (access_reshape(x, xt, nd->type, a))
                continue;
            break;
        default:
            break;
        }
        /* A value the code generator writes. */
        p->computed[v] = true;
        bool conv = ir_op_info[nd->op].kind == KIND_CONV;
        if (conv)
            p->scratch_bytes[v] = be_conv_scratch(f, nd).bytes;
        if (nd->op == OP_MATMUL) {
            ValueId b = nd->arg[1];
            p->scratch_bytes[v] = be_matmul_plan(nd->type, x, xt, &p->acc[b], f->node[b].type).bytes;
        }
        if (out_pos[v] >= 0)
            *a = be_access_dense(nd->type, BE_OUTPUT, out_pos[v], 0);
        else if (ir_numel(nd->type) == 1 && !conv)
            *a = access_splat(&(BeAccess){.base = BE_REG, .index = v}, nd->type);
        else
            *a = be_access_dense(nd->type, BE_ARENA, 0, 0);
    }
    plan_fusion(f, p, live);
    for (int j = 0; j < f->noutput; j++) {
        ValueId v = f->output[j];
        p->out_copy[j] = !(p->computed[v] && p->acc[v].base == BE_OUTPUT && p->acc[v].index == j);
    }
    place_buffers(f, p, live);
}

void be_plan_free(BePlan *p)
{
    arena_free(&p->arena);
    memset(p, 0, sizeof *p);
}

void be_arena_sizes(const IrFunc *f, size_t *arena_bytes, size_t *live_peak_bytes)
{
    BePlan p;
    be_plan(f, &p);
    *arena_bytes = p.arena_bytes;
    *live_peak_bytes = p.live_peak_bytes;
    be_plan_free(&p);
}

size_t be_arena_bytes(const IrFunc *f)
{
    size_t bytes, live;
    be_arena_sizes(f, &bytes, &live);
    return bytes;
}
