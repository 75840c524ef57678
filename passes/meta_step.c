/* The meta-step builder: a model's functions (@loss, and @loss.query,
 * @metric and @net where it has them), composed and differentiated into the
 * functions a meta-training run calls (see passes.h for both lists), as the
 * module's meta configuration says.  Every function it builds takes the
 * meta-learned tensors first (the params, then any learned inner learning
 * rates), then its data.
 *
 * MAML with N inner steps, for one task:
 *   θ₀ = θ,  θₛ₊₁ = θₛ − α ⊙ ∇θₛ L(θₛ; support)         (s < N)
 *   meta_step returns L(θ_N; query) and its gradient with respect to θ (and
 *   to α, when α is learned: Meta-SGD).
 * That gradient runs back through every inner gradient, so it is exact
 * second order.  With per-step rates (LSLR, MAML++) step s takes α_s.
 * With `order = first` each inner gradient is wrapped in
 * stop_grad, which gives first-order MAML: ∇θ_N L(θ_N; query).  With
 * `adapt = [..]` only the listed params take inner steps (ANIL), so only
 * their gradients are built in the inner loop.  Reptile takes the same
 * inner steps (first order) and returns θ − θ_N as the meta-gradient.
 * MAML++ (Antoniou et al. 2019): `multi_step_loss` makes the meta-loss
 * Σ_s w_s L(θ_s; query) with the weights an input of the step, and
 * `order = anneal(..)` builds meta_step_first beside meta_step, the driver
 * choosing one per iteration.
 * A per-step param (`per_step`, MAML++'s per-step batch-norm weights) is
 * one tensor per inner step, never adapted: inner step s uses copy s, the
 * query loss copy S − 1 (ir_meta_step_copy). */
#include "passes.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    const MetaConfig *mc;
    IrModule *m;                /* where the built functions go */
    Diag *d;
    const IrFunc *loss;         /* at the support shapes */
    const IrFunc *query_loss;   /* at the query shapes (@loss.query, or @loss) */
    const IrFunc *metric, *net; /* at the query shapes; NULL if absent */
    int nparam;                 /* @loss's params: its arguments but x and y */
    int n;                      /* meta-learned tensors: params, then rates, then
                                   the per-step params' copies 1..S-1 */
    int *rate;                  /* per param: the tensor of its (first) learned rate, or -1 */
    int *copy;                  /* per param: for a per_step param, the tensor of its
                                   copy 1 (copies 1..S-1 follow; its own slot is
                                   copy 0), else -1 */
    /* batch norm's running statistics (MAML++'s BNRS), where the model has
     * @bn.stats: its functions in inference form (@loss.running, ...) */
    const IrFunc *bn_stats, *loss_running, *query_running, *metric_running;
    ValueId *stats;             /* the batch statistics of each inner step */
    bool running;               /* building the inference forms: begin adds the
                                   input bn_in after the tensors, call passes it */
    ValueId bn_in;
    bool first;                 /* the inner gradients held constant: the step being built is first order */
} Builder;

/* The i-th argument of f. */
static const IrNode *arg(const IrFunc *f, int i) { return &f->node[f->input[i]]; }

/* A function with one input per meta-learned tensor (values into theta). */
static IrFunc *begin(Builder *b, const char *name, ValueId *theta) {
    IrFunc *f = ir_func_new(b->m, name);
    for (int i = 0; i < b->nparam; i++) {
        const IrNode *p = arg(b->loss, i);
        char name[256];     /* a per-step param's slot holds its copy 0 */
        snprintf(name, sizeof name, b->copy[i] >= 0 ? "%s.0" : "%s", p->name);
        theta[i] = ir_input(f, name, p->type, p->loc);
    }
    bool per_step = b->mc->inner_lr_kind == INNER_LR_LEARNED_PER_STEP;
    for (int i = 0; i < b->nparam; i++)
        for (int s = 0; b->rate[i] >= 0 && s < ir_meta_rates_per_param(b->mc); s++) {
            const IrNode *p = arg(b->loss, i);
            char lr[256];
            if (per_step)
                snprintf(lr, sizeof lr, "lr.%s.%d", p->name, s);
            else
                snprintf(lr, sizeof lr, "lr.%s", p->name);
            theta[b->rate[i] + s] = ir_input(f, lr, ir_meta_rate_type(b->mc, p->type), p->loc);
        }
    for (int i = 0; i < b->nparam; i++)   /* per-step params: copies 1..S-1 */
        for (int s = 1; b->copy[i] >= 0 && s < b->mc->inner_steps; s++) {
            const IrNode *p = arg(b->loss, i);
            char name[256];
            snprintf(name, sizeof name, "%s.%d", p->name, s);
            theta[b->copy[i] + s - 1] = ir_input(f, name, p->type, p->loc);
        }
    if (b->running)     /* the running statistics of one step */
        b->bn_in = ir_input(f, "bn", arg(b->loss, b->nparam)->type, b->mc->loc);
    return f;
}

