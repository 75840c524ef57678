/* The kernels' shapes that the plan sizes scratch by (plan.h): the scratch
 * layout of a convolution, the register tiles and their cost model, and
 * which way each matrix product runs. */
#include "plan_impl.h"

#include <math.h>

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
    bool dense_b = !be_in_memory(b) || b->stride[1] == 0 || b->stride[1] == 1;
    bool dense_a = !be_in_memory(a) || a->stride[0] == 0 || a->stride[0] == 1;
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
    if (be_in_memory(a) && be_in_memory(b) && a->stride[1] == 1 && b->stride[0] == 1 && k >= 2 * vl) {
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
    if (be_in_memory(s) && ks != 0 && ks != 1 && k > 1 && cols >= BE_PACK_ROWS_TILES * be_tile_cols(dt)) {
        p.pack_rows = true;
        p.rows_at = p.bytes;
        p.bytes += aligned(sat_mul(sat_mul(rows, k), size));
    }
    return p;
}
