/* The convolutions (cg.h): conv2d and its two gradients as matrix
 * products per image on cg_matmul.c's tiles, with im2col/col2im, padded
 * copies and the phases of conv2d_grad_x. */
#include "cg.h"

#include <math.h>

/* --- convolutions ---
 *
 * With K = C*KH*KW (the elements of one window) and P = Ho*Wo (the
 * positions of one output image), each convolution op is a matrix product
 * per image n:
 *
 *   conv2d         y[n] (O x P)  = w (O x K) @ xc[n] (K x P)
 *   conv2d_grad_x  dx[n]         = col2im(g[n]^T (P x O) @ w (O x K))
 *   conv2d_grad_w  dw (O x K)   += g[n] (O x P) @ xc[n]^T (P x K), n in order
 *
 * xc[n] is the im2col matrix: xc[n][k, p] = xp[n, c, oh*stride + kh,
 * ow*stride + kw] for k = (c, kh, kw) and p = (oh, ow), xp being x padded
 * with zeros; col2im adds each element of a K x P (or P x K) matrix into
 * the dx element its window position reaches (none in the padding).
 *
 * Products run in register tiles of BE_TILE_ROWS rows by one vector of
 * be_tile_cols() columns (cg_emit_gemm).  Each operand is a view whose rows
 * and columns split into factors with a stride each (Split), so xc is read
 * straight from x, or from a zero-padded copy of one image in the scratch,
 * as long as it is the operand read as scalars (A): conv2d tiles y[n]^T = xc[n]^T @ w^T and
 * conv2d_grad_w dw^T = xc[n] @ g[n]^T that way, with the channels as the
 * vector columns.  Where that costs more (be_gemm_cost: few channels, short
 * sums), the products run as written above instead, with xc packed.
 * conv2d_grad_x runs without col2im where it can, as one product per phase
 * of dx's positions (emit_conv2d_grad_x_phased); else as written above,
 * with the positions or the window elements as the columns, whichever is
 * cheaper.  The operand read as row vectors (B) is packed contiguous into
 * the scratch (be_conv_scratch) unless it already is.  matmul runs on the
 * same tiles (cg_emit_matmul).
 *
 * Each result element sums its terms in an order that depends only on the
 * op and its shapes: conv2d over (c, kh, kw) in order; conv2d_grad_w over
 * n, then (oh, ow); conv2d_grad_x by phases over (o, kh, kw), else over o
 * for each (c, kh, kw, oh, ow) in order (col2im).  Tiles start from zero
 * and take llvm.fmuladd (which may fuse, as in matmul); no other
 * reassociation, so results are the same on every run. */

typedef struct {
    int64_t C, H, W, O, KH, KW, Ho, Wo, stride, pad;    /* the images: cg->images */
    int64_t K, P;               /* C*KH*KW and Ho*Wo */
    int64_t Hp, Wp;             /* H and W padded */
} ConvDims;

/* The sizes of n from its result o[0] and operands o[1], o[2]. */
static ConvDims conv_dims(const IrNode *n, const Opnd *o)
{
    const IrType *x, *w, *y;
    if (n->op == OP_CONV2D)
        x = &o[1].t, w = &o[2].t, y = &o[0].t;
    else if (n->op == OP_CONV2D_GRAD_X)
        x = &o[0].t, w = &o[2].t, y = &o[1].t;
    else
        x = &o[1].t, w = &o[0].t, y = &o[2].t;
    ConvDims d = {
        .C = x->dim[1], .H = x->dim[2], .W = x->dim[3], .O = w->dim[0], .KH = w->dim[2],
        .KW = w->dim[3], .Ho = y->dim[2], .Wo = y->dim[3], .stride = n->list[IR_CONV_STRIDE],
        .pad = n->list[IR_CONV_PAD],
    };
    d.K = d.C * d.KH * d.KW;
    d.P = d.Ho * d.Wo;
    d.Hp = d.H + 2 * d.pad;
    d.Wp = d.W + 2 * d.pad;
    return d;
}

