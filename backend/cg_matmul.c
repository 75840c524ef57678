/* Matrix products (cg.h): views (Mat) over any strides, register tiles
 * (cg_emit_gemm) with the fused loop's epilogue, dot products for thin
 * products, and matmul as be_matmul_plan says.  The convolutions run on
 * the same tiles (cg_conv.c). */
#include "cg.h"

/* Drop the extent-1 factors of a (and of b, which has a's dims, if not
 * NULL) and merge each factor into the next where both step evenly. */
void cg_split_simplify(Split *a, Split *b)
{
    Split na = {0}, nb = {0};
    for (int f = 0; f < a->n; f++) {
        if (a->dim[f] == 1 && (f < a->n - 1 || na.n > 0))
            continue;
        if (na.n > 0) {
            int l = na.n - 1;
            bool even = na.stride[l] == a->dim[f] * a->stride[f] && (!b || nb.stride[l] == b->dim[f] * b->stride[f]);
            if (even) {
                na.dim[l] *= a->dim[f];
                na.stride[l] = a->stride[f];
                if (b) {
                    nb.dim[l] *= b->dim[f];
                    nb.stride[l] = b->stride[f];
                }
                continue;
            }
        }
        na.dim[na.n] = a->dim[f];
        na.stride[na.n++] = a->stride[f];
        if (b) {
            nb.dim[nb.n] = b->dim[f];
            nb.stride[nb.n++] = b->stride[f];
        }
    }
    *a = na;
    if (b)
        *b = nb;
}

/* The offset of index i (digits by division by constant extents). */
static LLVMValueRef split_offset(Cg *cg, const Split *s, LLVMValueRef i)
{
    LLVMValueRef off = NULL, q = i;
    for (int f = s->n - 1; f >= 0; f--) {
        LLVMValueRef digit = q;
        if (f > 0) {
            LLVMValueRef d = cg_c64(cg, s->dim[f]);
            digit = LLVMBuildURem(cg->b, q, d, "");
            q = LLVMBuildUDiv(cg->b, q, d, "");
        }
        if (s->stride[f]) {
            LLVMValueRef t = LLVMBuildNSWMul(cg->b, digit, cg_c64(cg, s->stride[f]), "");
            off = off ? cg_idx_add(cg, off, t) : t;
        }
    }
    return off ? off : cg_c64(cg, 0);
}

/* The view of o with rows r and columns c from element 0.  A product's
 * A columns and B rows are one index: their splits have the same dims. */
Mat cg_mat(Cg *cg, const Opnd *o, Split r, Split c) { return (Mat){*o, cg_c64(cg, 0), r, c}; }

static LLVMValueRef view_load(Cg *cg, const Mat *m, LLVMValueRef idx)
{
    return cg_load_at(cg, &m->o, be_in_memory(&m->o.a) ? idx : NULL);
}

/* The nr elements idx, idx + cs, ... (cs: the column stride) as a vector
 * (nr = 1: a scalar). */
static LLVMValueRef view_load_vec(Cg *cg, const Mat *m, LLVMValueRef idx, int nr)
{
    int64_t cs = m->c.stride[0];
    if (nr == 1 || !be_in_memory(&m->o.a) || cs == 0)
        return cg_splat(cg, view_load(cg, m, idx), nr);
    if (cs == 1)
        return cg_load_vec_at(cg, &m->o, idx, nr);
    LLVMValueRef v = LLVMGetPoison(LLVMVectorType(cg_elem_type(cg, m->o.a.dtype), (unsigned)nr));
    for (int l = 0; l < nr; l++)
        v = LLVMBuildInsertElement(cg->b, v, view_load(cg, m, cg_idx_add(cg, idx, cg_c64(cg, l * cs))), cg_c64(cg, l),
                                   "");
    return v;
}

