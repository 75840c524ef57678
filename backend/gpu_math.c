/* Elementary functions for the GPU target (gpu_impl.h).  NVPTX lowers
 * llvm.exp and llvm.log to calls of a libm that PTX does not have (CUDA
 * links its libdevice, which needs the toolkit), so the kernels carry
 * their own: each an internal f64 function of the module, built once, the
 * f32 case through f64 (so within an ulp of the correctly rounded f32).
 * The host build of the kernels (gpu_target.c) runs the same code, so the
 * CPU check covers it.  Accuracy: a few ulps of f64 (fdlibm's reductions
 * and, for log, its minimax polynomial; Taylor polynomials carried past
 * f64's precision for exp and expm1). */
#include "gpu_impl.h"

#include <string.h>

typedef struct {
    Gpu *g;
    LLVMBuilderRef b;
} Fn;

static LLVMValueRef cf(const Fn *m, double v) { return LLVMConstReal(m->g->f64, v); }

static LLVMValueRef fcmp(const Fn *m, LLVMRealPredicate p, LLVMValueRef a, LLVMValueRef b)
{
    return LLVMBuildFCmp(m->b, p, a, b, "");
}

static LLVMValueRef call(const Fn *m, const char *name, LLVMValueRef *args, unsigned n)
{
    unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
    LLVMTypeRef t = m->g->f64;
    return LLVMBuildCall2(m->b, LLVMIntrinsicGetType(m->g->ctx, id, &t, 1),
                          LLVMGetIntrinsicDeclaration(m->g->mod, id, &t, 1), args, n, "");
}

static LLVMValueRef fma3(const Fn *m, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c)
{
    LLVMValueRef args[3] = {a, b, c};
    return call(m, "llvm.fma", args, 3);
}

/* c[n-1] x^(n-1) + ... + c[0] by Horner's rule. */
static LLVMValueRef horner(const Fn *m, LLVMValueRef x, const double *c, int n)
{
    LLVMValueRef p = cf(m, c[n - 1]);
    for (int i = n - 2; i >= 0; i--)
        p = fma3(m, p, x, cf(m, c[i]));
    return p;
}

/* 2^k for an i64 k in [-1022, 1023]. */
static LLVMValueRef pow2i(const Fn *m, LLVMValueRef k)
{
    Gpu *g = m->g;
    LLVMValueRef e = LLVMBuildShl(m->b, LLVMBuildAdd(m->b, k, gpu_c64(g, 1023), ""), gpu_c64(g, 52), "");
    return LLVMBuildBitCast(m->b, e, g->f64, "");
}

/* The internal function `name` (f64 -> f64), or NULL with m->b at the
 * start of its fresh body, its argument in *x. */
static LLVMValueRef begin(Gpu *g, Fn *m, const char *name, LLVMValueRef *x)
{
    LLVMValueRef fn = LLVMGetNamedFunction(g->mod, name);
    if (fn)
        return fn;
    fn = LLVMAddFunction(g->mod, name, LLVMFunctionType(g->f64, &g->f64, 1, 0));
    LLVMSetLinkage(fn, LLVMInternalLinkage);
    m->g = g;
    m->b = LLVMCreateBuilderInContext(g->ctx);
    LLVMPositionBuilderAtEnd(m->b, LLVMAppendBasicBlockInContext(g->ctx, fn, "entry"));
    *x = LLVMGetParam(fn, 0);
    return NULL;
}

static LLVMValueRef end(Fn *m, LLVMValueRef y)
{
    LLVMBuildRet(m->b, y);
    LLVMValueRef fn = LLVMGetBasicBlockParent(LLVMGetInsertBlock(m->b));
    LLVMDisposeBuilder(m->b);
    return fn;
}

/* f(x) in x's type: f64 directly, f32 through f64. */
static LLVMValueRef apply(Gpu *g, LLVMValueRef fn, LLVMValueRef x)
{
    LLVMTypeRef t = LLVMTypeOf(x);
    LLVMValueRef xd = t == g->f64 ? x : LLVMBuildFPExt(g->b, x, g->f64, "");
    LLVMValueRef y = LLVMBuildCall2(g->b, LLVMFunctionType(g->f64, &g->f64, 1, 0), fn, &xd, 1, "");
    return t == g->f64 ? y : LLVMBuildFPTrunc(g->b, y, t, "");
}

