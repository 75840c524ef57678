/* A task family for mamlc run and eval: the frontend's functions of the
 * family (model_lower_family), optimised and JIT-compiled like the model's,
 * behind the runtime's sampler (runtime/family.c). */
#include "family.h"

#include <stdlib.h>

#include "../passes/passes.h"

static RtDraw rt_draw(const ModelDraw *d) {
    return (RtDraw){d->kind == DRAW_UNIFORM ? RT_DRAW_UNIFORM : RT_DRAW_NORMAL, d->a, d->b, (size_t)ir_numel(d->type)};
}

bool run_family_open(RunFamily *f, const Model *md, const BeOptions *be, int threads, Diag *d) {
    static const char *const name[2] = {"family.support", "family.query"};
    const ModelFamily *fam = md->task.family;
    PassOptions po = {.out = stdout};
    *f = (RunFamily){.mod = model_lower_family(md, d)};
    bool ok = f->mod != NULL;
    for (int i = 0; ok && i < f->mod->nfunc; i++)
        ok = pass_optimize(f->mod->func[i], &po, d);
    f->jit = ok ? be_jit_compile(f->mod, be, d) : NULL;
    f->draw = calloc((size_t)(fam->nvar + fam->ndraw[0] + fam->ndraw[1] + 1), sizeof *f->draw);
    if (!f->jit || !f->draw) {
        if (f->jit)
            diag_error(d, (SrcLoc){0}, "out of memory for the task family");
        run_family_close(f);
        return false;
    }
    RtDraw *at = f->draw;
    f->family = (RtFamily){.real = md->real == DT_F64 ? RT_F64 : RT_F32, .var = at, .nvar = fam->nvar};
    for (int i = 0; i < fam->nvar; i++)
        *at++ = rt_draw(&fam->var[i]);
    for (int s = 0; s < 2; s++) {
        RtFamilySet *set = &f->family.set[s];
        *set = (RtFamilySet){{(RtFn)be_jit_lookup(f->jit, name[s]), be_arena_bytes(ir_module_find(f->mod, name[s]))},
                             at, fam->ndraw[s]};
        for (int i = 0; i < fam->ndraw[s]; i++)
            *at++ = rt_draw(&fam->draw[s][i]);
    }
    f->source = rt_family_new(&f->family, threads);
    if (!f->source) {
        diag_error(d, (SrcLoc){0}, "out of memory for the task family's buffers");
        run_family_close(f);
        return false;
    }
    return true;
}

void run_family_close(RunFamily *f) {
    rt_family_free(f->source);
    be_jit_free(f->jit);
    ir_module_free(f->mod);
    free(f->draw);
    *f = (RunFamily){0};
}