/* Operand o restricted to image n (its dim 0 dropped). */
static Opnd conv_image(Cg *cg, const Opnd *o, LLVMValueRef n)
{
    Opnd r = *o;
    r.t.rank = r.a.rank = o->t.rank - 1;
    for (int k = 0; k < r.t.rank; k++) {
        r.t.dim[k] = o->t.dim[k + 1];
        r.a.stride[k] = o->a.stride[k + 1];
    }
    if (be_in_memory(&o->a) && o->a.stride[0]) {
        LLVMValueRef off = LLVMBuildNSWMul(cg->b, n, cg_c64(cg, o->a.stride[0]), "");
        r.v = LLVMBuildInBoundsGEP2(cg->b, cg_elem_type(cg, o->a.dtype), o->v, &off, 1, "img");
    }
    return r;
}

/* Image x (rank 3, [C,H,W]) with its padding: itself when there is none,
 * else the padded copy `pad` in the scratch (its border zeroed once by the
 * caller) with x copied into its middle.  Sets *padded to whether it is
 * the copy, whose positions are then shifted by the pad. */
static Opnd conv_padded(Cg *cg, const ConvDims *d, const Opnd *x, const Opnd *pad, bool *padded)
{
    *padded = d->pad > 0;
    if (!*padded)
        return *x;
    Opnd mid = *pad;
    mid.a.offset = d->pad * d->Wp + d->pad;
    cg_emit_copy_to(cg, &mid, pad->a.stride, x);
    return *pad;
}

/* The loops over every window element k = (c, kh, kw) at every output
 * position p = (oh, ow), in that order (x's), setting iv[0..5) to c, kh,
 * kw, oh, ow. */
static void window_open(Cg *cg, const ConvDims *d, Loop *l, LLVMValueRef *iv)
{
    const int64_t ext[5] = {d->C, d->KH, d->KW, d->Ho, d->Wo};
    for (int i = 0; i < 5; i++)
        iv[i] = cg_range_open(cg, &l[i], 0, ext[i]);
}

static void window_close(Cg *cg, Loop *l)
{
    for (int i = 4; i >= 0; i--)
        cg_range_close(cg, &l[i]);
}

/* The index in image x (rank 3) of window element iv: at (c, oh*stride +
 * kh - pad, ow*stride + kw - pad), or without the "- pad" in a padded
 * copy.  Sets *inside to whether that is inside x (NULL when it always is),
 * and where it is not, the index is one that is (so that an access there
 * stays in bounds). */
static LLVMValueRef window_index(Cg *cg, const ConvDims *d, const Opnd *x, bool padded, const LLVMValueRef *iv,
                                 LLVMValueRef *inside)
{
    LLVMValueRef s = cg_c64(cg, d->stride);
    LLVMValueRef at[3] = {iv[0], cg_idx_add(cg, LLVMBuildNSWMul(cg->b, iv[3], s, ""), iv[1]),
                          cg_idx_add(cg, LLVMBuildNSWMul(cg->b, iv[4], s, ""), iv[2])};
    *inside = NULL;
    if (d->pad && !padded) {
        LLVMValueRef pad = cg_c64(cg, d->pad), zero = cg_c64(cg, 0);
        at[1] = LLVMBuildNSWSub(cg->b, at[1], pad, "");
        at[2] = LLVMBuildNSWSub(cg->b, at[2], pad, "");
        *inside = LLVMBuildAnd(cg->b, LLVMBuildICmp(cg->b, LLVMIntULT, at[1], cg_c64(cg, d->H), ""),
                               LLVMBuildICmp(cg->b, LLVMIntULT, at[2], cg_c64(cg, d->W), ""), "inside");
        at[1] = LLVMBuildSelect(cg->b, *inside, at[1], zero, "");
        at[2] = LLVMBuildSelect(cg->b, *inside, at[2], zero, "");
    }
    return cg_linear(cg, 3, at, x->a.stride);
}

