/* mamlc plot: pictures of an experiment as SVG (docs/logs.md). */
#ifndef MAMLC_TOOLS_PLOT_H
#define MAMLC_TOOLS_PLOT_H

#include <stdbool.h>

#include "../base/diag.h"
#include "../runtime/runtime.h"

/* mamlc plot LOG.jsonl -o OUT.svg: the learning curves of the log at
 * `log` (mamlc run --log): the meta-training loss, and the held-out loss
 * (and metric, where there is one) after each evaluated number of inner
 * steps with their 95% intervals.  A line that is not a JSON object with a
 * known "event" and its fields is refused naming its line.  Returns false
 * after reporting through d. */
bool plot_curves(const char *log, const char *out, Diag *d);

/* What mamlc plot --fit draws: a trained regression model with 1-D input
 * on a few held-out sinusoid tasks. */
typedef struct {
    const RtProgram *prog;      /* its adapt_step adapts */
    RtEntry predict;            /* params..., x [Q, 1] -> net(x) [Q, 1] */
    int q;                      /* the points predict takes at once */
    const RtSinusoid *sinusoid; /* the task source */
    const void *params;         /* the trained parameters */
    uint64_t seed;
    int tasks;                  /* held-out tasks RT_EVAL_TASK | i, i < tasks: one panel each */
    const int *steps;           /* inner step counts, a curve each (e.g. 0, 1, 10) */
    int nsteps;
    const char *title;          /* the model file */
} PlotFit;

/* mamlc plot --fit CKPT MODEL.mdl -o OUT.svg (the MAML paper's Figure 2):
 * for each task, its ground truth, the K support points, and the model's
 * prediction after each number of inner steps on them.  Returns false after
 * reporting through d. */
bool plot_fit(const PlotFit *f, const char *out, Diag *d);

#endif