/* Store the first `ns` of the nr elements of v at idx, idx + cs, ... of m. */
static void view_store_vec(Cg *cg, Mat *m, LLVMValueRef idx, int nr, int ns, LLVMValueRef v)
{
    int64_t cs = m->c.stride[0];
    if (nr > 1 && cs == 1 && ns == nr) {
        LLVMTypeRef t = cg_elem_type(cg, m->o.a.dtype);
        if (m->o.a.offset)
            idx = cg_idx_add(cg, idx, cg_c64(cg, m->o.a.offset));
        LLVMValueRef s = LLVMBuildStore(cg->b, v, LLVMBuildInBoundsGEP2(cg->b, t, m->o.v, &idx, 1, ""));
        LLVMSetAlignment(s, (unsigned)ir_dtype_size(m->o.a.dtype));
        return;
    }
    for (int l = 0; l < ns; l++)
        cg_store_at(cg, &m->o, cg_idx_add(cg, idx, cg_c64(cg, l * cs)),
                    nr == 1 ? v : LLVMBuildExtractElement(cg->b, v, cg_c64(cg, l), ""));
}

/* What a product's tiles apply to their results before storing them: the
 * loop of cg->root, the product being cg->product, with its other
 * operands z[] (in cg_fused_operands' order) as views over the result's
 * indices; with `sum2`, cg->other's terms a2 @ b2 first, into the same
 * accumulators. */
struct Epilogue {
    int n;
    Mat z[BE_FUSE_LEAVES];
    bool sum2;
    Mat a2, b2;
};

/* The first ns of the nr elements idx, idx + cs, ... of m as a vector
 * (the others zero), reading no element past them. */
static LLVMValueRef view_load_lanes(Cg *cg, const Mat *m, LLVMValueRef idx, int nr, int ns)
{
    if (ns == nr || !be_in_memory(&m->o.a) || m->c.stride[0] == 0)
        return view_load_vec(cg, m, idx, nr);
    LLVMValueRef v = LLVMConstNull(LLVMVectorType(cg_elem_type(cg, m->o.a.dtype), (unsigned)nr));
    for (int l = 0; l < ns; l++)
        v = LLVMBuildInsertElement(cg->b, v, view_load(cg, m, cg_idx_add(cg, idx, cg_c64(cg, l * m->c.stride[0]))),
                                   cg_c64(cg, l), "");
    return v;
}

/* How many times to unroll a tile's innermost loop of n terms: its
 * largest divisor up to 4 (no remainder loop) once n is at least 64.  A
 * term is 12 FMAs (6 rows by 2 vectors) against 11 other instructions,
 * the loop's increments and branch among them; unrolled, the loads take
 * constant offsets instead.  The Omniglot MLP's x W1^T (784 terms) and
 * dW1 (75) ran 5-7% faster; sine's terms are fewer than 64.  A loop whose
 * body holds written-out terms (emit_tile_terms) is long enough: the conv
 * net's forward products ran slower unrolled. */
static int terms_unroll(int64_t n)
{
    for (int u = 4; n >= 64 && u > 1; u--)
        if (n % u == 0)
            return u;
    return 0;
}

/* acc[r] += A[irow[r], k] * B[k, j0 ..] for r < mr, k over the factors of
 * A's columns in order: the inner loop of a register tile. */
static void emit_tile_terms(Cg *cg, const Mat *A, const Mat *B, const LLVMValueRef *irow, LLVMValueRef j0, int mr,
                            int nr, LLVMTypeRef vt, LLVMValueRef *acc)
{
    LLVMValueRef arow[BE_TILE_ROWS];
    LLVMValueRef bcol = cg_idx_add(cg, B->base, LLVMBuildNSWMul(cg->b, j0, cg_c64(cg, B->c.stride[0]), ""));
    for (int r = 0; r < mr; r++)
        arow[r] = cg_idx_add(cg, A->base, split_offset(cg, &A->r, irow[r]));
    /* The innermost factors written out, when the last is as short as a
     * window's row (kw = 3), or at most 8 with other factors' loops around
     * it (a weight gradient's 7 positions of a row, in loops over rows and
     * images), for up to 16 terms (a 3 x 3 window): as loops, their
     * branches and the pointer updates around them cost as much as the
     * terms.  The terms keep their order. */
    int loops = A->c.n;
    int64_t run = 1;            /* terms written out */
    if (A->c.dim[loops - 1] <= (loops > 1 ? 8 : 4))
        while (loops > 0 && run * A->c.dim[loops - 1] <= 16)
            run *= A->c.dim[--loops];
    Loop lk[3];
    LLVMValueRef kv[3];
    for (int f = 0; f < loops; f++)
        kv[f] = cg_range_open(cg, &lk[f], 0, A->c.dim[f]);
    for (int64_t u = 0; u < run; u++) {
        for (int f = A->c.n - 1, rest = (int)u; f >= loops; f--) {
            kv[f] = cg_c64(cg, rest % A->c.dim[f]);
            rest /= (int)A->c.dim[f];
        }
        LLVMValueRef ak = cg_linear(cg, A->c.n, kv, A->c.stride), bk = cg_linear(cg, B->r.n, kv, B->r.stride);
        LLVMValueRef b = view_load_vec(cg, B, cg_idx_add(cg, bcol, bk), nr);
        for (int r = 0; r < mr; r++) {
            LLVMValueRef args[3] = {cg_splat(cg, view_load(cg, A, cg_idx_add(cg, arow[r], ak)), nr), b,
                                    LLVMBuildLoad2(cg->b, vt, acc[r], "")};
            LLVMBuildStore(cg->b, cg_intrinsic(cg, "llvm.fmuladd", vt, args, 3), acc[r]);
        }
    }
    for (int f = loops - 1; f >= 0; f--) {
        lk[f].scalar = true;        /* already vectors, and sequential in k */
        if (f == loops - 1 && run == 1)
            lk[f].unroll = terms_unroll(A->c.dim[f]);
        cg_range_close(cg, &lk[f]);
    }
}

