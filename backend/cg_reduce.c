/* Reductions (cg.h): reduce_sum, reduce_max and argmax, in an order fixed
 * by the shapes, and the blocked sum that may compute its operand in its
 * own loop (BE_SUM_LANES). */
#include "cg.h"

#include <math.h>

static const SrcLoc no_loc = {0};

static LLVMValueRef iter_load(Cg *cg, const Iter *it, int a, const Opnd *o, const LLVMValueRef *iv)
{
    return cg_load_at(cg, o, be_in_memory(&o->a) ? cg_iter_index(cg, it, a, iv) : NULL);
}

/* The running max takes x when x > m or x is NaN, unless m is NaN already
 * (NaN wins, the first max and the first NaN stay). */
static LLVMValueRef max_takes(Cg *cg, LLVMValueRef x, LLVMValueRef m)
{
    return LLVMBuildAnd(cg->b, cg_fcmp(cg, LLVMRealUGT, x, m), cg_fcmp(cg, LLVMRealORD, m, m), "");
}

/* w results of a sum or max with a reduced dim innermost, at kept indices
 * yo (result) and xo (operand) and the next w - 1 along the innermost kept
 * dim (strides ys, xs): w independent accumulators in the lanes of a
 * vector, each running over the reduced indices in row-major order. */
static void emit_reduce_lanes(Cg *cg, const IrNode *n, Opnd *y, const Opnd *x, const Iter *over, LLVMValueRef yo,
                              LLVMValueRef xo, int64_t ys, int64_t xs, int w)
{
    LLVMTypeRef t = cg_elem_type(cg, x->a.dtype), vt = w > 1 ? LLVMVectorType(t, (unsigned)w) : t;
    bool sum = n->op == OP_REDUCE_SUM;
    LLVMValueRef acc = cg_entry_alloca(cg, vt, "acc");
    LLVMBuildStore(cg->b, cg_splat(cg, LLVMConstReal(t, sum ? 0 : -INFINITY), w), acc);
    Loop lr[IR_MAX_RANK + 1];
    LLVMValueRef ir[IR_MAX_RANK + 1];
    cg_nest_open(cg, over, lr, ir);
    LLVMValueRef xi = be_in_memory(&x->a) ? cg_idx_add(cg, xo, cg_iter_index(cg, over, 0, ir)) : NULL;
    LLVMValueRef e;
    if (w == 1 || !be_in_memory(&x->a) || xs == 0) {
        e = cg_splat(cg, cg_load_at(cg, x, xi), w);
    } else {
        e = LLVMGetPoison(vt);
        for (int l = 0; l < w; l++)
            e = LLVMBuildInsertElement(cg->b, e, cg_load_at(cg, x, cg_idx_add(cg, xi, cg_c64(cg, l * xs))),
                                       cg_c64(cg, l), "");
    }
    LLVMValueRef m = LLVMBuildLoad2(cg->b, vt, acc, "");
    LLVMBuildStore(cg->b, sum ? LLVMBuildFAdd(cg->b, m, e, "") : LLVMBuildSelect(cg->b, max_takes(cg, e, m), e, m, ""),
                   acc);
    for (int i = 0; i < over->rank; i++)
        lr[i].scalar = true;        /* running sums or maxima: sequential */
    cg_nest_close(cg, over, lr);
    LLVMValueRef r = LLVMBuildLoad2(cg->b, vt, acc, "");
    for (int l = 0; l < w; l++)
        cg_store_at(cg, y, cg_idx_add(cg, yo, cg_c64(cg, l * ys)),
                    w == 1 ? r : LLVMBuildExtractElement(cg->b, r, cg_c64(cg, l), ""));
}

/* A sum over a dense run of at least SUM_LANES elements in its reduced dims
 * is summed in SUM_LANES partial sums (SUM_VECS vectors of SUM_WIDTH lanes)
 * over segments of at most SUM_SEGMENT elements, which are added into as
 * many running totals: a fixed order that runs as fast as the loads and
 * rounds far less than one running sum. */
enum { SUM_WIDTH = 8, SUM_LANES = BE_SUM_LANES, SUM_VECS = SUM_LANES / SUM_WIDTH, SUM_SEGMENT = 32 * SUM_LANES };

/* What a blocked sum adds up: its operand x[0], or (fused >= 0) the value
 * fused computed from its operands x[0, n), each one element or, along
 * the run, dense or the same element (the plan's sum_computes). */
typedef struct {
    const Opnd *x;
    int n;
    ValueId fused;
    DType dtype;
} SumSource;