/* k*ks + p*ps for window element iv. */
static LLVMValueRef window_col(Cg *cg, const ConvDims *d, const LLVMValueRef *iv, int64_t ks, int64_t ps)
{
    int64_t st[5] = {d->KH * d->KW * ks, d->KW * ks, ks, d->Wo * ps, ps};
    return cg_linear(cg, 5, iv, st);
}

/* im2col: dst(k, p) at k*ks + p*ps = xc of image x (rank 3; `padded`: a
 * padded copy), 0 in the padding. */
static void emit_im2col(Cg *cg, const ConvDims *d, const Opnd *x, bool padded, Opnd *dst, int64_t ks, int64_t ps)
{
    Loop l[5];
    LLVMValueRef iv[5], inside;
    window_open(cg, d, l, iv);
    LLVMValueRef idx = window_index(cg, d, x, padded, iv, &inside);
    LLVMValueRef e = cg_load_at(cg, x, be_in_memory(&x->a) ? idx : NULL);
    if (inside)
        e = LLVMBuildSelect(cg->b, inside, e, LLVMConstNull(cg_elem_type(cg, x->a.dtype)), "");
    cg_store_at(cg, dst, window_col(cg, d, iv, ks, ps), e);
    window_close(cg, l);
}

/* col2im: image dx (rank 3, in memory; `padded`: a padded copy) +=
 * src(k, p) at k*ks + p*ps for every window element, those in the
 * padding dropped. */
static void emit_col2im(Cg *cg, const ConvDims *d, Opnd *dx, bool padded, const Opnd *src, int64_t ks, int64_t ps)
{
    Loop l[5];
    LLVMValueRef iv[5], inside;
    window_open(cg, d, l, iv);
    LLVMValueRef idx = window_index(cg, d, dx, padded, iv, &inside);
    LLVMValueRef e = cg_load_at(cg, src, window_col(cg, d, iv, ks, ps));
    if (inside)
        e = LLVMBuildSelect(cg->b, inside, e, LLVMConstNull(cg_elem_type(cg, src->a.dtype)), "");
    cg_store_at(cg, dx, idx, LLVMBuildFAdd(cg->b, cg_load_at(cg, dx, idx), e, ""));
    window_close(cg, l);
}

/* The stride of w's window elements k = (c, kh, kw) as one dim, or -1
 * when they do not step evenly. */
static int64_t w_k_stride(const Opnd *w)
{
    Split k = cg_split3(w->t.dim[1], w->a.stride[1], w->t.dim[2], w->a.stride[2], w->t.dim[3], w->a.stride[3]);
    cg_split_simplify(&k, NULL);
    return k.n == 1 ? k.stride[0] : -1;
}

/* The stride of image g's positions p = (oh, ow) as one dim, or -1. */
static int64_t g_p_stride(const Opnd *g)
{
    Split p = cg_split2(g->t.dim[1], g->a.stride[1], g->t.dim[2], g->a.stride[2]);
    cg_split_simplify(&p, NULL);
    return p.n == 1 ? p.stride[0] : -1;
}

/* The scratch regions of a node (be_conv_scratch). */
typedef struct {
    Opnd w;                     /* [C,KH,KW,O]: w^T packed, or conv2d_grad_w's sums dw^T; read as (o, k) views too */
    Opnd x, g;                  /* read and written through views */
    Opnd pad;                   /* [C,Hp,Wp]: a padded image, when direct and pad > 0 */
    bool padded;                /* pad is there */
    Opnd gpad;                  /* [O,gpad_h,gpad_w]: conv2d_grad_x's padded g, when phased */
} ConvScratch;