/* Row i of a tile, the sums v of C's columns j0 .. j0+nr (element index
 * crow in C), stored: its first ns lanes, and with an epilogue e, e's
 * value at each element instead of the sum. */
static void tile_store(Cg *cg, Mat *C, const Epilogue *e, LLVMValueRef i, LLVMValueRef crow, LLVMValueRef j0, int nr,
                       int ns, LLVMValueRef v)
{
    if (e) {
        LLVMValueRef x[BE_FUSE_LEAVES];
        for (int q = 0; q < e->n; q++) {
            const Mat *z = &e->z[q];
            LLVMValueRef zc = LLVMBuildNSWMul(cg->b, j0, cg_c64(cg, z->c.stride[0]), "");
            LLVMValueRef zr = cg_idx_add(cg, z->base, split_offset(cg, &z->r, i));
            x[q] = view_load_lanes(cg, z, cg_idx_add(cg, zr, zc), nr, ns);
        }
        v = cg_fused_value(cg, cg->root, x, v, NULL);
    }
    view_store_vec(cg, C, crow, nr, ns, v);
}

/* One register tile of C (+)= A @ B: rows i0 .. i0+mr, columns j0 ..
 * j0+nr, over the factors of A's columns (B's rows: the same dims).  Each
 * element starts from 0 (with `accumulate`, from C) and takes fmuladd(A[i,
 * k], B[k, j], .) for k in order (with e->sum2, e->a2 @ e->b2's terms
 * first); the mr accumulators are independent vectors, held in registers.
 * Only the first ns columns are stored (the others are B's padding); with
 * an epilogue e, its value at each element instead of the sum. */
static void emit_gemm_tile(Cg *cg, Mat *C, const Mat *A, const Mat *B, LLVMValueRef i0, LLVMValueRef j0, int mr,
                           int nr, int ns, bool accumulate, const Epilogue *e)
{
    LLVMTypeRef t = cg_elem_type(cg, C->o.a.dtype), vt = nr > 1 ? LLVMVectorType(t, (unsigned)nr) : t;
    LLVMValueRef crow[BE_TILE_ROWS], acc[BE_TILE_ROWS], irow[BE_TILE_ROWS] = {NULL};
    LLVMValueRef ccol = LLVMBuildNSWMul(cg->b, j0, cg_c64(cg, C->c.stride[0]), "");
    for (int r = 0; r < mr; r++) {
        LLVMValueRef i = r ? LLVMBuildNUWAdd(cg->b, i0, cg_c64(cg, r), "") : i0;
        irow[r] = i;
        crow[r] = cg_idx_add(cg, cg_idx_add(cg, C->base, split_offset(cg, &C->r, i)), ccol);
        acc[r] = cg_entry_alloca(cg, vt, "acc");
        LLVMBuildStore(cg->b, accumulate ? view_load_vec(cg, C, crow[r], nr) : LLVMConstNull(vt), acc[r]);
    }
    if (e && e->sum2)
        emit_tile_terms(cg, &e->a2, &e->b2, irow, j0, mr, nr, vt, acc);
    emit_tile_terms(cg, A, B, irow, j0, mr, nr, vt, acc);
    for (int r = 0; r < mr; r++)
        tile_store(cg, C, e, irow[r], crow[r], j0, nr, ns, LLVMBuildLoad2(cg->b, vt, acc[r], ""));
}