static const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;

/* e^x: x = k ln2 + r, |r| <= ln2/2 (Cody and Waite, ln2 in two parts), e^r
 * by its Taylor polynomial of degree 13 (truncation below 1e-17), scaled
 * by 2^k in two halves so that no factor leaves the normal range. */
static LLVMValueRef exp_fn(Gpu *g)
{
    Fn m;
    LLVMValueRef x, fn = begin(g, &m, "mamlc.exp", &x);
    if (fn)
        return fn;
    LLVMValueRef lim[2] = {x, cf(&m, 710)};
    LLVMValueRef xc = call(&m, "llvm.minnum", lim, 2);
    lim[0] = xc;
    lim[1] = cf(&m, -746);
    xc = call(&m, "llvm.maxnum", lim, 2);
    LLVMValueRef kf = LLVMBuildFMul(m.b, xc, cf(&m, 1.4426950408889634), "");
    kf = call(&m, "llvm.rint", &kf, 1);
    LLVMValueRef nk = LLVMBuildFNeg(m.b, kf, "");
    LLVMValueRef r = fma3(&m, nk, cf(&m, ln2_hi), xc);
    r = fma3(&m, nk, cf(&m, ln2_lo), r);
    double c[14];
    c[0] = 1;
    for (int i = 1; i < 14; i++)
        c[i] = c[i - 1] / i;
    LLVMValueRef p = horner(&m, r, c, 14);
    LLVMValueRef k = LLVMBuildFPToSI(m.b, kf, g->i64, "");
    LLVMValueRef h1 = LLVMBuildAShr(m.b, k, gpu_c64(g, 1), "");
    LLVMValueRef h2 = LLVMBuildSub(m.b, k, h1, "");
    LLVMValueRef y = LLVMBuildFMul(m.b, LLVMBuildFMul(m.b, p, pow2i(&m, h1), ""), pow2i(&m, h2), "");
    y = LLVMBuildSelect(m.b, fcmp(&m, LLVMRealOGT, x, cf(&m, 709.782712893384)), cf(&m, __builtin_inf()), y, "");
    y = LLVMBuildSelect(m.b, fcmp(&m, LLVMRealOLT, x, cf(&m, -745.2)), cf(&m, 0), y, "");
    y = LLVMBuildSelect(m.b, fcmp(&m, LLVMRealUNO, x, x), x, y, "");
    return end(&m, y);
}

/* log x as fdlibm's e_log.c: x = 2^e m, m in [sqrt(2)/2, sqrt(2)), f = m - 1,
 * s = f / (2 + f), log m = f - (f^2/2 - s (f^2/2 + R(s^2))) with fdlibm's
 * minimax R; subnormal x scaled by 2^54 first. */