static ConvScratch conv_scratch_regions(Cg *cg, const ConvDims *d, DType dt, const BeConvScratch *s)
{
    ConvScratch r;
    r.w = cg_scratch(cg, dt, s->w, 4, (int[]){(int)d->C, (int)d->KH, (int)d->KW, (int)d->O});
    r.x = cg_scratch(cg, dt, s->x, 0, NULL);
    r.g = cg_scratch(cg, dt, s->g, 0, NULL);
    r.padded = s->direct && d->pad;
    r.pad = cg_scratch(cg, dt, s->pad, r.padded ? 3 : 0, (int[]){(int)d->C, (int)d->Hp, (int)d->Wp});
    r.gpad = cg_scratch(cg, dt, s->gpad, s->phased ? 3 : 0, (int[]){(int)d->O, (int)s->gpad_h, (int)s->gpad_w});
    return r;
}

/* Image x as read by a product: in place, or its padded copy (made here;
 * the caller zeroed the copy's border before the image loop). */
static Opnd conv_source(Cg *cg, const ConvDims *d, const Opnd *x, const ConvScratch *s, bool *padded)
{
    if (s->padded)
        return conv_padded(cg, d, x, &s->pad, padded);
    *padded = false;
    return *x;
}

/* Output positions (h, w) (strides sh, sw) as the rows of a product of
 * `terms` terms over windows `kw` wide: a tile's BE_TILE_ROWS rows are w /
 * BE_TILE_ROWS positions apart along w where that divides w and keeps
 * their windows apart, else adjacent.  Adjacent positions' windows
 * overlap, so a tile's written-out terms (emit_tile_terms) read the same
 * element for several rows; LLVM then keeps those loads in registers from
 * one term to the next, more than AVX2's 16 hold beside 12 accumulators,
 * and spills them every term.  But the tile's results are stored one
 * element at a time (the positions are the result's columns), and only
 * adjacent positions' stores combine into vectors: with fewer than
 * SPREAD_TERMS terms (conv2d of 3 channels: 27) the stores cost more than
 * the spills (the first conv of mini-conv ran 40% slower spread).  Each
 * element's sum keeps its order. */
enum { SPREAD_TERMS = 64 };

static Split tile_positions(int64_t h, int64_t sh, int64_t w, int64_t sw, int64_t kw, int64_t terms)
{
    int64_t apart = w / BE_TILE_ROWS;
    if (w % BE_TILE_ROWS || apart < kw || terms < SPREAD_TERMS)
        return cg_split2(h, sh, w, sw);
    return cg_split3(h, sh, apart, sw, BE_TILE_ROWS, apart * sw);
}

/* y = conv2d(x, w): y[n]^T = xc[n]^T @ w^T with x's windows read in place
 * (columns: channels), or y[n] = w @ xc[n] with xc packed (columns:
 * positions). */
