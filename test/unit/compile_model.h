/* A model's text compiled as mamlc compiles it, for the tests that run the
 * compiled functions: frontend, meta-step builder, optimiser, verifier and
 * JIT, in f64. */
#ifndef MAMLC_TEST_COMPILE_MODEL_H
#define MAMLC_TEST_COMPILE_MODEL_H

#include <string.h>

#include "../../backend/backend.h"
#include "../../passes/passes.h"
#include "build_model.h"

/* Load `text` as test.mdl in f64 into *md, build into *m the functions
 * named in `only` (NULL-terminated; NULL: all), optimise and verify them,
 * and JIT them into *jit at opt_level (negative: no JIT, *jit NULL).
 * False after printing the diagnostics to stderr; the caller frees what
 * was made. */
static inline bool compile_model(const char *text, const char *const *only, int opt_level, Model **md,
                                 IrModule **m, BeJit **jit) {
    Diag d;
    diag_init(&d, stderr);
    ModelOptions mo = {.real = DT_F64};
    *md = model_load_text("test.mdl", text, strlen(text), &mo, &d);
    *m = ir_module_new(DT_F64);
    *jit = NULL;
    bool ok = *md != NULL;
    if (ok && !only)
        ok = build_model(*md, *m, NULL, &d);
    for (int i = 0; ok && only && only[i]; i++)
        ok = build_model(*md, *m, only[i], &d);
    for (int i = 0; ok && i < (*m)->nfunc; i++)
        ok = pass_optimize((*m)->func[i], NULL, &d) && ir_verify_func((*m)->func[i], &d);
    BeOptions bo = {.opt_level = opt_level};
    *jit = ok && opt_level >= 0 ? be_jit_compile(*m, &bo, &d) : NULL;
    diag_free(&d);
    return ok && (*jit || opt_level < 0);
}

#endif
