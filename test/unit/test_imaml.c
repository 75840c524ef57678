/* Implicit MAML's meta-step, as mamlc builds and compiles it, in f64 at
 * random points, against a reference that shares nothing with the builder
 * but the model's loss: the same model compiled with no meta entries gives
 * grad (∇ of the loss with respect to every param) and eval_loss, and the
 * rest is written out here:
 *   φ₀ = θ,  φₛ₊₁ = φₛ − α (∇L_S(φₛ) + λ (φₛ − θ)),  g = ∇L_Q(φ_N),
 *   H = ∇²L_S(φ_N) by central differences of grad, column by column.
 * With CG run to convergence the meta-gradient must be the dense solution
 * of (I + H/λ) v = g (Gaussian elimination here); at a few CG steps, the
 * result of a CG written here with the same H and g, from v = 0.  Under
 * ANIL the solve covers the adapted params, and the frozen ones get
 * ∇w L_Q(φ_N).  The query loss, and the JIT's agreement with the reference
 * evaluator, are checked as well. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../backend/backend.h"
#include "compile_model.h"
#include "check.h"

/* A small sine-style network with smooth activations. */
static const char *const model_text =
    "dim K = 5;\n"
    "param W1 : [5, 1] = he;  param b1 : [5] = normal(0.3);\n"
    "param W2 : [5, 5] = he;  param b2 : [5] = normal(0.3);\n"
    "param W3 : [1, 5] = he;  param b3 : [1] = zeros;\n"
    "def net(x) {\n"
    "  h = tanh(linear(x, W1, b1));\n"
    "  h = sigmoid(linear(h, W2, b2)) * softplus(h);\n"
    "  return linear(h, W3, b3);\n"
    "}\n"
    "def loss(x, y) = mean((net(x) - y)^2) + 0.01 * sum(W2 ^ 2);\n"
    "task sinusoid() { support x : [K, 1], y : [K, 1]; query x : [K, 1], y : [K, 1]; }\n"
    "meta { %s }\n";

#define MAXP 8
#define DIM 64          /* the model's reals: 5 + 5 + 25 + 5 + 5 + 1 = 46 */

typedef struct {
    const char *label;
    double lambda, alpha;
    int steps, cg;      /* inner steps; CG iterations */
    const char *adapt;  /* "W3, b3", or NULL: every param */
    bool converged;     /* cg large: compare with the dense solve */
} Case;

static double urand(void) { return (rand() + 0.5) / ((double)RAND_MAX + 1); }

typedef struct {
    IrModule *m;
    Model *md;
    BeJit *jit;
} Compiled;

static bool compile(Compiled *c, const char *meta, const char *const *only, bool jit) {
    char text[2048];
    snprintf(text, sizeof text, model_text, meta);
    return compile_model(text, only, jit ? 2 : -1, &c->md, &c->m, &c->jit);
}

static void release(Compiled *c) {
    be_jit_free(c->jit);
    ir_module_free(c->m);
    model_free(c->md);
}

/* The reference: the plain model's grad and eval_loss, and the params as
 * one vector of n reals (tensor p at off[p]). */
typedef struct {
    Compiled plain;
    IrFunc *grad, *loss;
    int np, n, off[MAXP + 1];
    double *x[4];       /* sx, sy, qx, qy */
} Ref;

/* ∇L(w; x, y) into g (n reals), and L. */
static double ref_grad(Ref *r, const double *w, int set, double *g) {
    double *in[MAXP + 2], *out[MAXP + 1], l;
    for (int p = 0; p < r->np; p++) {
        in[p] = (double *)w + r->off[p];
        out[1 + p] = g + r->off[p];
    }
    in[r->np] = r->x[2 * set];
    in[r->np + 1] = r->x[2 * set + 1];
    out[0] = &l;
    ir_eval(r->grad, (const double *const *)in, out);
    return l;
}

/* The inner loop from theta into phi: steps of the proximal gradient,
 * for the adapted coordinates only. */
static void ref_adapt(Ref *r, const Case *c, const bool *adapt, const double *theta, double *phi) {
    double g[DIM];
    memcpy(phi, theta, (size_t)r->n * sizeof *phi);
    for (int s = 0; s < c->steps; s++) {
        ref_grad(r, phi, 0, g);
        for (int i = 0; i < r->n; i++)
            if (adapt[i])
                phi[i] -= c->alpha * (g[i] + c->lambda * (phi[i] - theta[i]));
    }
}

