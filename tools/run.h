/* mamlc run and mamlc eval (tools/run.c). */
#ifndef MAMLC_TOOLS_RUN_H
#define MAMLC_TOOLS_RUN_H

#include <stdbool.h>
#include <stdint.h>

#include "../backend/backend.h"
#include "../frontend/model.h"

typedef struct {
    bool train;                 /* mamlc run; else mamlc eval */
    const char *report;         /* --report */
    const char *save, *resume, *load;   /* checkpoints */
    bool save_state;
    const char *data, *eval_data;       /* --data, --eval-data */
    const char *omniglot_runs;          /* eval: the 20-way one-shot runs */
    bool quiet;
    long iters, eval_every, eval_tasks;
    uint64_t seed;
} RunOptions;

/* JIT-compile m (md's optimised functions) and meta-train, or evaluate a
 * checkpoint.  Returns the exit status (0, or 1 after reporting through d). */
int run_model(const Model *md, IrModule *m, const BeOptions *be, const RunOptions *o, Diag *d);

#endif