/* C (+)= A @ B for C m x n by register tiles (smaller at the edges: the
 * last columns in tiles of halving widths, so that every vector is a power
 * of two, or with `padded`, where B's rows have zeros up to be_tile_pad
 * columns, in one tile of that width): column blocks outside, so that a
 * block of B stays in cache while every row block of A passes.  Simplifies
 * the views' splits first. */
void cg_emit_gemm(Cg *cg, Mat *C, Mat *A, Mat *B, int64_t m, int64_t n, bool accumulate, bool padded,
                  const Epilogue *e)
{
    cg_split_simplify(&C->r, NULL);
    cg_split_simplify(&A->r, NULL);
    cg_split_simplify(&A->c, &B->r);
    DType dt = C->o.a.dtype;
    int nr = be_tile_cols(dt);
    /* column groups: count tiles of width w storing ns columns each */
    int ng = 0, w[8], ns[8];
    int64_t count[8], j0 = 0;
    for (int wi = nr; wi >= 1; wi /= 2) {
        int64_t c = wi == nr || !padded ? (n - j0) / wi : 0;
        if (c) {
            w[ng] = ns[ng] = wi, count[ng++] = c;
            j0 += c * wi;
        }
    }
    if (padded && n > j0)               /* the rest in one tile */
        w[ng] = (int)(be_tile_pad(n, dt) - j0), ns[ng] = (int)(n - j0), count[ng++] = 1;
    int64_t mb = m / BE_TILE_ROWS;
    j0 = 0;
    for (int g = 0; g < ng; g++) {
        Loop lj, li;
        LLVMValueRef j = cg_range_open(cg, &lj, 0, count[g]);
        j = cg_idx_add(cg, cg_c64(cg, j0), LLVMBuildNUWMul(cg->b, j, cg_c64(cg, w[g]), ""));
        for (int rows = 0; rows < 2; rows++) {
            int h = rows ? (int)(m % BE_TILE_ROWS) : BE_TILE_ROWS;
            if (h == 0 || (!rows && mb == 0))
                continue;
            LLVMValueRef i = cg_range_open(cg, &li, 0, rows ? 1 : mb);
            i = rows ? cg_c64(cg, mb * BE_TILE_ROWS) : LLVMBuildNUWMul(cg->b, i, cg_c64(cg, BE_TILE_ROWS), "");
            emit_gemm_tile(cg, C, A, B, i, j, h, w[g], ns[g], accumulate, e);
            cg_range_close(cg, &li);
        }
        cg_range_close(cg, &lj);
        j0 += count[g] * w[g];
    }
}

/* C = A @ B (m x n, K terms) as dot products along k, A's rows and B's
 * columns both dense along k (be_matmul_plan's `dot`).  A tile is row i of
 * C by w columns (w: 32 bytes of elements), w accumulators of w lanes:
 * lane l of column j's sums A[i, k] * B[k, j] over the whole vectors of k
 * with k = l mod w, in order.  log2(w) rounds add the lanes in halves (the
 * rounds of emit_transpose, with adds: lanes l and l + w/2, then l + w/4,
 * and so on), which leaves column j0 + c's sum in lane c of one vector;
 * the last K mod w terms follow in order.  The last n mod w columns run in
 * one tile that stores fewer.  With an epilogue e, its value at each
 * element instead. */