/* One run of a blocked sum: where each of the source's operands starts
 * (dense ones), or its one element along the run (`same`). */
typedef struct {
    LLVMValueRef start[BE_FUSE_LEAVES];
    LLVMValueRef same[BE_FUSE_LEAVES];
} SumRun;

/* The w = SUM_WIDTH elements, or the one element (w = 1), of the source
 * from element `off` of the run on. */
static LLVMValueRef sum_source(Cg *cg, const SumSource *s, const SumRun *run, LLVMValueRef off, int w)
{
    LLVMValueRef v[BE_FUSE_LEAVES];
    for (int i = 0; i < s->n; i++)
        v[i] = run->same[i] ? cg_splat(cg, run->same[i], w)
                            : cg_load_vec_at(cg, &s->x[i], cg_idx_add(cg, run->start[i], off), w);
    return s->fused < 0 ? v[0] : cg_fused_value(cg, s->fused, v, NULL, NULL);
}

/* *acc += e (vectors kept in allocas). */
static void add_into(Cg *cg, LLVMValueRef acc, LLVMValueRef e)
{
    LLVMTypeRef vt = LLVMTypeOf(e);
    LLVMBuildStore(cg->b, LLVMBuildFAdd(cg->b, LLVMBuildLoad2(cg->b, vt, acc, ""), e, ""), acc);
}

/* total[v] += the sums of the n elements of s from element `at` of the
 * run on: element j into lane j mod SUM_LANES of a partial sum, the last n
 * mod SUM_WIDTH into the low lanes of one vector. */
static void sum_segment(Cg *cg, const SumSource *s, const SumRun *run, LLVMValueRef at, int64_t n,
                        LLVMValueRef *part, LLVMValueRef *total)
{
    LLVMTypeRef vt = LLVMVectorType(cg_elem_type(cg, s->dtype), SUM_WIDTH);
    LLVMValueRef zero = LLVMConstNull(vt);
    for (int v = 0; v < SUM_VECS; v++)
        LLVMBuildStore(cg->b, zero, part[v]);
    if (n >= SUM_LANES) {
        Loop lb;
        LLVMValueRef c = cg_range_open(cg, &lb, 0, n / SUM_LANES);
        LLVMValueRef block = cg_idx_add(cg, at, LLVMBuildNUWMul(cg->b, c, cg_c64(cg, SUM_LANES), ""));
        for (int v = 0; v < SUM_VECS; v++)
            add_into(cg, part[v], sum_source(cg, s, run, cg_idx_add(cg, block, cg_c64(cg, v * SUM_WIDTH)), SUM_WIDTH));
        lb.scalar = true;
        cg_range_close(cg, &lb);
    }
    int64_t j = n / SUM_LANES * SUM_LANES;
    for (int v = 0; j + SUM_WIDTH <= n; v++, j += SUM_WIDTH)
        add_into(cg, part[v], sum_source(cg, s, run, cg_idx_add(cg, at, cg_c64(cg, j)), SUM_WIDTH));
    if (j < n) {
        LLVMValueRef e = zero;
        for (int l = 0; j + l < n; l++) {
            LLVMValueRef x = sum_source(cg, s, run, cg_idx_add(cg, at, cg_c64(cg, j + l)), 1);
            e = LLVMBuildInsertElement(cg->b, e, x, cg_c64(cg, l), "");
        }
        add_into(cg, part[n % SUM_LANES / SUM_WIDTH], e);
    }
    for (int v = 0; v < SUM_VECS; v++)
        add_into(cg, total[v], LLVMBuildLoad2(cg->b, vt, part[v], ""));
}

/* The sum of the vector's w lanes, halves added pairwise. */
static LLVMValueRef sum_lanes(Cg *cg, LLVMValueRef v, int w)
{
    for (; w > 1; w /= 2) {
        LLVMValueRef lo[SUM_WIDTH], hi[SUM_WIDTH];
        for (int l = 0; l < w / 2; l++) {
            lo[l] = LLVMConstInt(cg->i32, (unsigned)l, 0);
            hi[l] = LLVMConstInt(cg->i32, (unsigned)(l + w / 2), 0);
        }
        LLVMValueRef a = LLVMBuildShuffleVector(cg->b, v, v, LLVMConstVector(lo, (unsigned)(w / 2)), "");
        LLVMValueRef b = LLVMBuildShuffleVector(cg->b, v, v, LLVMConstVector(hi, (unsigned)(w / 2)), "");
        v = w / 2 > 1 ? LLVMBuildFAdd(cg->b, a, b, "") :
            LLVMBuildFAdd(cg->b, LLVMBuildExtractElement(cg->b, a, cg_c64(cg, 0), ""),
                          LLVMBuildExtractElement(cg->b, b, cg_c64(cg, 0), ""), "");
    }
    return v;
}

