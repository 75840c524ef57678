/* The meta-step builder: the model's loss, lowered and differentiated into
 * the functions a meta-training run calls (see passes.h for the list).
 *
 * MAML with N inner steps, for one task:
 *   θ₀ = θ,  θₛ₊₁ = θₛ − α ∇θₛ L(θₛ; support)         (s < N)
 *   meta_step returns L(θ_N; query) and its gradient with respect to θ.
 * That gradient runs back through every inner gradient, so it is exact
 * second order; with `order = first` each inner gradient is wrapped in
 * stop_grad, which gives first-order MAML: ∇θ_N L(θ_N; query). */
#include "passes.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    const Model *md;
    IrModule *m;
    Diag *d;
} Builder;

/* A function with one input per param (their values into theta). */
static IrFunc *begin(Builder *b, const char *name, ValueId *theta) {
    IrFunc *f = ir_func_new(b->m, name);
    for (int i = 0; i < b->md->nparam; i++) {
        const ModelParam *p = &b->md->param[i];
        theta[i] = ir_input(f, p->name, p->type, p->loc);
    }
    return f;
}

static ValueId data(Builder *b, IrFunc *f, const char *name, IrType t) {
    return ir_input(f, name, t, b->md->task.loc);
}

static ValueId call(Builder *b, IrFunc *f, const char *fn, const ValueId *theta, ValueId x, ValueId y) {
    ValueId args[2] = {x, y};
    return model_lower_call(b->md, f, fn, theta, args, 2, strcmp(fn, "metric") != 0, b->d);
}

/* One inner step: theta_out = theta - α ∇L(theta; x, y); returns L. */
static ValueId inner_step(Builder *b, IrFunc *f, const ValueId *theta, ValueId x, ValueId y,
                          ValueId *theta_out) {
    int n = b->md->nparam;
    ValueId loss = call(b, f, "loss", theta, x, y);
    if (loss == IR_NONE)
        return IR_NONE;
    ValueId *g = malloc((size_t)n * sizeof *g);
    ad_grad(f, loss, n, theta, g);
    SrcLoc loc = b->md->meta.loc;
    for (int i = 0; i < n; i++) {
        ValueId gi = g[i];
        if (b->md->meta.order == ORDER_FIRST)
            gi = ir_unary(f, OP_STOP_GRAD, gi, loc, NULL);
        ValueId step = ir_binary_scalar(f, OP_MUL, gi, b->md->meta.inner_lr, false, loc, NULL);
        theta_out[i] = ir_binary(f, OP_SUB, theta[i], step, loc, NULL);
    }
    free(g);
    return loss;
}

static bool build_loss(Builder *b, const char *name, const char *fn, IrType tx, IrType ty) {
    ValueId *theta = malloc((size_t)b->md->nparam * sizeof *theta);
    IrFunc *f = begin(b, name, theta);
    ValueId x = data(b, f, "x", tx), y = data(b, f, "y", ty);
    ValueId l = call(b, f, fn, theta, x, y);
    free(theta);
    if (l == IR_NONE)
        return false;
    ir_output(f, l);
    return true;
}

static bool build_grad(Builder *b) {
    int n = b->md->nparam;
    ValueId *theta = malloc((size_t)n * sizeof *theta), *g = malloc((size_t)n * sizeof *g);
    IrFunc *f = begin(b, "grad", theta);
    const ModelTask *t = &b->md->task;
    ValueId x = data(b, f, "x", t->support_x), y = data(b, f, "y", t->support_y);
    ValueId l = call(b, f, "loss", theta, x, y);
    bool ok = l != IR_NONE && ad_grad(f, l, n, theta, g);
    if (ok) {
        ir_output(f, l);
        for (int i = 0; i < n; i++)
            ir_output(f, g[i]);
    }
    free(theta);
    free(g);
    return ok;
}

static bool build_adapt_step(Builder *b) {
    int n = b->md->nparam;
    ValueId *theta = malloc((size_t)n * sizeof *theta), *next = malloc((size_t)n * sizeof *next);
    IrFunc *f = begin(b, "adapt_step", theta);
    const ModelTask *t = &b->md->task;
    ValueId x = data(b, f, "x", t->support_x), y = data(b, f, "y", t->support_y);
    ValueId l = inner_step(b, f, theta, x, y, next);
    if (l != IR_NONE) {
        for (int i = 0; i < n; i++)
            ir_output(f, next[i]);
        ir_output(f, l);
    }
    free(theta);
    free(next);
    return l != IR_NONE;
}

static bool build_meta_step(Builder *b) {
    int n = b->md->nparam;
    ValueId *theta = malloc((size_t)n * sizeof *theta), *cur = malloc((size_t)n * sizeof *cur);
    ValueId *g = malloc((size_t)n * sizeof *g);
    IrFunc *f = begin(b, "meta_step", theta);
    const ModelTask *t = &b->md->task;
    ValueId sx = data(b, f, "sx", t->support_x), sy = data(b, f, "sy", t->support_y);
    ValueId qx = data(b, f, "qx", t->query_x), qy = data(b, f, "qy", t->query_y);
    memcpy(cur, theta, (size_t)n * sizeof *cur);
    bool ok = true;
    for (int s = 0; ok && s < b->md->meta.inner_steps; s++)
        ok = inner_step(b, f, cur, sx, sy, cur) != IR_NONE;
    ValueId l = ok ? call(b, f, "loss", cur, qx, qy) : IR_NONE;
    ok = l != IR_NONE && ad_grad(f, l, n, theta, g);
    if (ok) {
        ir_output(f, l);
        for (int i = 0; i < n; i++)
            ir_output(f, g[i]);
    }
    free(theta);
    free(cur);
    free(g);
    return ok;
}

static bool wanted(const char *only, const char *name) { return !only || strcmp(only, name) == 0; }

bool meta_build(const Model *md, IrModule *m, const char *only, Diag *d) {
    Builder b = {md, m, d};
    const ModelTask *t = &md->task;
    bool ok = true;
    if (ok && wanted(only, "loss"))
        ok = build_loss(&b, "loss", "loss", t->support_x, t->support_y);
    if (ok && wanted(only, "grad"))
        ok = build_grad(&b);
    if (ok && wanted(only, "adapt_step"))
        ok = build_adapt_step(&b);
    if (ok && wanted(only, "meta_step"))
        ok = build_meta_step(&b);
    if (ok && wanted(only, "eval_loss"))
        ok = build_loss(&b, "eval_loss", "loss", t->query_x, t->query_y);
    if (ok && md->has_metric && wanted(only, "metric"))
        ok = build_loss(&b, "metric", "metric", t->query_x, t->query_y);
    return ok;
}