/* H = ∇²L_S at phi by central differences of the gradient, symmetrised. */
static void ref_hessian(Ref *r, const double *phi, double *h) {
    double w[DIM], up[DIM], down[DIM], step = 1e-4;
    memcpy(w, phi, (size_t)r->n * sizeof *w);
    for (int j = 0; j < r->n; j++) {
        w[j] = phi[j] + step;
        ref_grad(r, w, 0, up);
        w[j] = phi[j] - step;
        ref_grad(r, w, 0, down);
        w[j] = phi[j];
        for (int i = 0; i < r->n; i++)
            h[i * r->n + j] = (up[i] - down[i]) / (2 * step);
    }
    for (int i = 0; i < r->n; i++)
        for (int j = 0; j < i; j++)
            h[i * r->n + j] = h[j * r->n + i] = (h[i * r->n + j] + h[j * r->n + i]) / 2;
}

/* Solve a x = b (k by k, row-major, overwritten) by Gaussian elimination
 * with partial pivoting. */
static void dense_solve(int k, double *a, double *b, double *x) {
    for (int c = 0; c < k; c++) {
        int piv = c;
        for (int i = c + 1; i < k; i++)
            if (fabs(a[i * k + c]) > fabs(a[piv * k + c]))
                piv = i;
        for (int j = 0; j < k; j++) {
            double t = a[c * k + j];
            a[c * k + j] = a[piv * k + j];
            a[piv * k + j] = t;
        }
        double t = b[c];
        b[c] = b[piv];
        b[piv] = t;
        for (int i = c + 1; i < k; i++) {
            double m = a[i * k + c] / a[c * k + c];
            for (int j = c; j < k; j++)
                a[i * k + j] -= m * a[c * k + j];
            b[i] -= m * b[c];
        }
    }
    for (int i = k - 1; i >= 0; i--) {
        double s = b[i];
        for (int j = i + 1; j < k; j++)
            s -= a[i * k + j] * x[j];
        x[i] = s / a[i * k + i];
    }
}

/* y = a x for the k by k matrix a. */
static void matvec(int k, const double *a, const double *x, double *y) {
    for (int i = 0; i < k; i++) {
        y[i] = 0;
        for (int j = 0; j < k; j++)
            y[i] += a[i * k + j] * x[j];
    }
}

static double vdot(int k, const double *a, const double *b) {
    double s = 0;
    for (int i = 0; i < k; i++)
        s += a[i] * b[i];
    return s;
}

/* `iters` CG iterations on a v = b from v = 0, as the textbook writes them. */
static void ref_cg(int k, const double *a, const double *b, int iters, double *v) {
    double r[DIM], p[DIM], ap[DIM];
    memcpy(r, b, (size_t)k * sizeof *r);
    memcpy(p, b, (size_t)k * sizeof *p);
    memset(v, 0, (size_t)k * sizeof *v);
    double rr = vdot(k, r, r);
    for (int it = 0; it < iters; it++) {
        matvec(k, a, p, ap);
        double alpha = rr / vdot(k, p, ap);
        for (int i = 0; i < k; i++) {
            v[i] += alpha * p[i];
            r[i] -= alpha * ap[i];
        }
        double next = vdot(k, r, r);
        for (int i = 0; i < k; i++)
            p[i] = r[i] + next / rr * p[i];
        rr = next;
    }
}

static double rel_err(int k, const double *a, const double *b) {
    double d = 0, na = 0, nb = 0;
    for (int i = 0; i < k; i++) {
        d += (a[i] - b[i]) * (a[i] - b[i]);
        na += a[i] * a[i];
        nb += b[i] * b[i];
    }
    return sqrt(d) / fmax(fmax(sqrt(na), sqrt(nb)), 1e-300);
}

