/* The meta-step builder: the model's loss, lowered and differentiated into
 * the functions a meta-training run calls (see passes.h for the list).
 * Every function takes the meta-learned tensors first (the params, then any
 * learned inner learning rates), then its data.
 *
 * MAML with N inner steps, for one task:
 *   θ₀ = θ,  θₛ₊₁ = θₛ − α ⊙ ∇θₛ L(θₛ; support)         (s < N)
 *   meta_step returns L(θ_N; query) and its gradient with respect to θ (and
 *   to α, when α is learned: Meta-SGD).
 * That gradient runs back through every inner gradient, so it is exact
 * second order.  With `order = first` each inner gradient is wrapped in
 * stop_grad, which gives first-order MAML: ∇θ_N L(θ_N; query).  With
 * `adapt = [..]` only the listed params take inner steps (ANIL), so only
 * their gradients are built in the inner loop.  Reptile takes the same
 * inner steps (first order) and returns θ − θ_N as the meta-gradient. */
#include "passes.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    const Model *md;
    IrModule *m;
    Diag *d;
    int n;                      /* meta-learned tensors */
} Builder;

/* A function with one input per meta-learned tensor (values into theta). */
static IrFunc *begin(Builder *b, const char *name, ValueId *theta) {
    IrFunc *f = ir_func_new(b->m, name);
    for (int i = 0; i < b->n; i++) {
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

/* The indices of the params the inner loop adapts; returns their count. */
static int adapted(const Model *md, int *idx) {
    int k = 0;
    for (int i = 0; i < md->nparam; i++)
        if (md->meta.adapt[i])
            idx[k++] = i;
    return k;
}

/* The inner learning rate of param i, as a value of its shape: the fixed
 * rate, or its learned tensor (broadcast if it is a scalar). */
static ValueId inner_rate(Builder *b, IrFunc *f, const ValueId *theta, int i) {
    const Model *md = b->md;
    IrType t = md->param[i].type;
    SrcLoc loc = md->meta.loc;
    for (int j = md->nparam; j < md->ntensor; j++)
        if (md->param[j].lr_for == i)
            return ir_broadcast(f, theta[j], t, loc, NULL);
    return ir_const(f, md->meta.inner_lr, t, loc);
}

/* One inner step: next = theta with each adapted param moved by
 * −α ⊙ ∇L(theta; x, y) (learned rates and frozen params carried over).
 * Returns L. */
static ValueId inner_step(Builder *b, IrFunc *f, const ValueId *theta, ValueId x, ValueId y, ValueId *next) {
    const Model *md = b->md;
    ValueId loss = call(b, f, "loss", theta, x, y);
    if (loss == IR_NONE)
        return IR_NONE;
    int *idx = malloc((size_t)md->nparam * sizeof *idx), k = adapted(md, idx);
    ValueId *wrt = malloc((size_t)k * sizeof *wrt), *g = malloc((size_t)k * sizeof *g);
    for (int j = 0; j < k; j++)
        wrt[j] = theta[idx[j]];
    bool ok = ad_grad(f, loss, k, wrt, g);
    memcpy(next, theta, (size_t)b->n * sizeof *next);
    SrcLoc loc = md->meta.loc;
    for (int j = 0; j < k; j++) {
        ValueId gj = md->meta.order == ORDER_FIRST ? ir_unary(f, OP_STOP_GRAD, g[j], loc, NULL) : g[j];
        ValueId step = ir_binary(f, OP_MUL, inner_rate(b, f, theta, idx[j]), gj, loc, NULL);
        next[idx[j]] = ir_binary(f, OP_SUB, theta[idx[j]], step, loc, NULL);
    }
    free(idx);
    free(wrt);
    free(g);
    return ok ? loss : IR_NONE;
}

static bool build_loss(Builder *b, const char *name, const char *fn, IrType tx, IrType ty) {
    ValueId *theta = malloc((size_t)b->n * sizeof *theta);
    IrFunc *f = begin(b, name, theta);
    ValueId x = data(b, f, "x", tx), y = data(b, f, "y", ty);
    ValueId l = call(b, f, fn, theta, x, y);
    free(theta);
    if (l == IR_NONE)
        return false;
    ir_output(f, l);
    return true;
}

/* grad: the inner gradient, with respect to the adapted params only. */
static bool build_grad(Builder *b) {
    const Model *md = b->md;
    ValueId *theta = malloc((size_t)b->n * sizeof *theta), *wrt = malloc((size_t)b->n * sizeof *wrt);
    ValueId *g = malloc((size_t)b->n * sizeof *g);
    int *idx = malloc((size_t)md->nparam * sizeof *idx), k = adapted(md, idx);
    IrFunc *f = begin(b, "grad", theta);
    ValueId x = data(b, f, "x", md->task.support_x), y = data(b, f, "y", md->task.support_y);
    ValueId l = call(b, f, "loss", theta, x, y);
    for (int j = 0; j < k; j++)
        wrt[j] = theta[idx[j]];
    bool ok = l != IR_NONE && ad_grad(f, l, k, wrt, g);
    if (ok) {
        ir_output(f, l);
        for (int j = 0; j < k; j++)
            ir_output(f, g[j]);
    }
    free(theta);
    free(wrt);
    free(g);
    free(idx);
    return ok;
}

static bool build_adapt_step(Builder *b) {
    ValueId *theta = malloc((size_t)b->n * sizeof *theta), *next = malloc((size_t)b->n * sizeof *next);
    IrFunc *f = begin(b, "adapt_step", theta);
    const ModelTask *t = &b->md->task;
    ValueId x = data(b, f, "x", t->support_x), y = data(b, f, "y", t->support_y);
    ValueId l = inner_step(b, f, theta, x, y, next);
    if (l != IR_NONE) {
        for (int i = 0; i < b->n; i++)
            ir_output(f, next[i]);
        ir_output(f, l);
    }
    free(theta);
    free(next);
    return l != IR_NONE;
}

static bool build_meta_step(Builder *b) {
    const Model *md = b->md;
    int n = b->n;
    ValueId *theta = malloc((size_t)n * sizeof *theta), *cur = malloc((size_t)n * sizeof *cur);
    ValueId *g = malloc((size_t)n * sizeof *g);
    IrFunc *f = begin(b, "meta_step", theta);
    const ModelTask *t = &md->task;
    ValueId sx = data(b, f, "sx", t->support_x), sy = data(b, f, "sy", t->support_y);
    ValueId qx = data(b, f, "qx", t->query_x), qy = data(b, f, "qy", t->query_y);
    memcpy(cur, theta, (size_t)n * sizeof *cur);
    bool ok = true;
    for (int s = 0; ok && s < md->meta.inner_steps; s++)
        ok = inner_step(b, f, cur, sx, sy, cur) != IR_NONE;
    ValueId l = ok ? call(b, f, "loss", cur, qx, qy) : IR_NONE;
    if (l != IR_NONE && md->meta.algorithm == ALGO_REPTILE) {
        /* Reptile: the meta-gradient is θ − W, W the adapted params */
        for (int i = 0; i < n; i++)
            g[i] = ir_binary(f, OP_SUB, theta[i], cur[i], md->meta.loc, NULL);
    } else
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

/* predict: net(x) for the query inputs, when the model defines net. */
static bool build_predict(Builder *b) {
    ValueId *theta = malloc((size_t)b->n * sizeof *theta);
    IrFunc *f = begin(b, "predict", theta);
    ValueId x = data(b, f, "x", b->md->task.query_x);
    ValueId out = model_lower_call(b->md, f, "net", theta, &x, 1, false, b->d);
    free(theta);
    if (out == IR_NONE)
        return false;
    ir_output(f, out);
    return true;
}

static bool wanted(const char *only, const char *name) { return !only || strcmp(only, name) == 0; }

bool meta_build(const Model *md, IrModule *m, const char *only, Diag *d) {
    Builder b = {md, m, d, md->ntensor};
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
    if (ok && model_has_func(md, "net") && wanted(only, "predict"))
        ok = build_predict(&b);
    if (m->internal_errors) {
        diag_error(d, md->meta.loc, "internal error: %d value(s) of the meta-step could not be built",
                   m->internal_errors);
        return false;
    }
    return ok;
}
