/* Shared by the plan's files (plan.c, plan_fusion.c, plan_kernels.c);
 * not part of plan.h's contract. */
#ifndef MAMLC_BACKEND_PLAN_IMPL_H
#define MAMLC_BACKEND_PLAN_IMPL_H

#include "plan.h"

#define BE_ALIGN 64             /* every arena buffer and scratch starts at a multiple */

/* Bytes of a buffer of type t, rounded up to BE_ALIGN. */
int64_t be_buffer_bytes(IrType t);
/* Whether access a walks a value of type t as a dense buffer of t does
 * (its strides; its offset aside). */
bool be_dense_strides(const BeAccess *a, IrType t);
/* Decide what is fused into what (plan_fusion.c): fills p->fused_into and
 * clears computed, acc and scratch of the fused values; live: per value,
 * whether an output needs it. */
void be_plan_fusion(const IrFunc *f, BePlan *p, const bool *live);

/* Arena bytes live from node `first` to node `last`, both included: a
 * buffer (with the values computed in place of it) or a node's scratch. */
typedef struct {
    int64_t size, off;
    int first, last;
} BeSpan;

/* Give each span an offset (plan_arena.c), a multiple of BE_ALIGN where
 * the sizes are, such that no two spans live at one node share a byte;
 * return the bytes they need.  Deterministic. */
int64_t be_place_spans(BeSpan *sp, int n, Arena *arena);

#endif