/* A sum whose innermost reduced dim (after merging) is a dense run of n >=
 * SUM_LANES elements: for each kept index, each run (in row-major order of
 * the reduced dims outside it) is summed segment by segment (sum_segment)
 * into SUM_LANES running totals; at the end the totals' vectors are added
 * pairwise, then their lanes.  Each lane of a partial sum adds at most 32
 * elements, each total one partial per segment.  kept: access 0 the
 * result, 1 + i the source's operand i; over: access i operand i. */
static void emit_reduce_blocked(Cg *cg, Opnd *y, const SumSource *src, const Iter *kept, const Iter *over)
{
    LLVMTypeRef vt = LLVMVectorType(cg_elem_type(cg, src->dtype), SUM_WIDTH);
    Iter outer = *over;
    int64_t n = outer.dim[--outer.rank];
    LLVMValueRef total[SUM_VECS], part[SUM_VECS];
    for (int v = 0; v < SUM_VECS; v++) {
        total[v] = cg_entry_alloca(cg, vt, "total");
        part[v] = cg_entry_alloca(cg, vt, "part");
    }
    Loop lk[IR_MAX_RANK + 1], lo[IR_MAX_RANK + 1], ls;
    LLVMValueRef ik[IR_MAX_RANK + 1], io[IR_MAX_RANK + 1];
    cg_nest_open(cg, kept, lk, ik);
    LLVMValueRef yo = cg_iter_index(cg, kept, 0, ik);
    for (int v = 0; v < SUM_VECS; v++)
        LLVMBuildStore(cg->b, LLVMConstNull(vt), total[v]);
    cg_nest_open(cg, &outer, lo, io);
    SumRun run;
    for (int i = 0; i < src->n; i++) {
        const Opnd *x = &src->x[i];
        run.start[i] = run.same[i] = NULL;
        LLVMValueRef at = NULL;
        if (be_in_memory(&x->a))
            at = cg_idx_add(cg, cg_iter_index(cg, kept, 1 + i, ik), cg_iter_index(cg, &outer, i, io));
        if (be_in_memory(&x->a) && over->stride[i][outer.rank] != 0)
            run.start[i] = at;
        else
            run.same[i] = cg_load_at(cg, x, at);
    }
    if (n >= SUM_SEGMENT) {
        LLVMValueRef sg = cg_range_open(cg, &ls, 0, n / SUM_SEGMENT);
        sum_segment(cg, src, &run, LLVMBuildNUWMul(cg->b, sg, cg_c64(cg, SUM_SEGMENT), ""), SUM_SEGMENT, part,
                    total);
        ls.scalar = true;
        cg_range_close(cg, &ls);
    }
    if (n % SUM_SEGMENT)
        sum_segment(cg, src, &run, cg_c64(cg, n / SUM_SEGMENT * SUM_SEGMENT), n % SUM_SEGMENT, part, total);
    for (int i = 0; i < outer.rank; i++)
        lo[i].scalar = true;
    cg_nest_close(cg, &outer, lo);
    LLVMValueRef s[SUM_VECS];
    for (int v = 0; v < SUM_VECS; v++)
        s[v] = LLVMBuildLoad2(cg->b, vt, total[v], "");
    for (int w = SUM_VECS; w > 1; w /= 2)
        for (int v = 0; v < w / 2; v++)
            s[v] = LLVMBuildFAdd(cg->b, s[2 * v], s[2 * v + 1], "");
    cg_store_at(cg, y, yo, sum_lanes(cg, s[0], SUM_WIDTH));
    cg_nest_close(cg, kept, lk);
}

/* The kept and the reduced dims of x's shape (red) as two iteration
 * spaces, coalesced: kept with the result's strides ys, then those of each
 * of the n accesses a[]; over with those of a[] alone. */
static void split_dims(const Opnd *x, const int64_t *ys, const bool *red, const Opnd *a, int n, Iter *kept,
                       Iter *over)
{
    *kept = (Iter){.nacc = 1 + n};
    *over = (Iter){.nacc = n};
    for (int k = 0; k < x->t.rank; k++) {
        int64_t s[CG_MAX_ACC] = {ys[k]};
        for (int i = 0; i < n; i++)
            s[1 + i] = a[i].a.stride[k];
        if (red[k])
            cg_iter_add_dim(over, x->t.dim[k], &s[1]);
        else
            cg_iter_add_dim(kept, x->t.dim[k], s);
    }
    cg_iter_coalesce(kept, false);
    cg_iter_coalesce(over, false);
}

