/* Buffer planning: accesses for every value, arena offsets by liveness.
 * See plan.h for the model; plan_fusion.c decides what is fused into what,
 * plan_kernels.c the scratch and the way of each product, plan_arena.c
 * the buffers' offsets. */
#include "plan_impl.h"
#include "backend.h"

#include <stdlib.h>
#include <string.h>

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

bool be_in_memory(const BeAccess *a)
{
    return a->base == BE_INPUT || a->base == BE_OUTPUT || a->base == BE_ARENA;
}

/* Whether access a walks a value of type t as a dense buffer of t does
 * (its strides; its offset aside). */
bool be_dense_strides(const BeAccess *a, IrType t)
{
    BeAccess dense = be_access_dense(t, BE_ARENA, 0, 0);
    return !memcmp(a->stride, dense.stride, sizeof(int64_t) * (size_t)t.rank);
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

/* SLICE: the same strides from the window's first element on. */
static BeAccess access_slice(const BeAccess *x, const int *start, int rank)
{
    BeAccess a = *x;
    for (int i = 0; i < rank; i++)
        a.offset += start[i] * x->stride[i];
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

int64_t be_buffer_bytes(IrType t)
{
    int64_t b = ir_numel(t) * (int64_t)ir_dtype_size(t.dtype);
    return (b + BE_ALIGN - 1) / BE_ALIGN * BE_ALIGN;
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
        be_buffer_bytes(nd->type) < IN_PLACE_BYTES)
        return -1;
    ValueId leaf[BE_FUSE_LEAVES];
    int nodes, nleaf = be_loop_leaves(f, p, v, leaf, BE_FUSE_LEAVES, &nodes);
    for (int i = 0; i < nleaf; i++)
        if (f->node[leaf[i]].op == OP_MATMUL && p->fused_into[leaf[i]] >= 0)
            return -1;          /* a product's tiles compute v */
    for (int i = 0; i < nleaf; i++) {
        int r = root[leaf[i]];
        if (r < 0 || last[r] != v || be_buffer_bytes(f->node[r].type) != be_buffer_bytes(nd->type))
            continue;
        bool same = true;
        for (int j = 0; j < nleaf; j++) {
            const BeAccess *a = &p->acc[leaf[j]];
            if (root[leaf[j]] == r)
                same &= ir_type_eq(f->node[leaf[j]].type, nd->type) && a->offset == 0 && be_dense_strides(a, nd->type);
        }
        if (same)
            return r;
    }
    return -1;
}

/* Place every arena buffer: a span for each computed value from its node
 * to its last reader, and one for each node's scratch, packed by
 * be_place_spans; an elementwise value takes over the buffer of an operand it
 * reads last where it can (in_place), and so lengthens its span. */
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

    /* span_of[v], scratch_of[v]: the spans of v's buffer and scratch, or -1. */
    int *span_of = arena_alloc(&p->arena, sizeof(int) * (size_t)(n + 1));
    int *scratch_of = arena_alloc(&p->arena, sizeof(int) * (size_t)(n + 1));
    BeSpan *sp = arena_alloc(&p->arena, sizeof(BeSpan) * (size_t)(2 * n + 1));
    int ns = 0;
    for (int v = 0; v < n; v++) {
        span_of[v] = scratch_of[v] = -1;
        if (root[v] == v) {
            int r = in_place(f, p, v, root, last);
            if (r >= 0)
                span_of[v] = span_of[r];
            else
                span_of[v] = ns, sp[ns++] = (BeSpan){be_buffer_bytes(f->node[v].type), 0, v, v};
            /* A buffer no node reads is held to the end. */
            int end = last[v] >= 0 ? last[v] : n;
            if (end > sp[span_of[v]].last)
                sp[span_of[v]].last = end;
        }
        if (p->scratch_bytes[v])
            scratch_of[v] = ns, sp[ns++] = (BeSpan){p->scratch_bytes[v], 0, v, v};
    }
    p->arena_bytes = (size_t)be_place_spans(sp, ns, &p->arena);

    /* The live peak: the most bytes of spans live at one node. */
    int64_t *delta = arena_alloc(&p->arena, sizeof(int64_t) * (size_t)(n + 2));
    memset(delta, 0, sizeof(int64_t) * (size_t)(n + 2));
    for (int i = 0; i < ns; i++) {
        delta[sp[i].first] += sp[i].size;
        delta[sp[i].last + 1] -= sp[i].size;
    }
    int64_t held = 0, peak = 0;
    for (int v = 0; v <= n; v++) {
        held += delta[v];
        if (held > peak)
            peak = held;
    }
    p->live_peak_bytes = (size_t)peak;

    for (int v = 0; v < n; v++) {
        if (span_of[v] >= 0)
            p->acc[v].byte_off = sp[span_of[v]].off;
        if (scratch_of[v] >= 0)
            p->scratch_off[v] = sp[scratch_of[v]].off;
    }
    /* Views were planned before their buffers were placed. */
    for (int v = 0; v < n; v++)
        if (root[v] >= 0 && root[v] != v)
            p->acc[v].byte_off = p->acc[root[v]].byte_off;
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
        case OP_SLICE:
            *a = splat ? access_splat(x, nd->type) : access_slice(x, nd->list, nd->type.rank);
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
    be_plan_fusion(f, p, live);
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
