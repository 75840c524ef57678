/* mamlc run and eval with a task family (tools/family.c). */
#ifndef MAMLC_TOOLS_FAMILY_H
#define MAMLC_TOOLS_FAMILY_H

#include <stdbool.h>

#include "../backend/backend.h"
#include "../frontend/model.h"
#include "../runtime/runtime.h"

/* A model's task family, compiled, and the runtime's source of its tasks. */
typedef struct {
    IrModule *mod;              /* model_lower_family's, optimised */
    BeJit *jit;
    RtDraw *draw;               /* the variables', then the support's and the query's draws */
    RtFamily family;
    RtFamilySource *source;     /* an RtSampleFn's ctx for rt_family_sample */
} RunFamily;

/* Lower md's task family, optimise and compile it as the model's functions
 * are, and open a source for `threads` threads sampling at once.  False
 * after reporting through d (f is then closed). */
bool run_family_open(RunFamily *f, const Model *md, const BeOptions *be, int threads, Diag *d);
void run_family_close(RunFamily *f);

#endif