/* Reduction with a reduced dim innermost (and every ARGMAX): a sum over a
 * long dense run is blocked (above); otherwise, for each kept index, an
 * accumulator runs over the reduced indices in row-major order.  Sums and
 * maxima take 8 kept indices at a time along the innermost kept
 * dim (then 4, 2, 1 at its end), so that 8 independent chains overlap
 * instead of one waiting on the last; each result's order is the same.
 * ys: the result's strides over the operand's dims. */
static bool emit_reduce_inner(Cg *cg, const IrNode *n, Opnd *y, const Opnd *x, const int64_t *ys, const bool *red,
                              const SumSource *src)
{
    LLVMTypeRef t = cg_elem_type(cg, x->a.dtype);
    Iter kept, over;
    split_dims(x, ys, red, x, 1, &kept, &over);
    bool is_arg = n->op == OP_ARGMAX;
    if (n->op == OP_REDUCE_SUM && be_in_memory(&x->a) && over.rank && over.stride[0][over.rank - 1] == 1 &&
        over.dim[over.rank - 1] >= SUM_LANES) {
        /* The same loops, over the source's operands (the plan's
         * sum_computes: they coalesce as x does along the run). */
        Iter bk, bo;
        split_dims(x, ys, red, src->x, src->n, &bk, &bo);
        bool runs = bo.rank && bo.dim[bo.rank - 1] == over.dim[over.rank - 1];
        for (int i = 0; runs && i < src->n; i++)
            runs = !be_in_memory(&src->x[i].a) || bo.stride[i][bo.rank - 1] <= 1;
        if (runs) {
            emit_reduce_blocked(cg, y, src, &bk, &bo);
            return true;
        }
    }
    if (src->fused >= 0)
        return false;           /* a fused operand needs the blocked sum */
    Loop lk[IR_MAX_RANK + 1], lr[IR_MAX_RANK + 1];
    LLVMValueRef ik[IR_MAX_RANK + 1], ir[IR_MAX_RANK + 1];
    if (!is_arg) {
        /* the kept dims but the innermost as loops; that one in blocks */
        int inner = kept.rank - 1;
        int64_t ext = inner >= 0 ? kept.dim[inner] : 1;
        int64_t ysi = inner >= 0 ? kept.stride[0][inner] : 0, xsi = inner >= 0 ? kept.stride[1][inner] : 0;
        kept.rank = inner >= 0 ? inner : 0;
        cg_nest_open(cg, &kept, lk, ik);
        LLVMValueRef yo = cg_iter_index(cg, &kept, 0, ik), xo = cg_iter_index(cg, &kept, 1, ik);
        int64_t j0 = 0;
        for (int w = 8; w >= 1; w /= 2) {
            int64_t count = (ext - j0) / w;
            if (!count)
                continue;
            Loop lb;
            LLVMValueRef b = cg_range_open(cg, &lb, 0, count);
            LLVMValueRef j = cg_idx_add(cg, cg_c64(cg, j0), LLVMBuildNUWMul(cg->b, b, cg_c64(cg, w), ""));
            emit_reduce_lanes(cg, n, y, x, &over, cg_idx_add(cg, yo, LLVMBuildNSWMul(cg->b, j, cg_c64(cg, ysi), "")),
                              cg_idx_add(cg, xo, LLVMBuildNSWMul(cg->b, j, cg_c64(cg, xsi), "")), ysi, xsi, w);
            cg_range_close(cg, &lb);
            j0 += count * w;
        }
        cg_nest_close(cg, &kept, lk);
        return true;
    }
    LLVMValueRef acc = cg_entry_alloca(cg, t, "acc");
    LLVMValueRef pos = cg_entry_alloca(cg, cg->i32, "pos");
    cg_nest_open(cg, &kept, lk, ik);
    LLVMValueRef yo = cg_iter_index(cg, &kept, 0, ik), xo = cg_iter_index(cg, &kept, 1, ik);
    LLVMBuildStore(cg->b, LLVMConstReal(t, -INFINITY), acc);
    LLVMBuildStore(cg->b, LLVMConstInt(cg->i32, 0, 0), pos);
    cg_nest_open(cg, &over, lr, ir);
    LLVMValueRef xi = be_in_memory(&x->a) ? cg_idx_add(cg, xo, cg_iter_index(cg, &over, 0, ir)) : NULL;
    LLVMValueRef e = cg_load_at(cg, x, xi);
    LLVMValueRef m = LLVMBuildLoad2(cg->b, t, acc, "");
    LLVMValueRef take = max_takes(cg, e, m);
    LLVMBuildStore(cg->b, LLVMBuildSelect(cg->b, take, e, m, ""), acc);
    /* The axis is the one reduced dim: its loop (if any) counts the position. */
    LLVMValueRef here = over.rank ? LLVMBuildTrunc(cg->b, ir[0], cg->i32, "") : LLVMConstInt(cg->i32, 0, 0);
    LLVMValueRef p = LLVMBuildLoad2(cg->b, cg->i32, pos, "");
    LLVMBuildStore(cg->b, LLVMBuildSelect(cg->b, take, here, p, ""), pos);
    for (int i = 0; i < over.rank; i++)
        lr[i].scalar = true;        /* a running max: sequential */
    cg_nest_close(cg, &over, lr);
    cg_store_at(cg, y, yo, LLVMBuildLoad2(cg->b, cg->i32, pos, ""));
    cg_nest_close(cg, &kept, lk);
    return true;
}