static void emit_conv2d(Cg *cg, const ConvDims *d, Opnd *o, ConvScratch *s, bool direct)
{
    const Opnd *w = &o[2];
    const int64_t *ws = w->a.stride;
    DType dt = o[0].a.dtype;
    bool by_o = direct && be_gemm_cost(d->P, d->O, d->K, true, false, false, dt) <=
                              be_gemm_cost(d->O, d->P, d->K, false, false, false, dt) + 1.5 * (double)(d->K * d->P);
    Mat wt = cg_mat(cg, w, cg_split3(d->C, ws[1], d->KH, ws[2], d->KW, ws[3]), cg_split1(d->O, ws[0]));
    if (by_o && be_in_memory(&w->a) && ws[0] != 1) {       /* w^T packed: K x O */
        cg_emit_copy_to(cg, &s->w, (int64_t[]){1, d->KH * d->KW * d->O, d->KW * d->O, d->O}, w);
        wt = cg_mat(cg, &s->w, cg_split3(d->C, d->KH * d->KW * d->O, d->KH, d->KW * d->O, d->KW, d->O),
                    cg_split1(d->O, 1));
    }
    if (s->padded)
        cg_emit_zero(cg, &s->pad);
    Loop ln;
    LLVMValueRef n = cg_loop_open_to(cg, &ln, 0, cg->images);
    Opnd x = conv_image(cg, &o[1], n), y = conv_image(cg, &o[0], n);
    bool padded;
    Opnd xs = conv_source(cg, d, &x, s, &padded);
    if (by_o) {
        const int64_t *st = xs.a.stride;
        int64_t kw = (d->KW + d->stride - 1) / d->stride;      /* positions a window spans along w */
        Mat a = cg_mat(cg, &xs, tile_positions(d->Ho, d->stride * st[1], d->Wo, d->stride * st[2], kw, d->K),
                       cg_split3(d->C, st[0], d->KH, st[1], d->KW, st[2]));
        Mat c = cg_mat(cg, &y, tile_positions(d->Ho, d->Wo, d->Wo, 1, kw, d->K),
                       cg_split1(d->O, d->P));
        cg_emit_gemm(cg, &c, &a, &wt, d->P, d->O, false, false, NULL);
    } else {
        emit_im2col(cg, d, &xs, padded, &s->x, d->P, 1);
        Mat a = cg_mat(cg, w, cg_split1(d->O, ws[0]), cg_split3(d->C, ws[1], d->KH, ws[2], d->KW, ws[3]));
        Mat b = cg_mat(cg, &s->x, cg_split3(d->C, d->KH * d->KW * d->P, d->KH, d->KW * d->P, d->KW, d->P),
                       cg_split1(d->P, 1));
        Mat c = cg_mat(cg, &y, cg_split1(d->O, d->P), cg_split1(d->P, 1));
        cg_emit_gemm(cg, &c, &a, &b, d->O, d->P, false, false, NULL);
    }
    cg_range_close(cg, &ln);
}

/* conv2d_grad_x by phases.  A dx position (h, v) is reached by the
 * kernel rows kh = rh + stride*jh and columns kw = rv + stride*jv of its
 * phase (rh, rv) = ((h + pad) % stride, (v + pad) % stride), from g's
 * position (qh - jh, qv - jv) with (qh, qv) = ((h + pad) / stride, (v + pad)
 * / stride).  So each phase of dx's positions is one product: dx_phase^T
 * (positions x C) = gp (positions x (o, jh, jv)) @ w_phase ((o, jh, jv) x
 * C), gp read in place from g padded with zeros (gpad), w_phase w's
 * elements of the phase, packed.  No column sums, no col2im: each element
 * sums over (o, jh, jv) in order. */
typedef struct {
    int64_t jh, jv;             /* kernel rows and columns of the phase */
    int64_t qh0, mh, qv0, mv;   /* its dx positions: qh in [qh0, qh0 + mh), ... */
} ConvPhase;

/* floor(a / b) for b > 0 */
static int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

static ConvPhase conv_phase(const ConvDims *d, int64_t rh, int64_t rv)
{
    int64_t s = d->stride;
    ConvPhase p;
    p.jh = rh < d->KH ? (d->KH - rh + s - 1) / s : 0;
    p.jv = rv < d->KW ? (d->KW - rv + s - 1) / s : 0;
    p.qh0 = (d->pad - rh + s - 1) / s;      /* h >= 0; pad - rh > -s */
    p.qv0 = (d->pad - rv + s - 1) / s;
    p.mh = floor_div(d->H - 1 + d->pad - rh, s) + 1 - p.qh0;
    p.mv = floor_div(d->W - 1 + d->pad - rv, s) + 1 - p.qv0;
    p.mh = p.mh > 0 ? p.mh : 0;
    p.mv = p.mv > 0 ? p.mv : 0;
    return p;
}

/* The cost (be_gemm_cost's) of conv2d_grad_x by phases, per image. */
static double phased_cost(const ConvDims *d, const BeConvScratch *bs, DType dt)
{
    double cost = (double)(d->O * bs->gpad_h * bs->gpad_w);
    for (int64_t rh = 0; rh < d->stride; rh++)
        for (int64_t rv = 0; rv < d->stride; rv++) {
            ConvPhase p = conv_phase(d, rh, rv);
            if (p.jh && p.jv && p.mh && p.mv)
                cost += be_gemm_cost(p.mh * p.mv, d->C, d->O * p.jh * p.jv, true, false, false, dt);
        }
    return cost;
}

