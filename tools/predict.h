/* What a generated library says about its model's net(x) (tools/predict.c). */
#ifndef MAMLC_TOOLS_PREDICT_H
#define MAMLC_TOOLS_PREDICT_H

#include <stdbool.h>

#include "../frontend/model.h"

typedef struct {
    bool present;               /* the model has `def net(x)` */
    IrType out;                 /* net(qx)'s type, at the query set's points */
    bool any_points;            /* row i of net(x) is point i's prediction, from
                                   point i alone: net may run on any number of
                                   points, in chunks of the compiled number */
} LibPredict;

/* p for md (all false when md has no net).  False after reporting through
 * d when net cannot be lowered. */
bool lib_predict_info(const Model *md, LibPredict *p, Diag *d);

#endif
