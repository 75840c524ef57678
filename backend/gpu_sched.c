/* Which stages of a kernel share a barrier interval (gpu_impl.h).
 *
 * A grid barrier costs microseconds, a meta-step has hundreds of stages,
 * and many of them touch unrelated buffers (the gradients of different
 * layers, the two halves of a product rule).  Two stages conflict when
 * one reads what the other writes or both write the same bytes; each
 * stage goes into the group after the last earlier stage it conflicts
 * with, and the groups run in order, a barrier between two.  So every
 * conflicting pair keeps its node order, and stages of one group, which
 * do not conflict, may run their threads in any order, as the grid
 * runs them.  What a stage reads is found by
 * walking its value's operands through what the plan computes in place
 * (fused operands, layout views) down to the buffers in memory; what it
 * writes is its value's buffer (or slot, or output).  Inputs are never
 * written and need no tracking.  Byte ranges of one task's working memory
 * and of each output are compared; every task has its own, laid out alike,
 * so one task's ranges stand for all.  The batch mean reads every output
 * and always follows a barrier. */
#include "gpu_impl.h"

#include <stdlib.h>

/* A byte range of one task's working memory (space 0) or of output
 * space - 1. */
typedef struct {
    int space;
    int64_t lo, hi;
} Range;

typedef struct {
    Range *r;
    int n, cap;
    bool ok;                    /* false once memory ran out: then every stage is its own group */
} Ranges;

static void add(Ranges *s, Range r)
{
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 16;
        Range *nr = realloc(s->r, (size_t)cap * sizeof *nr);
        if (!nr) {
            s->ok = false;
            return;
        }
        s->r = nr;
        s->cap = cap;
    }
    s->r[s->n++] = r;
}

static bool overlap(const Ranges *a, const Ranges *b)
{
    for (int i = 0; i < a->n; i++)
        for (int j = 0; j < b->n; j++)
            if (a->r[i].space == b->r[j].space && a->r[i].lo < b->r[j].hi && b->r[j].lo < a->r[i].hi)
                return true;
    return false;
}

/* The bytes access a reaches over type t: from its buffer's start to past
 * its last element (strides are never negative). */
static int64_t reach(const BeAccess *a, IrType t)
{
    int64_t last = a->offset;
    for (int k = 0; k < a->rank && k < t.rank; k++)
        last += (int64_t)(t.dim[k] - 1) * a->stride[k];
    return (last + 1) * (int64_t)ir_dtype_size(a->dtype);
}

/* The memory that access a of value x names, if any that a stage can write. */
static bool range_of(const Gpu *g, ValueId x, const BeAccess *a, Range *r)
{
    switch (a->base) {
    case BE_ARENA: *r = (Range){0, a->byte_off, a->byte_off + reach(a, g->f->node[x].type)}; return true;
    case BE_OUTPUT: *r = (Range){1 + a->index, 0, reach(a, g->f->node[x].type)}; return true;
    case BE_REG: {
        int64_t at = g->reg_off + 8 * (int64_t)g->reg_slot[a->index];
        *r = (Range){0, at, at + 8};
        return true;
    }
    default: return false;      /* inputs, immediates */
    }
}

/* The memory value v's code reads: its operands', through what is
 * computed in place. */
static void reads(const Gpu *g, ValueId v, Ranges *s)
{
    const IrNode *n = &g->f->node[v];
    for (int i = 0; i < ir_op_info[n->op].arity; i++) {
        ValueId x = n->arg[i];
        const BeAccess *a = &g->plan->acc[x];
        Range r;
        if (a->base == BE_NONE)
            reads(g, x, s);
        else if (range_of(g, x, a, &r))
            add(s, r);
    }
}

/* The ranges stage st reads and writes. */
static void stage_ranges(const Gpu *g, const GpuStage *st, Ranges *rd, Ranges *wr)
{
    Range r;
    if (st->kind == GPU_STAGE_VALUE) {
        reads(g, st->index, rd);
        if (range_of(g, st->index, &g->plan->acc[st->index], &r))
            add(wr, r);
    } else if (st->kind == GPU_STAGE_COPY) {
        ValueId x = g->f->output[st->index];
        const BeAccess *a = &g->plan->acc[x];
        if (a->base == BE_NONE)
            reads(g, x, rd);
        else if (range_of(g, x, a, &r))
            add(rd, r);
        add(wr, (Range){1 + st->index, 0, (int64_t)ir_numel(g->f->node[x].type) * (int64_t)ir_dtype_size(a->dtype)});
    }
}

void gpu_stage_groups(const Gpu *g, const GpuStage *st, int nstage, int *order, bool *starts)
{
    Ranges *rd = calloc((size_t)nstage + 1, sizeof *rd), *wr = calloc((size_t)nstage + 1, sizeof *wr);
    int *group = calloc((size_t)nstage + 1, sizeof *group);
    bool ok = rd && wr && group;
    for (int k = 0; ok && k < nstage; k++) {
        rd[k].ok = wr[k].ok = true;
        stage_ranges(g, &st[k], &rd[k], &wr[k]);
        ok = rd[k].ok && wr[k].ok;
    }
    /* each stage one group after the last it conflicts with; the mean, which
     * updates the parameters every stage reads, after all */
    int last = 0;
    for (int k = 0; ok && k < nstage; k++) {
        int gk = 0;
        for (int j = 0; j < k; j++)
            if (group[j] >= gk && (st[k].kind == GPU_STAGE_MEAN || overlap(&rd[k], &wr[j]) ||
                                   overlap(&wr[k], &rd[j]) || overlap(&wr[k], &wr[j])))
                gk = group[j] + 1;
        group[k] = gk;
        last = gk > last ? gk : last;
    }
    /* stages by group, in node order within one */
    int at = 0;
    for (int q = 0; q <= last; q++)
        for (int k = 0; k < nstage; k++)
            if (!ok ? q == 0 : group[k] == q) {
                starts[at] = at == 0 || !ok || group[order[at - 1]] != q;
                order[at++] = k;
            }
    for (int k = 0; rd && wr && k < nstage; k++) {
        free(rd[k].r);
        free(wr[k].r);
    }
    free(rd);
    free(wr);
    free(group);
}
