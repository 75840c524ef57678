/* The meta-learning configuration: plain data that the frontend fills from
 * a model's meta block, that a module carries beside the model's functions
 * (printed by ir/print.c, read back by ir/parse.c), and that the meta-step
 * builder (passes/meta_step.c) and the drivers read.
 *
 * Textual form, one key per line, every key optional (the defaults of
 * ir_meta_defaults); the params named by `adapt` are those of @loss:
 *
 *   meta {
 *     algorithm = maml                  // or reptile(epsilon = 1),
 *                                       //   imaml(lambda = 2, cg_steps = 5)
 *     inner_steps = 1
 *     inner_lr = 0.01                   // or learned(0.01), learned_scalar(0.01),
 *                                       //   learned_per_step(0.1)
 *     order = second                    // or first, anneal(first_until = N)
 *     multi_step_loss = anneal(N)       // left out: the last step's loss alone
 *     adapt = [W3, b3]                  // left out: every param
 *     per_step = [g1, e1]               // left out: none
 *     eval_steps = [0, 1, 10]
 *     meta_batch = 25
 *     optimizer = adam(lr = 0.001, beta1 = 0.9, beta2 = 0.999, eps = 1e-08)
 *                                       //   or sgd(lr = 0.001), adamw(...); adam and
 *                                       //   adamw may add weight_decay = W, each may
 *                                       //   add schedule = cosine(min_lr = M)
 *     clip_norm = C                     // left out: no clipping
 *     iterations = 70000
 *     eval_mode = transductive          // or running_stats; left out: none
 *   }
 */
#ifndef MAMLC_IR_META_H
#define MAMLC_IR_META_H

#include <stdbool.h>

#include "../base/diag.h"

typedef enum { OPT_ADAM, OPT_SGD, OPT_ADAMW } OptimizerKind;

typedef struct {
    OptimizerKind kind;
    double lr, beta1, beta2, eps;   /* beta/eps: Adam and AdamW only */
    double weight_decay;        /* Adam: added to the gradient as w θ; AdamW: decoupled */
    bool cosine;                /* schedule = cosine(min_lr): the lr anneals over `iterations` */
    double min_lr;
} OptimizerConfig;

typedef enum {
    ORDER_SECOND,
    ORDER_FIRST,
    ORDER_ANNEAL                /* order = anneal(first_until = N): first order while the
                                   iteration is below N, then second (MAML++) */
} MetaOrder;
/* Which batch-norm statistics held-out evaluation uses.  EVAL_MODE_NONE:
 * the key is not given, batch statistics and no running statistics; given
 * (either value), the run keeps running statistics (MAML++'s BNRS). */
typedef enum { EVAL_MODE_NONE, EVAL_MODE_TRANSDUCTIVE, EVAL_MODE_RUNNING_STATS } EvalMode;
typedef enum { ALGO_MAML, ALGO_REPTILE, ALGO_IMAML } MetaAlgorithm;
typedef enum {
    INNER_LR_FIXED,             /* inner_lr = 0.01 */
    INNER_LR_LEARNED,           /* inner_lr = learned(0.01): one rate per element (Meta-SGD) */
    INNER_LR_LEARNED_SCALAR,    /* inner_lr = learned_scalar(0.01): one rate per param */
    INNER_LR_LEARNED_PER_STEP   /* inner_lr = learned_per_step(0.1): one rate per param per
                                   inner step (MAML++'s LSLR) */
} InnerLrKind;

#define META_MAX_EVAL_STEPS 16
/* The most tasks of a meta-batch: the runtime's RT_MAX_BATCH, which keeps
 * every count and index of a meta-batch's tree far inside int. */
#define META_MAX_BATCH (1 << 20)
/* The most inner steps: each is unrolled into the meta-step, so its compile
 * time and memory grow in proportion (evaluation's eval_steps run the adapt
 * step in a loop instead, and need no such bound). */
#define META_MAX_INNER_STEPS 1000
/* The most conjugate-gradient iterations of imaml(cg_steps): each is one
 * Hessian-vector product unrolled into the meta-step. */
#define META_MAX_CG_STEPS 1000

typedef struct {
    MetaAlgorithm algorithm;    /* default maml */
    double epsilon;             /* reptile(epsilon): its outer step size */
    double lambda;              /* imaml(lambda): the proximal term's weight, > 0 */
    int cg_steps;               /* imaml(cg_steps): CG iterations, 1..META_MAX_CG_STEPS */
    int inner_steps;            /* default 1; at most META_MAX_INNER_STEPS */
    double inner_lr;            /* the fixed rate, or the learned rates' initial value (0.01) */
    InnerLrKind inner_lr_kind;  /* default fixed */
    MetaOrder order;            /* default second */
    long first_until;           /* ORDER_ANNEAL's N */
    long msl_iterations;        /* multi_step_loss = anneal(N): N; 0 when off */
    double clip_norm;           /* clip_norm = C: the meta-gradient's largest L2 norm; 0: no clipping */
    bool *adapt;                /* adapt[i]: the inner loop updates the i-th
                                   param (@loss's i-th argument); NULL: all */
    int nparam;                 /* entries of adapt (and of per_step) */
    bool *per_step;             /* per_step[i]: the i-th param is meta-learned
                                   as one copy per inner step (MAML++'s
                                   per-step batch-norm weights); never adapted.
                                   NULL: none */
    int eval_steps[META_MAX_EVAL_STEPS]; /* ascending; default 0, 1, 10 */
    int neval_steps;
    int meta_batch;             /* default 25; at most META_MAX_BATCH */
    OptimizerConfig optimizer;  /* default adam(lr = 0.001) */
    long iterations;            /* default 70000 */
    EvalMode eval_mode;         /* default none */
    SrcLoc loc;                 /* the meta block */
} MetaConfig;

/* The configuration of an empty meta block. */
MetaConfig ir_meta_defaults(void);

/* Whether param i has one meta-learned copy per inner step. */
static inline bool ir_meta_per_step(const MetaConfig *mc, int i) { return mc->per_step && mc->per_step[i]; }

/* Whether the inner loop updates param i (a per-step param never). */
static inline bool ir_meta_adapts(const MetaConfig *mc, int i) {
    return (!mc->adapt || mc->adapt[i]) && !ir_meta_per_step(mc, i);
}

/* The copy of a per-step param that inner step j (from 0) uses: j clamped
 * to [0, S - 1], S = inner_steps.  The query loss after k inner steps uses
 * copy ir_meta_step_copy(mc, k - 1), min(max(k - 1, 0), S - 1) (MAML++:
 * evaluation past inner_steps reuses the last copy). */
static inline int ir_meta_step_copy(const MetaConfig *mc, int k) {
    return k < 0 ? 0 : k < mc->inner_steps ? k : mc->inner_steps - 1;
}

/* Whether param i (adapted, and with its rate learned) has a learned inner
 * learning rate.  Those rates are meta-learned tensors after the params, in
 * param order, each named "lr." + the param's name; with learned_per_step,
 * ir_meta_rates_per_param of them per param, "lr.NAME.s" for step s. */
static inline bool ir_meta_has_rate(const MetaConfig *mc, int i) {
    return mc->inner_lr_kind != INNER_LR_FIXED && ir_meta_adapts(mc, i);
}

/* The learned rate tensors of each param that has them: one per inner step
 * with learned_per_step, else one. */
static inline int ir_meta_rates_per_param(const MetaConfig *mc) {
    return mc->inner_lr_kind == INNER_LR_LEARNED_PER_STEP ? mc->inner_steps : 1;
}

#endif