/* Data input `name` of f, typed as argument i of `like`. */
static ValueId data(IrFunc *f, const char *name, const IrFunc *like, int i) {
    const IrNode *x = arg(like, i);
    return ir_input(f, name, x->type, x->loc);
}

/* fn(params, x, y) inlined into f (y is left out for @net); its result. */
static ValueId call(Builder *b, IrFunc *f, const IrFunc *fn, const ValueId *theta, ValueId x, ValueId y) {
    ValueId *args = malloc(((size_t)b->nparam + 3) * sizeof *args), out;
    memcpy(args, theta, (size_t)b->nparam * sizeof *args);
    int k = b->nparam + b->running;     /* the inference forms take bn first */
    args[b->nparam] = b->bn_in;
    args[k] = x;
    args[k + 1] = y;
    ir_inline(f, fn, args, &out);
    free(args);
    return out;
}

/* Put copy `copy` of each per-step param into its slot of theta, from
 * which call takes the params (copy 0 is the slot's own; the runtime
 * passes the copy an evaluation step needs in the slot). */
static void use_copy(Builder *b, ValueId *theta, int copy) {
    for (int i = 0; copy > 0 && i < b->nparam; i++)
        if (b->copy[i] >= 0)
            theta[i] = theta[b->copy[i] + copy - 1];
}

/* call with copy `copy` of each per-step param. */
static ValueId call_at(Builder *b, IrFunc *f, const IrFunc *fn, const ValueId *theta, int copy, ValueId x,
                       ValueId y) {
    ValueId *at = malloc(((size_t)b->n + 1) * sizeof *at), out;
    memcpy(at, theta, (size_t)b->n * sizeof *at);
    use_copy(b, at, copy);
    out = call(b, f, fn, at, x, y);
    free(at);
    return out;
}

static bool wanted(const char *only, const char *name) { return !only || strcmp(only, name) == 0; }

/* The indices of the params the inner loop adapts; returns their count. */
static int adapted(const Builder *b, int *idx) {
    int k = 0;
    for (int i = 0; i < b->nparam; i++)
        if (ir_meta_adapts(b->mc, i))
            idx[k++] = i;
    return k;
}

/* The inner learning rate of param i at inner step `step` (1-based; 0 in
 * adapt_step, which takes step 0's), as a value of its shape: the fixed
 * rate, or its learned tensor (broadcast if it is a scalar). */
static ValueId inner_rate(Builder *b, IrFunc *f, const ValueId *theta, int i, int step) {
    IrType t = arg(b->loss, i)->type;
    SrcLoc loc = b->mc->loc;
    int s = b->mc->inner_lr_kind == INNER_LR_LEARNED_PER_STEP && step > 0 ? step - 1 : 0;
    if (b->rate[i] >= 0)
        return ir_broadcast(f, theta[b->rate[i] + s], t, loc, NULL);
    return ir_const(f, b->mc->inner_lr, t, loc);
}

/* The phase `what` of inner step `step` (0: the only one, unnumbered). */
static int step_phase(Builder *b, int step, const char *what) {
    char name[64];
    if (step)
        snprintf(name, sizeof name, "inner step %d: %s", step, what);
    return ir_phase(b->m, step ? name : what);
}

/* adapt_step with per-step rates (LSLR) moves each param's rates one step
 * on: next lr.NAME.s = lr.NAME.(s+1), the last kept, so that calling it
 * again takes the next step's rate, and steps past inner_steps the last. */
static void shift_rates(Builder *b, const ValueId *theta, ValueId *next) {
    int per = ir_meta_rates_per_param(b->mc);
    for (int i = 0; b->mc->inner_lr_kind == INNER_LR_LEARNED_PER_STEP && i < b->nparam; i++)
        for (int s = 0; b->rate[i] >= 0 && s < per; s++)
            next[b->rate[i] + s] = theta[b->rate[i] + (s + 1 < per ? s + 1 : s)];
}

/* One inner step (number `step`, or 0 in a function of one): next = theta
 * with each adapted param moved by −α ⊙ ∇L(theta; x, y) (learned rates and
 * frozen params carried over), in phases forward, gradient and update.
 * With an anchor θ (iMAML) the step descends L + λ/2‖theta − θ‖² instead,
 * its gradient held constant.  Returns L. */