static LLVMValueRef log_fn(Gpu *g)
{
    Fn m;
    LLVMValueRef x, fn = begin(g, &m, "mamlc.log", &x);
    if (fn)
        return fn;
    LLVMValueRef sub = fcmp(&m, LLVMRealOLT, x, cf(&m, 2.2250738585072014e-308));
    LLVMValueRef xs = LLVMBuildSelect(m.b, sub, LLVMBuildFMul(m.b, x, cf(&m, 18014398509481984.0), ""), x, "");
    LLVMValueRef bits = LLVMBuildBitCast(m.b, xs, g->i64, "");
    LLVMValueRef e = LLVMBuildAnd(m.b, LLVMBuildLShr(m.b, bits, gpu_c64(g, 52), ""), gpu_c64(g, 0x7ff), "");
    e = LLVMBuildSub(m.b, e, LLVMBuildSelect(m.b, sub, gpu_c64(g, 1023 + 54), gpu_c64(g, 1023), ""), "");
    LLVMValueRef mb = LLVMBuildOr(m.b, LLVMBuildAnd(m.b, bits, gpu_c64(g, 0x000fffffffffffffLL), ""),
                                  gpu_c64(g, 0x3ff0000000000000LL), "");
    LLVMValueRef mv = LLVMBuildBitCast(m.b, mb, g->f64, "");
    LLVMValueRef big = fcmp(&m, LLVMRealOGT, mv, cf(&m, 1.4142135623730951));
    mv = LLVMBuildSelect(m.b, big, LLVMBuildFMul(m.b, mv, cf(&m, 0.5), ""), mv, "");
    e = LLVMBuildAdd(m.b, e, LLVMBuildZExt(m.b, big, g->i64, ""), "");
    LLVMValueRef f = LLVMBuildFSub(m.b, mv, cf(&m, 1), "");
    LLVMValueRef s = LLVMBuildFDiv(m.b, f, LLVMBuildFAdd(m.b, cf(&m, 2), f, ""), "");
    LLVMValueRef z = LLVMBuildFMul(m.b, s, s, "");
    static const double lg[8] = {0, 6.666666666666735130e-01, 3.999999999940941908e-01, 2.857142874366239149e-01,
                                 2.222219843214978396e-01, 1.818357216161805012e-01, 1.531383769920937332e-01,
                                 1.479819860511658591e-01};
    LLVMValueRef R = horner(&m, z, lg, 8);
    LLVMValueRef hfsq = LLVMBuildFMul(m.b, cf(&m, 0.5), LLVMBuildFMul(m.b, f, f, ""), "");
    LLVMValueRef dk = LLVMBuildSIToFP(m.b, e, g->f64, "");
    LLVMValueRef t = LLVMBuildFAdd(m.b, LLVMBuildFMul(m.b, s, LLVMBuildFAdd(m.b, hfsq, R, ""), ""),
                                   LLVMBuildFMul(m.b, dk, cf(&m, ln2_lo), ""), "");
    LLVMValueRef y = LLVMBuildFSub(m.b, LLVMBuildFSub(m.b, hfsq, t, ""), f, "");
    y = LLVMBuildFSub(m.b, LLVMBuildFMul(m.b, dk, cf(&m, ln2_hi), ""), y, "");
    y = LLVMBuildSelect(m.b, fcmp(&m, LLVMRealOEQ, x, cf(&m, __builtin_inf())), x, y, "");
    y = LLVMBuildSelect(m.b, fcmp(&m, LLVMRealOEQ, x, cf(&m, 0)), cf(&m, -__builtin_inf()), y, "");
    y = LLVMBuildSelect(m.b, fcmp(&m, LLVMRealULT, x, cf(&m, 0)), cf(&m, __builtin_nan("")), y, "");
    return end(&m, y);
}

/* log(1 + x) = log u + (x - (u - 1)) / u with u = 1 + x rounded (the
 * correction restores what the rounding of u lost); x itself when u = 1. */
static LLVMValueRef log1p_fn(Gpu *g)
{
    Fn m;
    LLVMValueRef x, fn = begin(g, &m, "mamlc.log1p", &x);
    if (fn)
        return fn;
    LLVMValueRef lg = log_fn(g);
    LLVMValueRef u = LLVMBuildFAdd(m.b, cf(&m, 1), x, "");
    LLVMValueRef l = LLVMBuildCall2(m.b, LLVMFunctionType(g->f64, &g->f64, 1, 0), lg, &u, 1, "");
    LLVMValueRef corr = LLVMBuildFDiv(m.b, LLVMBuildFSub(m.b, x, LLVMBuildFSub(m.b, u, cf(&m, 1), ""), ""), u, "");
    LLVMValueRef y = LLVMBuildFAdd(m.b, l, corr, "");
    y = LLVMBuildSelect(m.b, fcmp(&m, LLVMRealOEQ, u, cf(&m, 1)), x, y, "");
    y = LLVMBuildSelect(m.b, fcmp(&m, LLVMRealOEQ, x, cf(&m, __builtin_inf())), x, y, "");
    return end(&m, y);
}