static void emit_dot(Cg *cg, Mat *C, Mat *A, Mat *B, int64_t m, int64_t n, int64_t K, const Epilogue *e)
{
    cg_split_simplify(&C->r, NULL);
    cg_split_simplify(&A->r, NULL);
    cg_split_simplify(&A->c, &B->r);
    DType dt = C->o.a.dtype;
    int w = be_vector_lanes(dt);
    int64_t kb = K / w * w;
    LLVMTypeRef t = cg_elem_type(cg, dt), vt = LLVMVectorType(t, (unsigned)w);
    for (int last = 0; last < 2; last++) {
        int cols = last ? (int)(n % w) : w;
        int64_t count = last ? cols > 0 : n / w;
        if (count == 0)
            continue;
        Loop lj, li, lk;
        LLVMValueRef j0 = last ? cg_c64(cg, n / w * w)
                               : LLVMBuildNUWMul(cg->b, cg_range_open(cg, &lj, 0, count), cg_c64(cg, w), "");
        LLVMValueRef i = cg_range_open(cg, &li, 0, m);
        LLVMValueRef arow = cg_idx_add(cg, A->base, split_offset(cg, &A->r, i)), bcol[8], acc[8], v[8];
        for (int c = 0; c < cols; c++) {
            bcol[c] = cg_idx_add(cg, B->base, split_offset(cg, &B->c, cg_idx_add(cg, j0, cg_c64(cg, c))));
            acc[c] = cg_entry_alloca(cg, vt, "acc");
            LLVMBuildStore(cg->b, LLVMConstNull(vt), acc[c]);
        }
        if (kb > 0) {
            LLVMValueRef k0 = LLVMBuildNUWMul(cg->b, cg_range_open(cg, &lk, 0, kb / w), cg_c64(cg, w), "");
            LLVMValueRef a = cg_load_vec_at(cg, &A->o, cg_idx_add(cg, arow, k0), w);
            for (int c = 0; c < cols; c++) {
                LLVMValueRef args[3] = {a, cg_load_vec_at(cg, &B->o, cg_idx_add(cg, bcol[c], k0), w),
                                        LLVMBuildLoad2(cg->b, vt, acc[c], "")};
                LLVMBuildStore(cg->b, cg_intrinsic(cg, "llvm.fmuladd", vt, args, 3), acc[c]);
            }
            lk.scalar = true;       /* vectors already, and sequential in k */
            cg_range_close(cg, &lk);
        }
        for (int c = 0; c < w; c++)
            v[c] = c < cols ? LLVMBuildLoad2(cg->b, vt, acc[c], "") : LLVMConstNull(vt);
        for (int h = w / 2; h >= 1; h /= 2) {
            for (int r = 0; r < h; r++) {
                LLVMValueRef lo, hi;
                cg_shuffle_halves(cg, v[r], v[r + h], h, w, &lo, &hi);
                v[r] = LLVMBuildFAdd(cg->b, lo, hi, "");
            }
        }
        for (int64_t k = kb; k < K; k++) {
            LLVMValueRef b = LLVMConstNull(vt);
            for (int c = 0; c < cols; c++)
                b = LLVMBuildInsertElement(cg->b, b, cg_load_at(cg, &B->o, cg_idx_add(cg, bcol[c], cg_c64(cg, k))),
                                           cg_c64(cg, c), "");
            LLVMValueRef ak = cg_load_at(cg, &A->o, cg_idx_add(cg, arow, cg_c64(cg, k)));
            LLVMValueRef args[3] = {cg_splat(cg, ak, w), b, v[0]};
            v[0] = cg_intrinsic(cg, "llvm.fmuladd", vt, args, 3);
        }
        LLVMValueRef crow = cg_idx_add(cg, cg_idx_add(cg, C->base, split_offset(cg, &C->r, i)),
                                       LLVMBuildNSWMul(cg->b, j0, cg_c64(cg, C->c.stride[0]), ""));
        tile_store(cg, C, e, i, crow, j0, w, cols, v[0]);
        cg_range_close(cg, &li);
        if (!last)
            cg_range_close(cg, &lj);
    }
}

/* The views of product A @ B's operands for its tiles: a's rows and b's
 * columns the result's, b's rows read as vectors (swapped: C^T = B^T @
 * A^T, A's columns read as vectors). */
static void product_views(Cg *cg, const Opnd *A, const Opnd *B, bool swap, Mat *a, Mat *b)
{
    int64_t M = A->t.dim[0], K = A->t.dim[1], N = B->t.dim[1];
    const int64_t *as = A->a.stride, *bs = B->a.stride;
    *a = swap ? cg_mat(cg, B, cg_split1(N, bs[1]), cg_split1(K, bs[0]))
              : cg_mat(cg, A, cg_split1(M, as[0]), cg_split1(K, as[1]));
    *b = swap ? cg_mat(cg, A, cg_split1(K, as[1]), cg_split1(M, as[0]))
              : cg_mat(cg, B, cg_split1(K, bs[0]), cg_split1(N, bs[1]));
}