static void emit_conv2d_grad_x_phased(Cg *cg, const ConvDims *d, Opnd *o, ConvScratch *s, const BeConvScratch *bs)
{
    const Opnd *w = &o[2];
    const int64_t *ws = w->a.stride;
    int64_t S = d->stride, at = 0, start[BE_CONV_MAX_PHASES] = {0};
    bool gaps = false;
    for (int64_t rh = 0; rh < S; rh++)
        for (int64_t rv = 0; rv < S; rv++) {
            ConvPhase p = conv_phase(d, rh, rv);
            start[rh * S + rv] = at;
            gaps |= p.mh && p.mv && !(p.jh && p.jv);
            if (!p.jh || !p.jv)
                continue;
            /* w[o, c, rh + S*jh, rv + S*jv] as [O,C,JH,JV] into rows (o, jh, jv), columns c */
            Opnd src = *w, dst = s->w;
            src.t.dim[2] = (int)p.jh;
            src.t.dim[3] = (int)p.jv;
            src.a.stride[2] = S * ws[2];
            src.a.stride[3] = S * ws[3];
            src.a.offset += rh * ws[2] + rv * ws[3];
            dst.a.offset = at;
            cg_emit_copy_to(cg, &dst, (int64_t[]){p.jh * p.jv * d->C, 1, p.jv * d->C, d->C}, &src);
            at += d->O * d->C * p.jh * p.jv;
        }
    if (gaps)                           /* positions no kernel element reaches */
        cg_emit_zero(cg, &o[0]);
    cg_emit_zero(cg, &s->gpad);
    int64_t gh = bs->gpad_h * bs->gpad_w, gw = bs->gpad_w;     /* gpad's strides of o and a row */
    Loop ln;
    LLVMValueRef n = cg_loop_open_to(cg, &ln, 0, cg->images);
    Opnd g = conv_image(cg, &o[1], n), dx = conv_image(cg, &o[0], n), mid = s->gpad;
    mid.a.offset = bs->gpad_top * gw + bs->gpad_left;
    cg_emit_copy_to(cg, &mid, s->gpad.a.stride, &g);
    const int64_t *xs = dx.a.stride;
    for (int64_t rh = 0; rh < S; rh++)
        for (int64_t rv = 0; rv < S; rv++) {
            ConvPhase p = conv_phase(d, rh, rv);
            if (!p.jh || !p.jv || !p.mh || !p.mv)
                continue;
            Mat a = cg_mat(cg, &s->gpad, tile_positions(p.mh, gw, p.mv, 1, p.jv, d->O * p.jh * p.jv),
                           cg_split3(d->O, gh, p.jh, -gw, p.jv, -1));
            a.base = cg_c64(cg, (p.qh0 + bs->gpad_top) * gw + p.qv0 + bs->gpad_left);
            Mat b = cg_mat(cg, &s->w, cg_split3(d->O, p.jh * p.jv * d->C, p.jh, p.jv * d->C, p.jv, d->C),
                           cg_split1(d->C, 1));
            b.base = cg_c64(cg, start[rh * S + rv]);
            Mat c = cg_mat(cg, &dx, tile_positions(p.mh, S * xs[1], p.mv, S * xs[2], p.jv, d->O * p.jh * p.jv),
                           cg_split1(d->C, xs[0]));
            c.base = cg_c64(cg, (S * p.qh0 + rh - d->pad) * xs[1] + (S * p.qv0 + rv - d->pad) * xs[2]);
            cg_emit_gemm(cg, &c, &a, &b, p.mh * p.mv, d->C, false, false, NULL);
        }
    cg_range_close(cg, &ln);
}