static ValueId inner_step(Builder *b, IrFunc *f, int step, const ValueId *theta, const ValueId *anchor, ValueId x,
                          ValueId y, ValueId *next) {
    int forward = step_phase(b, step, "forward"), gradient = step_phase(b, step, "gradient");
    b->m->adjoint[forward] = gradient;
    f->cur_phase = forward;
    ValueId loss = call_at(b, f, b->loss, theta, step ? ir_meta_step_copy(b->mc, step - 1) : 0, x, y);
    if (step && b->bn_stats)    /* the batch statistics of this step's support forward */
        b->stats[step - 1] = call_at(b, f, b->bn_stats, theta, ir_meta_step_copy(b->mc, step - 1), x, y);
    int *idx = malloc(((size_t)b->nparam + 1) * sizeof *idx), k = adapted(b, idx);
    ValueId *wrt = malloc(((size_t)k + 1) * sizeof *wrt), *g = malloc(((size_t)k + 1) * sizeof *g);
    for (int j = 0; j < k; j++)
        wrt[j] = theta[idx[j]];
    f->cur_phase = gradient;
    bool ok = ad_grad(f, loss, k, wrt, g);
    if (step)   /* "loss" and "d.W" name the meta-step's results */
        for (int j = -1; j < k; j++) {
            ValueId v = j < 0 ? loss : g[j];
            char name[256];
            snprintf(name, sizeof name, "step%d.%s", step, f->node[v].name ? f->node[v].name : "");
            if (f->node[v].name)
                ir_rename(f, v, name);
        }
    memcpy(next, theta, (size_t)b->n * sizeof *next);
    SrcLoc loc = b->mc->loc;
    f->cur_phase = step_phase(b, step, "update");
    for (int j = 0; j < k; j++) {
        ValueId gj = g[j];
        if (anchor) {   /* + λ (theta − θ), the proximal term's gradient */
            ValueId away = ir_binary(f, OP_SUB, theta[idx[j]], anchor[idx[j]], loc, NULL);
            gj = ir_binary(f, OP_ADD, gj, ir_binary_scalar(f, OP_MUL, away, b->mc->lambda, true, loc, NULL), loc,
                           NULL);
        }
        if (anchor || b->first)
            gj = ir_unary(f, OP_STOP_GRAD, gj, loc, NULL);
        ValueId delta = ir_binary(f, OP_MUL, inner_rate(b, f, theta, idx[j], step), gj, loc, NULL);
        const char *name = f->node[theta[idx[j]]].name;     /* next may be theta */
        next[idx[j]] = ir_binary(f, OP_SUB, theta[idx[j]], delta, loc, NULL);
        ir_name(f, next[idx[j]], name);
    }
    if (step == 0)
        shift_rates(b, theta, next);
    free(idx);
    free(wrt);
    free(g);
    return ok ? loss : IR_NONE;
}

/* name(tensors..., x, y) -> fn(params, x, y), at fn's shapes. */
static bool build_loss(Builder *b, const char *name, const IrFunc *fn) {
    ValueId *theta = malloc((size_t)b->n * sizeof *theta);
    IrFunc *f = begin(b, name, theta);
    int at = b->nparam + b->running;    /* x's place in fn */
    ValueId x = data(f, "x", fn, at), y = data(f, "y", fn, at + 1);
    ir_output(f, call(b, f, fn, theta, x, y));
    free(theta);
    return true;
}