static void run_case(const Case *c) {
    char meta[256];
    int len = snprintf(meta, sizeof meta, "algorithm = imaml(lambda = %.17g, cg_steps = %d); inner_steps = %d; "
                       "inner_lr = %.17g;", c->lambda, c->cg, c->steps, c->alpha);
    if (c->adapt)
        snprintf(meta + len, sizeof meta - (size_t)len, " adapt = [%s];", c->adapt);
    static const char *const step_fns[] = {"meta_step", NULL}, *const plain_fns[] = {"grad", "eval_loss", NULL};
    Compiled step;
    Ref r = {0};
    bool ok = compile(&step, meta, step_fns, true) && compile(&r.plain, "", plain_fns, false);
    CHECK(ok, "%s: the model compiles", c->label);
    if (!ok)
        return;
    const Model *md = step.md;
    IrFunc *f = ir_module_find(step.m, "meta_step");
    r.grad = ir_module_find(r.plain.m, "grad");
    r.loss = ir_module_find(r.plain.m, "eval_loss");
    r.np = md->nparam;
    for (int p = 0; p < r.np; p++)
        r.off[p + 1] = r.off[p] + (int)ir_numel(md->param[p].type);
    r.n = r.off[r.np];
    CHECK(r.np <= MAXP && r.n <= DIM && f->ninput == r.np + 4 && f->noutput == r.np + 1,
          "%s: the meta_step takes the params and the two sets, and returns the loss and a gradient per param",
          c->label);
    /* random params and data */
    double theta[DIM], phi[DIM], g[DIM], *h = malloc((size_t)DIM * DIM * sizeof *h);
    bool adapt[DIM];
    for (int i = 0; i < r.n; i++)
        theta[i] = 0.8 * (2 * urand() - 1);
    for (int s = 0; s < 4; s++) {
        r.x[s] = malloc(5 * sizeof(double));
        for (int i = 0; i < 5; i++)
            r.x[s][i] = s % 2 ? sin(3 * urand()) : 4 * urand() - 2;
    }
    for (int p = 0; p < r.np; p++) {
        bool on = !c->adapt || strstr(c->adapt, md->param[p].name) != NULL;
        for (int i = r.off[p]; i < r.off[p + 1]; i++)
            adapt[i] = on;
    }
    /* the compiled step, by the JIT and by the reference evaluator */
    double got[DIM + 1], eval[DIM + 1];
    const void *in[MAXP + 4];
    double *gout[MAXP + 1], *eout[MAXP + 1];
    for (int p = 0; p < r.np; p++) {
        in[p] = theta + r.off[p];
        gout[1 + p] = got + 1 + r.off[p];
        eout[1 + p] = eval + 1 + r.off[p];
    }
    for (int s = 0; s < 4; s++)
        in[r.np + s] = r.x[s];
    gout[0] = got;
    eout[0] = eval;
    void *arena = aligned_alloc(64, (be_arena_bytes(f) + 64) / 64 * 64);
    be_jit_lookup(step.jit, "meta_step")(in, (void *const *)gout, arena);
    free(arena);
    ir_eval(f, (const double *const *)in, eout);
    double agree = rel_err(r.n + 1, got, eval);
    CHECK(agree <= 1e-12, "%s: the JIT and the reference evaluator agree: %.3g", c->label, agree);
    /* the reference */
    ref_adapt(&r, c, adapt, theta, phi);
    double lq = ref_grad(&r, phi, 1, g);
    CHECK(fabs(got[0] - lq) <= 1e-12 * fmax(1, fabs(lq)), "%s: query loss %.17g, want %.17g", c->label, got[0], lq);
    ref_hessian(&r, phi, h);
    /* (I + H/λ) restricted to the adapted coordinates */
    int k = 0, at[DIM];
    for (int i = 0; i < r.n; i++)
        if (adapt[i])
            at[k++] = i;
    double *a = malloc((size_t)k * k * sizeof *a), b[DIM], v[DIM], want[DIM];
    for (int i = 0; i < k; i++) {
        for (int j = 0; j < k; j++)
            a[i * k + j] = (i == j) + h[at[i] * r.n + at[j]] / c->lambda;
        b[i] = g[at[i]];
    }
    if (c->converged)
        dense_solve(k, a, b, v);
    else
        ref_cg(k, a, b, c->cg, v);
    memcpy(want, g, (size_t)r.n * sizeof *want);  /* frozen: ∇w L_Q(φ) */
    for (int i = 0; i < k; i++)
        want[at[i]] = v[i];
    double err = rel_err(r.n, got + 1, want), plain = rel_err(r.n, got + 1, g);
    CHECK(err <= 1e-8, "%s: meta-gradient against the %s: relative error %.3g", c->label,
          c->converged ? "dense solve" : "reference CG", err);
    /* and it is not the first-order gradient: the solve did something */
    CHECK(plain > 1e3 * err, "%s: the implicit gradient differs from g (%.3g)", c->label, plain);
    printf("%-28s relative error %.2e (g itself is %.2e away), JIT vs evaluator %.1e\n", c->label, err, plain,
           agree);
    free(a);
    free(h);
    for (int s = 0; s < 4; s++)
        free(r.x[s]);
    release(&step);
    release(&r.plain);
}

static const Case cases[] = {
    {"converged, 1 inner step", 2.0, 0.1, 1, 100, NULL, true},
    {"converged, 4 inner steps", 1.0, 0.1, 4, 100, NULL, true},
    {"converged, ANIL", 1.0, 0.1, 3, 40, "W3, b3", true},
    {"5 CG steps", 2.0, 0.1, 3, 5, NULL, false},
    {"2 CG steps, small lambda", 0.3, 0.05, 2, 2, NULL, false},
    {"1 CG step, ANIL", 1.0, 0.1, 2, 1, "W2, b2, W3", false},
};

int main(void) {
    srand(23);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        run_case(&cases[i]);
    return check_summary();
}