/* dx = conv2d_grad_x(g, w): per image, the window sums dc = g[n]^T @ w
 * (columns: window elements) or dc^T = w^T @ g[n] (columns: positions) into
 * the scratch, then added up by col2im into dx, or into a padded copy of
 * the image whose middle is then copied into dx. */
static void emit_conv2d_grad_x(Cg *cg, const ConvDims *d, Opnd *o, ConvScratch *s, const BeConvScratch *bs)
{
    const Opnd *w = &o[2];
    const int64_t *ws = w->a.stride;
    DType dt = o[0].a.dtype;
    double cost_k = be_gemm_cost(d->P, d->K, d->O, false, false, false, dt) + (double)(d->K * d->P);  /* + strided reads */
    double cost_p = be_gemm_cost(d->K, d->P, d->O, false, false, false, dt);
    if (bs->phased && phased_cost(d, bs, dt) <= fmin(cost_k, cost_p) + 2 * (double)(d->K * d->P)) {
        emit_conv2d_grad_x_phased(cg, d, o, s, bs);
        return;
    }
    bool by_k = cost_k <= cost_p;
    if (!s->padded)
        cg_emit_zero(cg, &o[0]);
    int64_t ks = w_k_stride(w);
    Mat wm = cg_mat(cg, w, cg_split1(d->O, ws[0]), cg_split1(d->K, ks));         /* O x K, rows read as vectors */
    if (by_k && be_in_memory(&w->a) && ks != 1) {
        cg_emit_copy_to(cg, &s->w, (int64_t[]){d->K, d->KH * d->KW, d->KW, 1}, w);
        wm = cg_mat(cg, &s->w, cg_split1(d->O, d->K), cg_split1(d->K, 1));
    }
    Loop ln;
    LLVMValueRef n = cg_loop_open_to(cg, &ln, 0, cg->images);
    Opnd g = conv_image(cg, &o[1], n), dx = conv_image(cg, &o[0], n);
    const int64_t *gs = g.a.stride;
    int64_t cks = by_k ? 1 : d->P, cps = by_k ? d->K : 1;   /* dc's strides */
    if (by_k) {
        Mat a = cg_mat(cg, &g, cg_split2(d->Ho, gs[1], d->Wo, gs[2]), cg_split1(d->O, gs[0]));
        Mat c = cg_mat(cg, &s->x, cg_split1(d->P, d->K), cg_split1(d->K, 1));
        cg_emit_gemm(cg, &c, &a, &wm, d->P, d->K, false, false, NULL);
    } else {
        int64_t ps = g_p_stride(&g);
        Mat b = cg_mat(cg, &g, cg_split1(d->O, gs[0]), cg_split1(d->P, ps));
        if (be_in_memory(&g.a) && ps != 1) {
            cg_emit_copy_to(cg, &s->g, (int64_t[]){d->P, d->Wo, 1}, &g);
            b = cg_mat(cg, &s->g, cg_split1(d->O, d->P), cg_split1(d->P, 1));
        }
        Mat a = cg_mat(cg, w, cg_split3(d->C, ws[1], d->KH, ws[2], d->KW, ws[3]), cg_split1(d->O, ws[0]));
        Mat c = cg_mat(cg, &s->x, cg_split1(d->K, d->P), cg_split1(d->P, 1));
        cg_emit_gemm(cg, &c, &a, &b, d->K, d->P, false, false, NULL);
    }
    if (s->padded) {
        cg_emit_zero(cg, &s->pad);
        emit_col2im(cg, d, &s->pad, true, &s->x, cks, cps);
        Opnd mid = s->pad;
        mid.a.offset = d->pad * d->Wp + d->pad;
        mid.t = dx.t;
        cg_emit_map(cg, NULL, 3, dx.t.dim, &dx, 1, &mid);
    } else {
        emit_col2im(cg, d, &dx, false, &s->x, cks, cps);
    }
    cg_range_close(cg, &ln);
}

