/* mamlc run and mamlc eval (tools/run.c). */
#ifndef MAMLC_TOOLS_RUN_H
#define MAMLC_TOOLS_RUN_H

#include <stdbool.h>
#include <stdint.h>

#include "../backend/backend.h"
#include "../frontend/model.h"
#include "../runtime/runtime.h"

/* One process of a distributed run (mamlc-mpi, tools/mpi.c): its rank among
 * size processes and how they exchange node sums.  Only rank 0 prints,
 * evaluates and writes files. */
typedef struct {
    int rank, size;
    RtGatherFn gather;
    void *gather_ctx;
} RunCluster;

typedef struct {
    bool train;                 /* mamlc run; else mamlc eval */
    const char *report;         /* --report */
    const char *log;            /* run --log: the experiment log (JSON lines) */
    long log_every;             /* its "train" lines' interval in iterations */
    const char *fit;            /* plot --fit: the SVG to draw (the checkpoint is load) */
    int argc;                   /* the command line, for the log's config */
    char **argv;
    char model_sha256[65];      /* of the model file's text, in hex */
    const char *save, *resume, *load;   /* checkpoints */
    bool save_state;
    const char *data, *eval_data;       /* --data, --eval-data */
    const char *tasks;                  /* --tasks: a task file to train on (eval: to evaluate) */
    const char *eval_tasks_file;        /* --eval-tasks-file: one to evaluate on */
    const char *eval_split;             /* --eval-split: images' held-out split CSV */
    const char *omniglot_runs;          /* eval: the 20-way one-shot runs */
    bool quiet;
    bool expect_improvement;    /* run: fail unless training lowers the held-out loss */
    long iters, eval_every, eval_tasks;
    bool eval_tasks_given;      /* --eval-tasks was given (over a task file: its first N) */
    long checkpoint_every;      /* with save: save every N iterations */
    int threads;                /* threads sharing each meta-batch's tasks */
    uint64_t seed;
    const RunCluster *cluster;  /* NULL: a single process */
    EvalMode eval_mode;         /* --eval-mode: EVAL_MODE_NONE, the model's eval_mode */
    bool eval_both;             /* --eval-mode both: report both kinds of statistics */
} RunOptions;

/* A sinusoid task's ranges and point counts: its [lo, hi) arguments
 * amplitude, phase and x, each defaulting to the MAML paper's. */
RtSinusoid run_sinusoid(const ModelTask *t);

/* The runtime's outer optimiser for a meta configuration: its optimizer,
 * clip_norm, and the cosine schedule over `iterations`. */
RtOptimizer run_optimizer(const MetaConfig *mc);

/* The runtime's initialiser of parameter mp: its init kind, arguments
 * and shape. */
RtInit run_param_init(const ModelParam *mp);

/* Bytes of a value of type t (not rounded). */
size_t run_value_bytes(IrType t);

/* Whether md's task reads a data set (--data, --eval-data): omniglot and
 * images do; sinusoid and families make their tasks, and external ones come
 * from the caller (or a task file, --tasks, as any kind's may). */
bool run_reads_data(const Model *md);

/* JIT-compile m (md's optimised functions) and meta-train, or evaluate a
 * checkpoint.  Returns the exit status (0, or 1 after reporting through d). */
int run_model(const Model *md, IrModule *m, const BeOptions *be, const RunOptions *o, Diag *d);

/* The driver (tools/mamlc.c), as mamlc's main (cluster NULL) and as each
 * process of mamlc-mpi's.  Returns the exit status. */
int mamlc_main(int argc, char **argv, const RunCluster *cluster);

#endif