/* grad: the inner gradient, with respect to the adapted params only. */
static bool build_grad(Builder *b) {
    ValueId *theta = malloc((size_t)b->n * sizeof *theta), *wrt = malloc((size_t)b->n * sizeof *wrt);
    ValueId *g = malloc((size_t)b->n * sizeof *g);
    int *idx = malloc(((size_t)b->nparam + 1) * sizeof *idx), k = adapted(b, idx);
    IrFunc *f = begin(b, "grad", theta);
    ValueId x = data(f, "x", b->loss, b->nparam), y = data(f, "y", b->loss, b->nparam + 1);
    int forward = step_phase(b, 0, "forward"), gradient = step_phase(b, 0, "gradient");
    b->m->adjoint[forward] = gradient;
    f->cur_phase = forward;
    ValueId l = call(b, f, b->loss, theta, x, y);
    for (int j = 0; j < k; j++)
        wrt[j] = theta[idx[j]];
    f->cur_phase = gradient;
    bool ok = ad_grad(f, l, k, wrt, g);
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

static bool build_adapt_step(Builder *b, const char *name) {
    ValueId *theta = malloc((size_t)b->n * sizeof *theta), *next = malloc((size_t)b->n * sizeof *next);
    IrFunc *f = begin(b, name, theta);
    int at = b->nparam + b->running;    /* x's place in @loss */
    ValueId x = data(f, "x", b->loss, at), y = data(f, "y", b->loss, at + 1);
    ValueId l = inner_step(b, f, 0, theta, NULL, x, y, next);
    if (l != IR_NONE) {
        for (int i = 0; i < b->n; i++)
            ir_output(f, next[i]);
        ir_output(f, l);
    }
    free(theta);
    free(next);
    return l != IR_NONE;
}

/* The meta-step's data inputs sx, sy, qx, qy, then its inner steps from
 * theta into cur (anchor: iMAML's proximal anchor, or NULL), and the
 * tensors after step s + 1 into each[s n ..] unless each is NULL; false if
 * an inner gradient could not be built. */
static bool inner_loop(Builder *b, IrFunc *f, const ValueId *theta, const ValueId *anchor, ValueId *cur,
                       ValueId *each, ValueId *sx, ValueId *sy, ValueId *qx, ValueId *qy) {
    int np = b->nparam;
    *sx = data(f, "sx", b->loss, np);
    *sy = data(f, "sy", b->loss, np + 1);
    *qx = data(f, "qx", b->query_loss, np);
    *qy = data(f, "qy", b->query_loss, np + 1);
    memcpy(cur, theta, (size_t)b->n * sizeof *cur);
    bool ok = true;
    for (int s = 0; ok && s < b->mc->inner_steps; s++) {
        ok = inner_step(b, f, s + 1, cur, anchor, *sx, *sy, cur) != IR_NONE;
        if (each)
            memcpy(each + (size_t)s * (size_t)b->n, cur, (size_t)b->n * sizeof *cur);
    }
    return ok;
}

/* With running statistics, the meta-step's last result: the batch
 * statistics of inner steps 1..S, one after the other ([S * L]). */
static void output_stats(Builder *b, IrFunc *f) {
    if (!b->bn_stats)
        return;
    ValueId all = b->stats[0];
    for (int s = 1; s < b->mc->inner_steps; s++)
        all = ir_concat(f, all, b->stats[s], 0, b->mc->loc, NULL);
    ir_output(f, all);
    ir_rename(f, all, "bn.stats");
}

/* The inference forms (running statistics): adapt_step.running,
 * eval_loss.running and metric.running, which take the statistics of one
 * step, bn [L], after the tensors. */
static bool build_running(Builder *b, const char *only) {
    const IrFunc *loss = b->loss, *query = b->query_loss, *metric = b->metric;
    b->loss = b->loss_running;
    b->query_loss = b->query_running ? b->query_running : b->loss_running;
    b->metric = b->metric_running;
    b->running = true;
    bool ok = true;
    if (ok && wanted(only, "adapt_step.running"))
        ok = build_adapt_step(b, "adapt_step.running");
    if (ok && wanted(only, "eval_loss.running"))
        ok = build_loss(b, "eval_loss.running", b->query_loss);
    if (ok && b->metric && wanted(only, "metric.running"))
        ok = build_loss(b, "metric.running", b->metric);
    b->running = false;
    b->loss = loss;
    b->query_loss = query;
    b->metric = metric;
    return ok;
}


/* MAML++'s multi-step loss: Σ_s w_s L_Q(θ_s) over the inner steps s = 1..N,
 * w the meta-step's input `loss_weights` (each[(s - 1) n ..]: θ_s), each
 * term with the per-step params' copy s − 1. */
static ValueId multi_step_loss(Builder *b, IrFunc *f, const ValueId *each, ValueId qx, ValueId qy) {
    int steps = b->mc->inner_steps;
    SrcLoc loc = b->mc->loc;
    IrType real = ir_scalar(b->m->real);
    ValueId w = ir_input(f, "loss_weights", ir_type(b->m->real, 1, (int[]){steps}), loc), l = IR_NONE;
    for (int s = 0; s < steps; s++) {
        ValueId ws = ir_reshape(f, ir_slice(f, w, (int[]){s}, ir_type(b->m->real, 1, (int[]){1}), loc, NULL),
                                real, loc, NULL);
        ValueId ls = call_at(b, f, b->query_loss, each + (size_t)s * (size_t)b->n, ir_meta_step_copy(b->mc, s),
                             qx, qy);
        ValueId term = ir_binary(f, OP_MUL, ws, ls, loc, NULL);
        l = l == IR_NONE ? term : ir_binary(f, OP_ADD, l, term, loc, NULL);
    }
    return l;
}

static bool build_meta_step(Builder *b, const char *name) {
    int n = b->n;
    ValueId *theta = malloc((size_t)n * sizeof *theta), *cur = malloc((size_t)n * sizeof *cur);
    ValueId *g = malloc((size_t)n * sizeof *g);
    ValueId *each = b->mc->msl_iterations ? malloc((size_t)n * (size_t)b->mc->inner_steps * sizeof *each) : NULL;
    IrFunc *f = begin(b, name, theta);
    ValueId sx, sy, qx, qy;
    bool ok = inner_loop(b, f, theta, NULL, cur, each, &sx, &sy, &qx, &qy);
    f->cur_phase = ir_phase(b->m, "query loss");
    ValueId l = IR_NONE;
    if (ok && each)
        l = multi_step_loss(b, f, each, qx, qy);
    else if (ok) {
        use_copy(b, cur, ir_meta_step_copy(b->mc, b->mc->inner_steps - 1));
        l = call(b, f, b->query_loss, cur, qx, qy);
    }
    /* the meta-gradient's ops, by the phase of the ops they differentiate */
    int query = f->cur_phase, back = ir_phase(b->m, "meta-gradient: query loss");
    b->m->adjoint[query] = back;
    for (int s = 1; s <= b->mc->inner_steps; s++) {
        char name[64];
        snprintf(name, sizeof name, "meta-gradient through inner step %d", s);
        int through = ir_phase(b->m, name);
        static const char *const parts[] = {"forward", "gradient", "update"};
        for (int k = 0; k < 3; k++) {
            int p = step_phase(b, s, parts[k]);
            b->m->adjoint[p] = through;
        }
    }
    f->cur_phase = ir_phase(b->m, "meta-gradient");
    if (l != IR_NONE && b->mc->algorithm == ALGO_REPTILE) {
        /* Reptile: the meta-gradient is θ − W, W the adapted params */
        for (int i = 0; i < n; i++) {
            char name[256];
            g[i] = ir_binary(f, OP_SUB, theta[i], cur[i], b->mc->loc, NULL);
            snprintf(name, sizeof name, "d.%s", f->node[theta[i]].name);
            ir_name(f, g[i], name);
        }
    } else
        ok = l != IR_NONE && ad_grad(f, l, n, theta, g);
    if (ok) {
        ir_output(f, l);
        for (int i = 0; i < n; i++)
            ir_output(f, g[i]);
        output_stats(b, f);
    }
    free(theta);
    free(cur);
    free(g);
    free(each);
    return ok;
}

/* --- implicit MAML --- */

/* Σ_j sum(a_j * b_j) over the k tensors: the dot product of the params
 * taken as one vector, a real scalar. */
static ValueId dot(Builder *b, IrFunc *f, int k, const ValueId *a, const ValueId *c) {
    SrcLoc loc = b->mc->loc;
    ValueId s = IR_NONE;
    for (int j = 0; j < k; j++) {
        ValueId t = ir_sum_to(f, ir_binary(f, OP_MUL, a[j], c[j], loc, NULL), ir_scalar(b->m->real), loc, NULL);
        s = s == IR_NONE ? t : ir_binary(f, OP_ADD, s, t, loc, NULL);
    }
    return s;
}

/* num / den, or 0 where den is exactly 0 (CG has converged exactly: the
 * residual is zero, and so is num): num / (den + (den == 0)). */
static ValueId ratio(Builder *b, IrFunc *f, ValueId num, ValueId den) {
    SrcLoc loc = b->mc->loc;
    ValueId zero = ir_binary(f, OP_EQ, den, ir_const(f, 0, ir_value_type(f, den), loc), loc, NULL);
    return ir_binary(f, OP_DIV, num, ir_binary(f, OP_ADD, den, zero, loc, NULL), loc, NULL);
}

/* a + c * x for a scalar c (a = IR_NONE: c * x), named `name` if given. */
static ValueId axpy(Builder *b, IrFunc *f, ValueId a, ValueId c, ValueId x, IrOp op) {
    SrcLoc loc = b->mc->loc;
    ValueId cx = ir_binary(f, OP_MUL, ir_broadcast(f, c, ir_value_type(f, x), loc, NULL), x, loc, NULL);
    return a == IR_NONE ? cx : ir_binary(f, op, a, cx, loc, NULL);
}

/* Give each of the k values v[j] the name prefix + the j-th adapted param's. */
static void name_all(Builder *b, IrFunc *f, int k, const int *idx, ValueId *v, const char *prefix) {
    for (int j = 0; j < k; j++) {
        char name[256];
        snprintf(name, sizeof name, "%s%s", prefix, arg(b->loss, idx[j])->name);
        ir_rename(f, v[j], name);
    }
}

/* iMAML's meta_step (Rajeswaran et al. 2019), for one task:
 *   φ₀ = θ,  φₛ₊₁ = φₛ − α (∇L_S(φₛ) + λ (φₛ − θ))     (s < N, held constant)
 *   g = ∇φ L_Q(φ_N),  H = ∇²φ L_S(φ_N),  solve (I + H/λ) v = g
 * by conjugate gradient from v = 0 for exactly cg_steps iterations; v is
 * the meta-gradient of the adapted params.  Each H p is reverse over
 * reverse: ad_grad of ∇φ L_S(φ) · p with p held constant.  φ_N enters the
 * solve through stop_grad, so nothing is differentiated through the inner
 * loop and its values die step by step: the arena does not grow with N.
 * With `adapt` the solve covers the adapted params only, and a frozen
 * param's meta-gradient is its direct query gradient ∇w L_Q. */
static bool build_imaml_step(Builder *b) {
    if (b->n != b->nparam) {
        diag_error(b->d, b->mc->loc, "iMAML does not meta-learn inner learning rates; give a fixed inner_lr");
        return false;
    }
    int n = b->n, np = b->nparam;
    SrcLoc loc = b->mc->loc;
    ValueId *theta = malloc((size_t)n * sizeof *theta), *cur = malloc((size_t)n * sizeof *cur);
    ValueId *out = malloc((size_t)n * sizeof *out), *phi = malloc((size_t)n * sizeof *phi);
    int *idx = malloc(((size_t)np + 1) * sizeof *idx), k = adapted(b, idx);
    ValueId *wrt = malloc(((size_t)k + 1) * sizeof *wrt), *gs = malloc(((size_t)k + 1) * sizeof *gs);
    ValueId *r = malloc(((size_t)k + 1) * sizeof *r), *p = malloc(((size_t)k + 1) * sizeof *p);
    ValueId *v = malloc(((size_t)k + 1) * sizeof *v), *hp = malloc(((size_t)k + 1) * sizeof *hp);
    ValueId *ap = malloc(((size_t)k + 1) * sizeof *ap), *held = malloc(((size_t)k + 1) * sizeof *held);
    IrFunc *f = begin(b, "meta_step", theta);
    ValueId sx, sy, qx, qy;
    bool ok = inner_loop(b, f, theta, theta, cur, NULL, &sx, &sy, &qx, &qy);
    /* φ: the adapted params held constant; the frozen ones are θ's */
    f->cur_phase = ir_phase(b->m, "query loss");
    memcpy(phi, theta, (size_t)n * sizeof *phi);
    for (int j = 0; ok && j < k; j++) {
        phi[idx[j]] = wrt[j] = ir_unary(f, OP_STOP_GRAD, cur[idx[j]], loc, NULL);
        ir_name(f, phi[idx[j]], arg(b->loss, idx[j])->name);
    }
    ValueId l = ok ? call(b, f, b->query_loss, phi, qx, qy) : IR_NONE;
    int query = f->cur_phase;
    b->m->adjoint[query] = ir_phase(b->m, "query gradient");
    ok = l != IR_NONE && ad_grad(f, l, np, phi, out);
    name_all(b, f, k, idx, out, "gq.");
    /* ∇φ L_S(φ), built once; every Hessian-vector product differentiates it */
    int forward = ir_phase(b->m, "support loss at the adapted params");
    int gradient = ir_phase(b->m, "support gradient at the adapted params");
    f->cur_phase = forward;
    b->m->adjoint[forward] = gradient;
    ValueId ls = ok ? call(b, f, b->loss, phi, sx, sy) : IR_NONE;
    f->cur_phase = gradient;
    ok = ls != IR_NONE && ad_grad(f, ls, k, wrt, gs);
    name_all(b, f, k, idx, gs, "gs.");
    b->m->adjoint[forward] = 0;     /* from here on, adjoints go to the CG step's phase */
    /* CG on (I + H/λ) v = g from v = 0: r = p = g */
    for (int j = 0; j < k; j++) {
        r[j] = p[j] = out[idx[j]];
        v[j] = IR_NONE;
    }
    ValueId rr = IR_NONE;
    for (int it = 1; ok && it <= b->mc->cg_steps; it++) {
        char name[64];
        snprintf(name, sizeof name, "conjugate gradient step %d", it);
        f->cur_phase = ir_phase(b->m, name);
        if (it == 1)
            rr = dot(b, f, k, r, r);
        for (int j = 0; j < k; j++)
            held[j] = ir_unary(f, OP_STOP_GRAD, p[j], loc, NULL);
        ok = ad_grad(f, dot(b, f, k, gs, held), k, wrt, hp);
        name_all(b, f, k, idx, hp, "Hp.");
        for (int j = 0; j < k; j++)   /* A p = p + H p / λ */
            ap[j] = ir_binary(f, OP_ADD, p[j], ir_binary_scalar(f, OP_MUL, hp[j], 1 / b->mc->lambda, false, loc,
                                                                NULL), loc, NULL);
        ValueId alpha = ratio(b, f, rr, dot(b, f, k, p, ap));
        for (int j = 0; j < k; j++) {
            v[j] = axpy(b, f, v[j], alpha, p[j], OP_ADD);
            r[j] = axpy(b, f, r[j], alpha, ap[j], OP_SUB);
        }
        ValueId rr_next = dot(b, f, k, r, r), beta = ratio(b, f, rr_next, rr);
        for (int j = 0; j < k; j++)
            p[j] = axpy(b, f, r[j], beta, p[j], OP_ADD);
        rr = rr_next;
    }
    for (int j = 0; ok && j < k; j++)
        out[idx[j]] = v[j];
    for (int i = 0; ok && i < np; i++) {
        char name[256];
        snprintf(name, sizeof name, "d.%s", f->node[theta[i]].name);
        ir_rename(f, out[i], name);
    }
    if (ok) {
        ir_output(f, l);
        for (int i = 0; i < np; i++)
            ir_output(f, out[i]);
        output_stats(b, f);
    }
    free(theta);
    free(cur);
    free(out);
    free(phi);
    free(idx);
    free(wrt);
    free(gs);
    free(r);
    free(p);
    free(v);
    free(hp);
    free(ap);
    free(held);
    return ok;
}

/* predict: net(x) for the query inputs. */
static bool build_predict(Builder *b) {
    ValueId *theta = malloc((size_t)b->n * sizeof *theta);
    IrFunc *f = begin(b, "predict", theta);
    ValueId x = data(f, "x", b->net, b->nparam);
    ir_output(f, call(b, f, b->net, theta, x, IR_NONE));
    free(theta);
    return true;
}

/* --- the model's functions, checked against @loss --- */

/* Whether f takes @loss's params and then ndata arguments, the first
 * `same` of them typed as those of `like`, and returns one value (a real
 * scalar where `scalar`); else false after reporting. */
static bool check_signature(Builder *b, const IrFunc *f, int ndata, const IrFunc *like, int same, bool scalar) {
    const IrFunc *loss = b->loss;
    bool ok = f->ninput == b->nparam + ndata && f->noutput == 1;
    for (int i = 0; ok && i < b->nparam + same; i++)
        ok = ir_type_eq(arg(f, i)->type, arg(i < b->nparam ? loss : like, i)->type);
    IrType r = ok ? ir_value_type(f, f->output[0]) : (IrType){0};
    if (ok && scalar)
        ok = r.rank == 0 && r.dtype == b->m->real;
    if (!ok)
        diag_error(b->d, b->mc->loc, "'@%s' must take the params of '@loss' (%d), then %s, and return %s",
                   f->name, b->nparam, ndata == 1 ? "x" : "x and y", scalar ? "a real scalar" : "one value");
    return ok;
}

/* The tensors of the per-step params' copies 1..S-1, after every other
 * tensor (b->copy); false after reporting where the algorithm is not MAML. */
static bool per_step_copies(Builder *b) {
    b->copy = malloc(((size_t)b->nparam + 1) * sizeof *b->copy);
    for (int i = 0; i < b->nparam; i++) {
        b->copy[i] = ir_meta_per_step(b->mc, i) ? b->n : -1;
        b->n += ir_meta_per_step(b->mc, i) ? b->mc->inner_steps - 1 : 0;
        if (b->copy[i] >= 0 && b->mc->algorithm != ALGO_MAML) {
            diag_error(b->d, b->mc->loc, "per_step params need 'algorithm = maml'");
            return false;
        }
    }
    return true;
}

/* The functions of batch norm's running statistics, where the model has
 * them (all, or none: @bn.stats, @loss.running, and @loss.query.running
 * and @metric.running where @loss.query and @metric are); false after
 * reporting. */
static bool find_running(Builder *b, const IrModule *model) {
    b->bn_stats = ir_module_find(model, "bn.stats");
    b->loss_running = ir_module_find(model, "loss.running");
    b->query_running = ir_module_find(model, "loss.query.running");
    b->metric_running = ir_module_find(model, "metric.running");
    bool any = b->bn_stats || b->loss_running || b->query_running || b->metric_running;
    if (!any)
        return true;
    const IrFunc *q = ir_module_find(model, "loss.query");
    bool ok = b->bn_stats && b->loss_running && !q == !b->query_running && !b->metric == !b->metric_running &&
              b->bn_stats->noutput == 1 && b->loss_running->ninput == b->nparam + 3;
    IrType t = ok ? ir_value_type(b->bn_stats, b->bn_stats->output[0]) : (IrType){0};
    ok = ok && t.rank == 1 && ir_type_eq(t, arg(b->loss_running, b->nparam)->type);
    if (!ok) {
        diag_error(b->d, b->mc->loc, "running statistics need '@bn.stats(params..., x, y)' returning [L] and "
                   "'@loss.running(params..., bn[L], x, y)' (with '@loss.query.running' and '@metric.running' "
                   "where '@loss.query' and '@metric' are)");
        return false;
    }
    b->stats = malloc(((size_t)b->mc->inner_steps + 1) * sizeof *b->stats);
    return true;
}

/* Find and check the model's functions; count the meta-learned tensors. */
static bool find_functions(Builder *b, const IrModule *model) {
    const MetaConfig *mc = b->mc;
    if (mc->msl_iterations && mc->algorithm != ALGO_MAML) {
        diag_error(b->d, mc->loc, "the multi-step loss is MAML's; it does not apply to %s",
                   mc->algorithm == ALGO_REPTILE ? "Reptile" : "iMAML");
        return false;
    }
    b->loss = ir_module_find(model, "loss");
    if (!b->loss || b->loss->ninput < 2) {
        diag_error(b->d, mc->loc, "the model needs '@loss(params..., x, y)', the task loss");
        return false;
    }
    b->nparam = b->loss->ninput - 2;
    if (mc->adapt && mc->nparam != b->nparam) {
        diag_error(b->d, mc->loc, "the meta block's adapt list covers %d params, but '@loss' has %d", mc->nparam,
                   b->nparam);
        return false;
    }
    const IrFunc *q = ir_module_find(model, "loss.query");
    b->query_loss = q ? q : b->loss;
    b->metric = ir_module_find(model, "metric");
    b->net = ir_module_find(model, "net");
    if (!check_signature(b, b->loss, 2, b->loss, 2, true) || (q && !check_signature(b, q, 2, q, 0, true)) ||
        (b->metric && !check_signature(b, b->metric, 2, b->query_loss, 2, false)) ||
        (b->net && !check_signature(b, b->net, 1, b->query_loss, 1, false)))
        return false;
    if (!find_running(b, model))
        return false;
    b->rate = malloc(((size_t)b->nparam + 1) * sizeof *b->rate);
    b->n = b->nparam;
    for (int i = 0; i < b->nparam; i++) {
        b->rate[i] = ir_meta_has_rate(mc, i) ? b->n : -1;
        b->n += b->rate[i] >= 0 ? ir_meta_rates_per_param(mc) : 0;
    }
    return per_step_copies(b);
}

bool meta_build(const IrModule *model, IrModule *m, const char *only, Diag *d) {
    if (!model->meta) {
        diag_error(d, (SrcLoc){0}, "the module has no meta block to build the meta-step from");
        return false;
    }
    Builder b = {.mc = model->meta, .m = m, .d = d, .first = model->meta->order == ORDER_FIRST};
    bool ok = find_functions(&b, model);
    if (ok && wanted(only, "loss"))
        ok = build_loss(&b, "loss", b.loss);
    if (ok && wanted(only, "grad"))
        ok = build_grad(&b);
    if (ok && wanted(only, "adapt_step"))
        ok = build_adapt_step(&b, "adapt_step");
    if (ok && wanted(only, "meta_step"))
        ok = b.mc->algorithm == ALGO_IMAML ? build_imaml_step(&b) : build_meta_step(&b, "meta_step");
    if (ok && b.mc->order == ORDER_ANNEAL && b.mc->algorithm == ALGO_MAML && wanted(only, "meta_step_first")) {
        b.first = true;     /* derivative-order annealing's first-order step */
        ok = build_meta_step(&b, "meta_step_first");
        b.first = false;
    }
    if (ok && wanted(only, "eval_loss"))
        ok = build_loss(&b, "eval_loss", b.query_loss);
    if (ok && b.metric && wanted(only, "metric"))
        ok = build_loss(&b, "metric", b.metric);
    if (ok && b.net && wanted(only, "predict"))
        ok = build_predict(&b);
    if (ok && b.bn_stats)
        ok = build_running(&b, only);
    free(b.rate);
    free(b.copy);
    free(b.stats);
    if (m->internal_errors) {
        diag_error(d, b.mc->loc, "internal error: %d value(s) of the meta-step could not be built",
                   m->internal_errors);
        return false;
    }
    return ok;
}