/* dw = conv2d_grad_w(x, g): dw^T += xc[n] @ g[n]^T with x's windows read in
 * place (columns: channels; summed in the scratch, then transposed into
 * dw), or dw += g[n] @ xc[n]^T with xc packed (columns: window elements). */
static void emit_conv2d_grad_w(Cg *cg, const ConvDims *d, Opnd *o, ConvScratch *s, bool direct)
{
    DType dt = o[0].a.dtype;
    bool by_o = direct && be_gemm_cost(d->K, d->O, d->P, false, true, false, dt) + (double)(d->O * d->P) <=
                              be_gemm_cost(d->O, d->K, d->P, false, true, false, dt) + 1.5 * (double)(d->K * d->P);
    Opnd *sum = &s->w;                  /* dw^T: [C,KH,KW,O] */
    cg_emit_zero(cg, by_o ? sum : &o[0]);
    if (by_o && s->padded)
        cg_emit_zero(cg, &s->pad);
    Loop ln;
    LLVMValueRef n = cg_loop_open_to(cg, &ln, 0, cg->images);
    Opnd x = conv_image(cg, &o[1], n), g = conv_image(cg, &o[2], n);
    const int64_t *gs = g.a.stride;
    if (by_o) {
        bool padded;
        Opnd xs = conv_source(cg, d, &x, s, &padded);
        const int64_t *st = xs.a.stride;
        Mat a = cg_mat(cg, &xs, cg_split3(d->C, st[0], d->KH, st[1], d->KW, st[2]),
                       cg_split2(d->Ho, d->stride * st[1], d->Wo, d->stride * st[2]));
        Mat b = cg_mat(cg, &g, cg_split2(d->Ho, gs[1], d->Wo, gs[2]), cg_split1(d->O, gs[0]));      /* g^T, P x O */
        if (be_in_memory(&g.a) && gs[0] != 1) {
            cg_emit_copy_to(cg, &s->g, (int64_t[]){1, d->Wo * d->O, d->O}, &g);
            b = cg_mat(cg, &s->g, cg_split2(d->Ho, d->Wo * d->O, d->Wo, d->O), cg_split1(d->O, 1));
        }
        Mat c = cg_mat(cg, sum, cg_split1(d->K, d->O), cg_split1(d->O, 1));
        cg_emit_gemm(cg, &c, &a, &b, d->K, d->O, true, false, NULL);
    } else {
        emit_im2col(cg, d, &x, false, &s->x, 1, d->K);
        Mat a = cg_mat(cg, &g, cg_split1(d->O, gs[0]), cg_split2(d->Ho, gs[1], d->Wo, gs[2]));
        Mat b = cg_mat(cg, &s->x, cg_split2(d->Ho, d->Wo * d->K, d->Wo, d->K), cg_split1(d->K, 1));
        Mat c = cg_mat(cg, &o[0], cg_split1(d->O, d->K), cg_split1(d->K, 1));
        cg_emit_gemm(cg, &c, &a, &b, d->O, d->K, true, false, NULL);
    }
    cg_range_close(cg, &ln);
    if (by_o)
        cg_emit_copy_to(cg, &o[0], (int64_t[]){d->KH * d->KW, d->KW, 1, d->K}, sum);
}

bool cg_emit_conv(Cg *cg, const IrNode *n, Opnd *o)
{
    ConvDims d = conv_dims(n, o);
    BeConvScratch bs = be_conv_scratch(cg->f, n);
    ConvScratch s = conv_scratch_regions(cg, &d, o[0].a.dtype, &bs);
    if (n->op == OP_CONV2D)
        emit_conv2d(cg, &d, o, &s, bs.direct);
    else if (n->op == OP_CONV2D_GRAD_X)
        emit_conv2d_grad_x(cg, &d, o, &s, &bs);
    else
        emit_conv2d_grad_w(cg, &d, o, &s, bs.direct);
    return true;
}
