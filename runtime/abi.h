/* The description of one compiled model that a generated shared library
 * hands to its ABI layer (runtime/abi.c).  mamlc writes this text, verbatim,
 * at the top of every generated model file and fills in a `mamlc__model`
 * after it, so both sides always agree on the layout.  Self-contained: no
 * includes beyond the C library. */
#ifndef MAMLC_ABI_MODEL_H
#define MAMLC_ABI_MODEL_H

#include <stddef.h>

/* mamlc_abi_version(): every change of the ABI raises it, and keeps every
 * earlier function with its meaning (docs/abi.md lists what each added). */
#define MAMLC_ABI 3

/* backend/backend.h's calling convention */
typedef void (*MamlcFn)(const void *const *in, void *const *out, void *arena);

typedef struct {
    MamlcFn fn;                 /* NULL where the model has no such function */
    size_t arena_bytes;
} MamlcEntry;

/* One meta-learned tensor of the flat parameter vector. */
typedef struct {
    const char *name;
    size_t offset, count;       /* in reals */
    int init_kind;              /* RtInitKind */
    double init_a, init_b;
    int rank;
    const int *dim;
} MamlcTensor;

/* Where mamlc_sample_tasks draws a model's tasks from. */
enum { MAMLC_SAMPLE_NONE, MAMLC_SAMPLE_SINUSOID, MAMLC_SAMPLE_FAMILY };

/* A task family's draw: n reals, uniform on [a, b) or normal (mean a, std b). */
typedef struct {
    int kind;                   /* RtDrawKind */
    double a, b;
    size_t n;
} MamlcDraw;

typedef struct {
    int f64;                    /* reals are double (else float) */
    size_t nreal;               /* the flat parameter vector */
    int ntensor;
    const MamlcTensor *tensor;
    size_t sx_bytes, sy_bytes, qx_bytes, qy_bytes;  /* one task's tensors */
    int classes[4];             /* sx, sy, qx, qy: an i32 field's labels lie in
                                   [0, classes); 0: any value (reals, and labels
                                   the loss never encodes) */
    size_t predict_count;       /* reals of net(qx) */
    MamlcEntry meta_step;       /* tensors..., sx, sy, qx, qy -> loss, meta-gradient... */
    MamlcEntry adapt_step;      /* tensors..., x, y -> tensors after one inner step..., loss */
    MamlcEntry loss;            /* tensors..., qx, qy -> loss */
    MamlcEntry predict;         /* tensors..., qx -> net(qx) */
    int optimizer;              /* RtOptKind */
    double lr, beta1, beta2, eps;
    const char *json;           /* mamlc_model_json() */
    /* version 2 */
    MamlcEntry metric;          /* tensors..., qx, qy -> metric */
    int query_points;           /* qx's first extent: the points predict takes */
    int any_points;             /* row i of net(qx) comes from point i alone
                                   (tools/predict.c): predict runs on chunks */
    int sampler;                /* MAMLC_SAMPLE_* */
    double sinusoid[6];         /* amplitude, phase and x: [lo, hi) each */
    const MamlcDraw *draw;      /* a family's variables', then its support's and query's draws */
    int nvar, ndraw[2];
    MamlcEntry family[2];       /* support, query: variables..., draws... -> x, y */
    /* version 3: MAML++ */
    double weight_decay, clip_norm, min_lr;     /* the outer optimiser's options (RtOptimizer) */
    int cosine;
    long t_max;
    MamlcEntry meta_step_first; /* order = anneal: the first-order meta-step; fn NULL otherwise */
    long first_until;           /* ... which iterations below this take */
    int loss_weights;           /* multi_step_loss: the weights meta_step takes after qy; 0: none */
    long msl_iterations;        /* ... annealed over this many iterations */
} MamlcModel;

/* A library built with --device cuda also defines `mamlc__gpu`: the
 * meta-step's GPU kernel (runtime/abi_cuda.c, docs/gpu.md). */
typedef struct {
    const char *ptx;            /* the PTX module, NUL-terminated */
    const char *kernel;         /* the meta-step's kernel in it */
    size_t task_bytes;          /* its working memory per task */
    size_t stage_elems;         /* the most elements of one task in one stage */
} MamlcGpu;

#endif