/* tanh x = sign(x) t(|x|): for |x| < 0.55, em / (em + 2) with em = e^2|x| - 1
 * by its Taylor polynomial (degree 20, no cancellation); up to 22,
 * 1 - 2 / (e^2|x| + 1); beyond, 1. */
static LLVMValueRef tanh_fn(Gpu *g)
{
    Fn m;
    LLVMValueRef x, fn = begin(g, &m, "mamlc.tanh", &x);
    if (fn)
        return fn;
    LLVMValueRef ex = exp_fn(g);
    LLVMValueRef a = call(&m, "llvm.fabs", &x, 1);
    LLVMValueRef t = LLVMBuildFMul(m.b, a, cf(&m, 2), "");
    double c[20];
    c[0] = 1;
    for (int i = 1; i < 20; i++)
        c[i] = c[i - 1] / (i + 1);
    LLVMValueRef em = LLVMBuildFMul(m.b, t, horner(&m, t, c, 20), "");
    LLVMValueRef small = LLVMBuildFDiv(m.b, em, LLVMBuildFAdd(m.b, em, cf(&m, 2), ""), "");
    LLVMValueRef tc[2] = {t, cf(&m, 44)};
    LLVMValueRef t44 = call(&m, "llvm.minnum", tc, 2);
    LLVMValueRef e2 = LLVMBuildCall2(m.b, LLVMFunctionType(g->f64, &g->f64, 1, 0), ex, &t44, 1, "");
    LLVMValueRef large =
        LLVMBuildFSub(m.b, cf(&m, 1), LLVMBuildFDiv(m.b, cf(&m, 2), LLVMBuildFAdd(m.b, e2, cf(&m, 1), ""), ""), "");
    LLVMValueRef y = LLVMBuildSelect(m.b, fcmp(&m, LLVMRealOLT, a, cf(&m, 0.55)), small, large, "");
    y = LLVMBuildSelect(m.b, fcmp(&m, LLVMRealOGT, a, cf(&m, 22)), cf(&m, 1), y, "");
    LLVMValueRef cs[2] = {y, x};
    y = call(&m, "llvm.copysign", cs, 2);
    y = LLVMBuildSelect(m.b, fcmp(&m, LLVMRealUNO, x, x), x, y, "");
    return end(&m, y);
}

LLVMValueRef gpu_exp(Gpu *g, LLVMValueRef x) { return apply(g, exp_fn(g), x); }
LLVMValueRef gpu_log(Gpu *g, LLVMValueRef x) { return apply(g, log_fn(g), x); }
LLVMValueRef gpu_log1p(Gpu *g, LLVMValueRef x) { return apply(g, log1p_fn(g), x); }
LLVMValueRef gpu_tanh(Gpu *g, LLVMValueRef x) { return apply(g, tanh_fn(g), x); }

/* x^c for a constant c (what build_powc of the CPU leaves to pow):
 * e^(c log|x|), negated for x < 0 and an odd integer c; for x < 0 and c
 * not an integer, log gives NaN as pow does.  Zeros and infinities come
 * out of exp and log's own limits. */
LLVMValueRef gpu_pow(Gpu *g, LLVMValueRef x, double c)
{
    LLVMTypeRef t = LLVMTypeOf(x);
    LLVMValueRef xd = t == g->f64 ? x : LLVMBuildFPExt(g->b, x, g->f64, "");
    bool integral = c == (double)(int64_t)c && c > -9.0e15 && c < 9.0e15;
    LLVMValueRef base = xd;
    if (integral)
        base = gpu_intrinsic(g, "llvm.fabs", g->f64, &xd, 1);
    LLVMValueRef y = gpu_exp(g, LLVMBuildFMul(g->b, LLVMConstReal(g->f64, c), gpu_log(g, base), ""));
    if (integral && ((int64_t)c & 1)) {
        LLVMValueRef neg = LLVMBuildFCmp(g->b, LLVMRealOLT, xd, LLVMConstReal(g->f64, 0), "");
        y = LLVMBuildSelect(g->b, neg, LLVMBuildFNeg(g->b, y, ""), y, "");
    }
    return t == g->f64 ? y : LLVMBuildFPTrunc(g->b, y, t, "");
}