/* Reduction with a kept dim innermost: the result starts at the identity and
 * each operand row is folded into it, so the inner loop runs over dense
 * independent lanes (vectorisable without reassociation; each result still
 * sums in row-major order of the reduced indices). */
static void emit_reduce_outer(Cg *cg, const IrNode *n, Opnd *y, const Opnd *x, const int64_t *ys)
{
    bool sum = n->op == OP_REDUCE_SUM;
    Opnd init = {.a = {.base = BE_IMM, .dtype = x->a.dtype, .imm = sum ? 0 : -INFINITY, .rank = y->t.rank}};
    cg_emit_map(cg, NULL, y->t.rank, y->t.dim, y, 1, &init);

    Iter it = {.nacc = 2};
    for (int k = 0; k < x->t.rank; k++) {
        int64_t s[2] = {ys[k], x->a.stride[k]};
        cg_iter_add_dim(&it, x->t.dim[k], s);
    }
    cg_iter_coalesce(&it, false);
    Loop loop[IR_MAX_RANK + 1];
    LLVMValueRef iv[IR_MAX_RANK + 1];
    cg_nest_open(cg, &it, loop, iv);
    LLVMValueRef yi = cg_iter_index(cg, &it, 0, iv);
    LLVMValueRef e = iter_load(cg, &it, 1, x, iv);
    LLVMValueRef m = cg_load_at(cg, y, yi);
    LLVMValueRef r = sum ? LLVMBuildFAdd(cg->b, m, e, "") : LLVMBuildSelect(cg->b, max_takes(cg, e, m), e, m, "");
    cg_store_at(cg, y, yi, r);
    cg_nest_close(cg, &it, loop);
}

/* Reduction n into y of its operand x, or, when the operand is fused into
 * the sum, of the value computed from its operands x[0, nx). */
bool cg_emit_reduce(Cg *cg, const IrNode *n, Opnd *y, const Opnd *x, int nx)
{
    SumSource src = {x, 1, -1, x->a.dtype};
    Opnd shape;
    if (cg_fused(cg, n->arg[0])) {
        IrType t = cg->f->node[n->arg[0]].type;
        src = (SumSource){x, nx, n->arg[0], t.dtype};
        shape = (Opnd){.a = be_access_dense(t, BE_ARENA, 0, 0), .t = t};
        x = &shape;             /* the index space of the dense operands */
    }
    bool red[IR_MAX_RANK] = {false};
    for (int i = 0; i < n->nlist; i++)
        red[n->list[i]] = true;
    /* The result's strides over the operand's dims: 0 along reduced ones. */
    int64_t ys[IR_MAX_RANK];
    int last = -1;
    for (int k = 0, j = 0; k < x->t.rank; k++) {
        ys[k] = red[k] ? 0 : y->a.stride[j++];
        if (x->t.dim[k] != 1)
            last = k;
    }
    if (n->op == OP_ARGMAX || last < 0 || red[last]) {
        if (emit_reduce_inner(cg, n, y, x, ys, red, &src))
            return true;
    } else if (src.fused < 0) {
        emit_reduce_outer(cg, n, y, x, ys);
        return true;
    }
    diag_error(cg->d, no_loc, "internal error: a fused sum that is not blocked");
    return false;
}
