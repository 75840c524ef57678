/* A loaded model's meta-step functions built as mamlc builds them: the
 * model lowered to IR (frontend), then the meta-step builder (passes). */
#ifndef MAMLC_TEST_BUILD_MODEL_H
#define MAMLC_TEST_BUILD_MODEL_H

#include "../../frontend/model.h"
#include "../../passes/passes.h"

/* meta_build of md's model module into m (`only`: one function, or NULL). */
static inline bool build_model(const Model *md, IrModule *m, const char *only, Diag *d) {
    IrModule *model = model_lower_module(md, d);
    bool ok = model && meta_build(model, m, only, d);
    ir_module_free(model);
    return ok;
}

#endif