/* C = A @ B in cg_emit_gemm's tiles, as be_matmul_plan says: B's rows as
 * vectors, or C^T = B^T @ A^T with A's columns as vectors; the vector
 * operand packed dense into the scratch first where its vectors are not
 * contiguous, the other copied into rows dense along k where tiles would
 * read it a cache line per term.  Every element of C sums over k in order
 * either way.  Or, with both operands dense along k, as emit_dot's dot
 * products, in either orientation.  With nz > 0 the product is fused into
 * cg->root's loop, whose other operands are z[0, nz), and C is that loop's
 * result; with `sum2`, the loop's other product, A2 @ B2 (cg->other), runs
 * in the same tiles, its terms first. */
void cg_emit_matmul(Cg *cg, Opnd *C, const Opnd *A, const Opnd *B, const Opnd *z, int nz, const Opnd *A2,
                    const Opnd *B2)
{
    int64_t M = A->t.dim[0], K = A->t.dim[1], N = B->t.dim[1];
    BeMatmulPlan mp = be_matmul_plan(C->t, &A->a, A->t, &B->a, B->t);
    const Opnd *vec = mp.swap ? A : B;              /* the operand read as vectors */
    const int64_t *cs = C->a.stride;
    int64_t m = mp.swap ? N : M, n = mp.swap ? M : N;
    Mat a, b;
    product_views(cg, A, B, mp.swap, &a, &b);
    Mat c = mp.swap ? cg_mat(cg, C, cg_split1(N, cs[1]), cg_split1(M, cs[0]))
                    : cg_mat(cg, C, cg_split1(M, cs[0]), cg_split1(N, cs[1]));
    Epilogue e = {.n = nz, .sum2 = A2 != NULL};
    if (A2) {
        product_views(cg, A2, B2, mp.swap, &e.a2, &e.b2);
        cg_split_simplify(&e.a2.r, NULL);
        cg_split_simplify(&e.a2.c, &e.b2.r);
    }
    for (int q = 0; q < nz; q++) {
        const int64_t *zs = z[q].a.stride;
        e.z[q] = mp.swap ? cg_mat(cg, &z[q], cg_split1(N, zs[1]), cg_split1(M, zs[0]))
                         : cg_mat(cg, &z[q], cg_split1(M, zs[0]), cg_split1(N, zs[1]));
    }
    if (mp.dot) {
        emit_dot(cg, &c, &a, &b, m, n, K, cg->product >= 0 ? &e : NULL);
        C->v = c.o.v;
        return;
    }
    if (mp.pack) {
        /* K x n with rows of be_tile_pad(n) elements, zeros past n */
        int64_t np = be_tile_pad(n, vec->a.dtype);
        Opnd p = cg_scratch(cg, vec->a.dtype, 0, 2, (int[]){(int)K, (int)np});
        if (np > n) {
            Opnd pad = p;           /* columns [n, np) of every row */
            pad.t.dim[1] = (int)(np - n);
            pad.a.offset += n;
            cg_emit_zero(cg, &pad);
        }
        cg_emit_copy_to(cg, &p, mp.swap ? (int64_t[]){1, np} : (int64_t[]){np, 1}, vec);
        b = cg_mat(cg, &p, cg_split1(K, np), cg_split1(n, 1));
    }
    if (mp.pack_rows) {
        /* m x K, dense along k; the copy walks the operand along k
         * outside, so that it reads in memory order */
        const Opnd *sc = mp.swap ? B : A;
        Opnd p = cg_scratch(cg, sc->a.dtype, mp.rows_at, 2, (int[]){(int)m, (int)K});
        Opnd by_k = *sc;
        by_k.t.dim[0] = K, by_k.t.dim[1] = m;
        by_k.a.stride[0] = a.c.stride[0], by_k.a.stride[1] = a.r.stride[0];
        cg_emit_copy_to(cg, &p, (int64_t[]){1, K}, &by_k);
        a = cg_mat(cg, &p, cg_split1(m, K), cg_split1(K, 1));
    }
    cg_emit_gemm(cg, &c, &a, &b, m, n, false, mp.pack, cg->product >= 0 ? &e : NULL);
    C->v = c.o.v;           /* a register result: its element */
}
