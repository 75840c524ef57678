/* The meta configuration's defaults, and the module's copy of it. */
#include "ir.h"

#include <string.h>

MetaConfig ir_meta_defaults(void) {
    return (MetaConfig){.algorithm = ALGO_MAML, .epsilon = 1.0, .lambda = 2.0, .cg_steps = 5,
                        .inner_steps = 1, .inner_lr = 0.01,
                        .inner_lr_kind = INNER_LR_FIXED, .order = ORDER_SECOND,
                        .eval_steps = {0, 1, 10}, .neval_steps = 3, .meta_batch = 25,
                        .optimizer = {.kind = OPT_ADAM, .lr = 0.001, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8}, .iterations = 70000};
}

void ir_module_set_meta(IrModule *m, const MetaConfig *mc) {
    m->meta = arena_alloc(&m->arena, sizeof *m->meta);
    *m->meta = *mc;
    if (mc->adapt) {
        m->meta->adapt = arena_alloc(&m->arena, (size_t)mc->nparam * sizeof *mc->adapt + 1);
        memcpy(m->meta->adapt, mc->adapt, (size_t)mc->nparam * sizeof *mc->adapt);
    }
    if (mc->per_step) {
        m->meta->per_step = arena_alloc(&m->arena, (size_t)mc->nparam * sizeof *mc->per_step + 1);
        memcpy(m->meta->per_step, mc->per_step, (size_t)mc->nparam * sizeof *mc->per_step);
    }
}

IrType ir_meta_rate_type(const MetaConfig *mc, IrType param) {
    return mc->inner_lr_kind == INNER_LR_LEARNED ? param : ir_scalar(param.dtype);
}
