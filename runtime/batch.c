/* The meta-gradient of a meta-batch, summed along a tree whose shape
 * depends only on the meta-batch size (runtime.h says how), so any split of
 * the tasks among threads and processes gives the same bits.
 *
 * A worker owning tasks [a, b) computes the nodes of [a, b) depth-first.
 * A left child's sums wait, while its right sibling is computed, in a
 * vector of their own: a leaf's as meta_step wrote them, in the element
 * type, one buffer per level; a larger node's in double, one per level.
 * Each leaf that is no left child ends a chain of such sums: one pass adds
 * it to them, innermost first, and writes the sum of the largest node it
 * ends -- the same additions as summing every node into a vector of its
 * own, without writing the others.  A worker whose tasks are done computes
 * other workers' last tasks, whose leaves they then read (Claims, below).
 * Regrouping walks the tree from the top: a node lying inside one part is
 * that part's next input vector (inputs come left to right, as the walk
 * meets them); any other node is the sum of its children. */
#define _DEFAULT_SOURCE         /* madvise */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "runtime.h"

enum {
    ALIGN = 64,                 /* alignment of every buffer handed to compiled code */
    HUGE_PAGE = 2 << 20,        /* buffers this large go in huge pages */
    BLOCK = 512,                /* doubles a chain is summed in at a time (4 KiB) */
    MAX_LEVELS = 33             /* > rt_tree_depth of any int */
};

/* Reals from one leaf buffer to the next: a task's gradient and loss,
 * rounded up to ALIGN bytes. */
static size_t leaf_stride(const RtProgram *p)
{
    size_t rb = rt_real_bytes(p->real);
    return ((rt_node_reals(p) * rb + ALIGN - 1) / ALIGN * ALIGN) / rb;
}

/* Bytes from one leaf buffer to the next. */
static size_t leaf_bytes(const RtProgram *p)
{
    return leaf_stride(p) * rt_real_bytes(p->real);
}

/* Buffers of HUGE_PAGE or more (a member's arena, leaves and node sums:
 * about 12 MB for the Omniglot MLP, more 4 KiB pages than a Zen 3 core's
 * L2 TLB maps) are asked for in transparent huge pages, where the kernel
 * has them. */
void *rt_alloc_zeroed(size_t n, size_t size)
{
    if (size != 0 && n > (SIZE_MAX - HUGE_PAGE) / size)
        return NULL;
    size_t bytes = n * size, align = bytes >= HUGE_PAGE ? HUGE_PAGE : ALIGN;
    bytes = bytes ? (bytes + align - 1) / align * align : ALIGN;
    void *p = aligned_alloc(align, bytes);
    if (!p)
        return NULL;
#ifdef MADV_HUGEPAGE
    if (align == HUGE_PAGE)
        madvise(p, bytes, MADV_HUGEPAGE);       /* a hint: it may fail */
#endif
    memset(p, 0, bytes);
    return p;
}

/* ------------------------------------------------------------------------
 * The tree */

size_t rt_node_reals(const RtProgram *p)
{
    return p->nreal + 1 + p->nstat;
}

static int count_nodes(int lo, int hi, int a, int b)
{
    if (hi <= a || b <= lo)
        return 0;
    if (a <= lo && hi <= b)
        return 1;
    int mid = lo + (hi - lo) / 2;
    return count_nodes(lo, mid, a, b) + count_nodes(mid, hi, a, b);
}

int rt_tree_count(int B, int a, int b)
{
    return B > 0 ? count_nodes(0, B, a, b) : 0;
}

int rt_tree_depth(int n)
{
    int d = 0;
    while (d < 31 && (1L << d) < (long)n)
        d++;
    return d;
}

/* A range of n tasks meets at most two maximal nodes per level of node
 * sizes up to n: 2 (floor(log2 n) + 1), checked against every range of
 * small trees in test/unit/test_runtime_batch.c. */
int rt_tree_capacity(int n)
{
    int bits = 0;
    while (bits < 31 && (1L << bits) <= (long)n)
        bits++;
    return 2 * bits;
}

/* dst = l + r over n doubles (dst may be l). */
static void add(double *dst, const double *l, const double *r, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = l[i] + r[i];
}

/* ------------------------------------------------------------------------
 * Computing nodes from tasks */

void rt_step_work_free(RtStepWork *w)
{
    free(w->arena);
    free(w->task_grad);
    free(w->stack);
    free(w->in);
    free(w->out);
    free((void *)w->drawn.sx);
    free((void *)w->drawn.sy);
    free((void *)w->drawn.qx);
    free((void *)w->drawn.qy);
    *w = (RtStepWork){0};
}

bool rt_step_work_alloc(const RtProgram *p, int max_tasks, RtStepWork *w)
{
    size_t levels = 1 + (size_t)rt_tree_depth(max_tasks);
    size_t v = rt_node_reals(p);
    size_t lv = leaf_stride(p);
    *w = (RtStepWork){
        .arena = rt_alloc_zeroed(p->meta_step.arena_bytes > p->meta_step_first.arena_bytes
                                     ? p->meta_step.arena_bytes : p->meta_step_first.arena_bytes, 1),
        .task_grad = lv <= SIZE_MAX / levels ? rt_alloc_zeroed(levels * lv, rt_real_bytes(p->real)) : NULL,
        .stack = v <= SIZE_MAX / levels ? rt_alloc_zeroed(levels * v, sizeof(double)) : NULL,
        .in = calloc((size_t)p->nparam + 5, sizeof(void *)),
        .out = calloc((size_t)p->nparam + 2, sizeof(void *)),
    };
    if (p->sample)
        w->drawn = (RtTask){rt_alloc_zeroed(p->sx_bytes, 1), rt_alloc_zeroed(p->sy_bytes, 1),
                            rt_alloc_zeroed(p->qx_bytes, 1), rt_alloc_zeroed(p->qy_bytes, 1)};
    bool drawn = !p->sample || (w->drawn.sx && w->drawn.sy && w->drawn.qx && w->drawn.qy);
    if (w->arena && w->task_grad && w->stack && w->in && w->out && drawn)
        return true;
    rt_step_work_free(w);
    return false;
}

/* Tasks handed out while the members of a batch compute their nodes.  A
 * member takes its own tasks from the front; one with none left takes
 * another's from the back into a spare leaf buffer, and the owner, coming
 * to that task, reads the buffer instead of computing it.  A task's leaf is
 * the same bits whoever computes it, so the sums are too, while a member
 * slowed by the rest of the machine hands the others its last tasks. */
typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t stolen_done;
    int members, first;         /* the call's first task */
    int *next, *end;            /* member m's tasks not yet taken: [next[m], end[m]) */
    int *spare_of;              /* per task of the call: its spare buffer, when taken from the back */
    bool *done;                 /* per task of the call: its spare buffer is written */
    char *spare;                /* nspare leaf buffers */
    int nspare, used;
} Claims;

/* What the leaves of one computation read, and who computes them. */
typedef struct {
    const RtProgram *p;
    const void *params;
    const RtSlice *s;
    Claims *claims;             /* NULL: a member alone */
    int member;
} Leaves;

/* A left child's sums, waiting for its right sibling's: a leaf's in the
 * element type, a larger node's in double. */
typedef struct {
    const void *v;
    bool leaf;
} Pending;

/* Task t's meta-gradient and query loss into buf (nreal + 1 reals of the
 * element type); if the slice says so, its data sampled first into w's
 * drawn task, which stays in this core's caches from task to task. */
static void run_task(const Leaves *l, RtStepWork *w, int t, void *buf)
{
    const RtProgram *p = l->p;
    const RtSlice *s = l->s;
    const RtTask *d = s->sample ? &w->drawn : &s->task[t - s->first];
    if (s->sample)
        p->sample(p->sample_ctx, s->seed, s->task_base + (uint64_t)t, (void *)d->sx, (void *)d->sy,
                  (void *)d->qx, (void *)d->qy);
    int np = p->nparam;
    size_t rb = rt_real_bytes(p->real);
    for (int i = 0; i < np; i++) {
        w->in[i] = (const char *)l->params + p->param[i].offset * rb;
        w->out[i + 1] = (char *)buf + p->param[i].offset * rb;
    }
    w->in[np] = d->sx;
    w->in[np + 1] = d->sy;
    w->in[np + 2] = d->qx;
    w->in[np + 3] = d->qy;
    w->in[np + 4] = s->loss_weights;
    w->out[0] = (char *)buf + p->nreal * rb;
    w->out[np + 1] = (char *)buf + (p->nreal + 1) * rb;     /* the batch statistics, if any */
    (s->first_order ? p->meta_step_first : p->meta_step).fn(w->in, w->out, w->arena);
}

/* Member m comes to task t, its own: NULL when m is to compute it, or the
 * leaf another member took and computed (once it is written). */
static const void *claim(Claims *c, const RtProgram *p, int m, int t)
{
    const void *stolen = NULL;
    pthread_mutex_lock(&c->lock);
    if (t < c->end[m]) {
        c->next[m] = t + 1;
    } else {
        while (!c->done[t - c->first])
            pthread_cond_wait(&c->stolen_done, &c->lock);
        stolen = c->spare + (size_t)c->spare_of[t - c->first] * leaf_bytes(p);
    }
    pthread_mutex_unlock(&c->lock);
    return stolen;
}

/* Member l->member, its own tasks done: the last task not yet taken of the
 * member with the most left, into a spare buffer, while there are such
 * tasks and free buffers. */
static void steal(const Leaves *l, RtStepWork *w)
{
    Claims *c = l->claims;
    for (;;) {
        pthread_mutex_lock(&c->lock);
        int v = -1;
        for (int m = 0; m < c->members; m++)
            if (c->end[m] > c->next[m] && (v < 0 || c->end[m] - c->next[m] > c->end[v] - c->next[v]))
                v = m;
        if (v < 0 || c->used == c->nspare) {
            pthread_mutex_unlock(&c->lock);
            return;
        }
        int t = --c->end[v], k = c->used++;
        c->spare_of[t - c->first] = k;
        pthread_mutex_unlock(&c->lock);
        run_task(l, w, t, c->spare + (size_t)k * leaf_bytes(l->p));
        pthread_mutex_lock(&c->lock);
        c->done[t - c->first] = true;
        pthread_cond_broadcast(&c->stolen_done);
        pthread_mutex_unlock(&c->lock);
    }
}

/* Leaf t: task t's meta-gradient and query loss, in leaf buffer `level`
 * unless another member computed it; returns where it is. */
static const void *leaf(const Leaves *l, RtStepWork *w, int t, int level)
{
    const void *stolen = l->claims ? claim(l->claims, l->p, l->member, t) : NULL;
    if (stolen)
        return stolen;
    void *buf = (char *)w->task_grad + (size_t)level * leaf_bytes(l->p);
    run_task(l, w, t, buf);
    return buf;
}

/* x[0, m) <- pend[0] + (pend[1] + (... + (pend[k-1] + last))) from element
 * i0 on, in double, last being a leaf's output. */
static inline void chain_block(const RtProgram *p, double *restrict x, const void *last, const Pending *pend, int k,
                        size_t i0, size_t m)
{
    if (p->real == RT_F32) {
        const float *restrict f = (const float *)last + i0;
        for (size_t i = 0; i < m; i++)
            x[i] = (double)f[i];
    } else {
        memcpy(x, (const double *)last + i0, m * sizeof(double));
    }
    for (int j = k - 1; j >= 0; j--) {
        if (pend[j].leaf && p->real == RT_F32) {
            const float *restrict f = (const float *)pend[j].v + i0;
            for (size_t i = 0; i < m; i++)
                x[i] = (double)f[i] + x[i];
        } else {
            const double *restrict d = (const double *)pend[j].v + i0;
            for (size_t i = 0; i < m; i++)
                x[i] = d[i] + x[i];
        }
    }
}

/* dst = pend[0] + (pend[1] + (... + (pend[k-1] + last))) over the n
 * doubles of a node vector, a whole block at a time (the last one ending
 * at n, over elements done already: it writes them again, the same), so
 * that the loops have a constant count, which compilers vectorise at -O2. */
static void chain_sum(const RtProgram *p, double *dst, const void *last, const Pending *pend, int k, size_t n)
{
    if (n < BLOCK) {
        chain_block(p, dst, last, pend, k, 0, n);
        return;
    }
    for (size_t i0 = 0; i0 < n; i0 += BLOCK) {
        size_t at = n - i0 < BLOCK ? n - BLOCK : i0;
        chain_block(p, dst + at, last, pend, k, at, BLOCK);
    }
}

/* pend[0] + (... + (pend[k-1] + node [lo, hi))) into v, node [lo, hi) lying
 * `level` levels below the first node computed; double temporaries from
 * tmp on, one per level. */
static void node_chain(const Leaves *l, RtStepWork *w, int lo, int hi, int level, double *v, double *tmp,
                       Pending *pend, int k)
{
    size_t n = rt_node_reals(l->p);
    if (hi - lo == 1) {
        chain_sum(l->p, v, leaf(l, w, lo, level), pend, k, n);
        return;
    }
    int mid = lo + (hi - lo) / 2;
    if (mid - lo == 1) {
        pend[k] = (Pending){leaf(l, w, lo, level), true};
    } else {
        double *left = tmp + (size_t)level * n;
        node_chain(l, w, lo, mid, level + 1, left, tmp, pend + k, 0);
        pend[k] = (Pending){left, false};
    }
    node_chain(l, w, mid, hi, level + 1, v, tmp, pend, k + 1);
}

/* The sums of node [lo, hi) into v; double temporaries from tmp on (one
 * vector per level below the node). */
static void node_sum(const Leaves *l, RtStepWork *w, int lo, int hi, double *v, double *tmp)
{
    Pending pend[MAX_LEVELS];
    node_chain(l, w, lo, hi, 0, v, tmp, pend, 0);
}

/* The nodes of [a, b) under node [lo, hi), left to right from out on;
 * returns the vector after the last. */
static double *compute_nodes(const Leaves *l, RtStepWork *w, int lo, int hi, int a, int b, double *out)
{
    if (hi <= a || b <= lo)
        return out;
    if (a <= lo && hi <= b) {
        node_sum(l, w, lo, hi, out, w->stack);
        return out + rt_node_reals(l->p);
    }
    int mid = lo + (hi - lo) / 2;
    out = compute_nodes(l, w, lo, mid, a, b, out);
    return compute_nodes(l, w, mid, hi, a, b, out);
}

/* grad[i] <- the mean over B tasks of the node at root, in the element
 * type, for i in [from, to) (to <= nreal). */
static void mean_range(const RtProgram *p, const double *root, int B, void *grad, size_t from, size_t to)
{
    double inv = 1.0 / B;
    if (p->real == RT_F32)
        for (size_t i = from; i < to; i++)
            ((float *)grad)[i] = (float)(root[i] * inv);
    else
        for (size_t i = from; i < to; i++)
            ((double *)grad)[i] = root[i] * inv;
}

/* The mean query loss over B tasks of the node at root. */
static double mean_loss(const RtProgram *p, const double *root, int B)
{
    return root[p->nreal] * (1.0 / B);
}

double rt_meta_grad(const RtProgram *p, RtStepWork *w, const void *params, int n,
                    const RtTask *tasks, void *grad)
{
    RtSlice s = {.B = n, .first = 0, .count = n, .task = tasks};
    Leaves l = {p, params, &s, NULL, 0};
    double *root = w->stack;
    node_sum(&l, w, 0, n, root, root + rt_node_reals(p));
    mean_range(p, root, n, grad, 0, p->nreal);
    return mean_loss(p, root, n);
}

/* ------------------------------------------------------------------------
 * Regrouping the nodes of parts */

/* Where the walk stands among the parts' input vectors. */
typedef struct {
    int nparts;
    const int *bound;
    int k;                      /* the part of the next input */
    const double *next;         /* the next input vector */
    size_t n;                   /* doubles per vector */
    size_t from, len;           /* the elements of each vector the walk sums */
} Parts;

/* The sums of node [lo, hi): an input vector, or computed into v (with
 * temporaries from tmp on). */
static const double *part_sum(Parts *c, int lo, int hi, double *v, double *tmp)
{
    while (c->k < c->nparts - 1 && lo >= c->bound[c->k + 1])
        c->k++;
    if (hi <= c->bound[c->k + 1]) {
        const double *in = c->next;
        c->next += c->n;
        return in;
    }
    int mid = lo + (hi - lo) / 2;
    const double *left = part_sum(c, lo, mid, v, tmp);
    const double *right = part_sum(c, mid, hi, tmp, tmp + c->n);
    add(v + c->from, left + c->from, right + c->from, c->len);
    return v;
}

/* The nodes of [a, b) under node [lo, hi), from the parts at c, left to
 * right from out on; returns the vector after the last. */
static double *regroup(Parts *c, int lo, int hi, int a, int b, double *out, double *tmp)
{
    if (hi <= a || b <= lo)
        return out;
    if (a <= lo && hi <= b) {
        const double *v = part_sum(c, lo, hi, out, tmp);
        if (v != out)
            memcpy(out + c->from, v + c->from, c->len * sizeof(double));
        return out + c->n;
    }
    int mid = lo + (hi - lo) / 2;
    out = regroup(c, lo, mid, a, b, out, tmp);
    return regroup(c, mid, hi, a, b, out, tmp);
}

/* ------------------------------------------------------------------------
 * The threads of a batch */

struct RtBatch {
    RtProgram p;
    int max_batch;
    int members;                /* threads, the caller included */
    RtTeam *team;
    RtStepWork *work;           /* one per member */
    Claims claims;
    int *bound;                 /* members + 1: the members' tasks in the current call */
    double **dest;              /* members: where each writes its nodes */
    double *sums;               /* the members' nodes (more than one member) */
    double *root;
    /* the current call */
    const RtSlice *slice;
    const void *params;
    double *out;                /* rt_batch_nodes's */
    int B, nparts;              /* rt_batch_mean's */
    const int *part_bound;
    const double *part_sums;
    void *grad;
    double loss;
    const RtOptimizer *opt;     /* rt_batch_opt_step's */
    void *opt_params, *opt_state;
    const void *opt_grad;
    long opt_t;
    double opt_scale;           /* rt_opt_grad_scale of the step's gradient */
    double *stats;              /* rt_batch_stats */
};

void rt_batch_free(RtBatch *b)
{
    if (!b)
        return;
    rt_team_free(b->team);
    pthread_mutex_destroy(&b->claims.lock);
    pthread_cond_destroy(&b->claims.stolen_done);
    free(b->claims.next);
    free(b->claims.end);
    free(b->claims.spare_of);
    free(b->claims.done);
    free(b->claims.spare);
    for (int i = 0; b->work && i < b->members; i++)
        rt_step_work_free(&b->work[i]);
    free(b->work);
    free(b->bound);
    free(b->dest);
    free(b->sums);
    free(b->root);
    free(b->stats);
    free(b);
}

RtBatch *rt_batch_new(const RtProgram *p, int max_batch, int threads)
{
    if (max_batch < 1 || max_batch > RT_MAX_BATCH || threads > RT_MAX_THREADS)
        return NULL;
    RtBatch *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    int members = threads > 1 ? threads : 1;
    size_t v = rt_node_reals(p);
    int share = max_batch / members + (max_batch % members != 0);      /* rounded up */
    int nspare = members == 1 ? 0 : share / 4 > 1 ? share / 4 : 1;     /* a quarter of a member's tasks */
    size_t nsums = members > 1 ? (size_t)members * (size_t)rt_tree_capacity(share) : 0;
    *b = (RtBatch){
        .p = *p, .max_batch = max_batch, .members = members,
        .work = calloc((size_t)members, sizeof(RtStepWork)),
        .bound = calloc((size_t)members + 1, sizeof(int)),
        .dest = calloc((size_t)members, sizeof(double *)),
        .sums = nsums && v <= SIZE_MAX / nsums ? rt_alloc_zeroed(nsums * v, sizeof(double)) : NULL,
        .root = rt_alloc_zeroed(v, sizeof(double)),
        .stats = calloc(p->nstat + 1, sizeof(double)),
        .claims = {
            .members = members,
            .next = calloc((size_t)members, sizeof(int)),
            .end = calloc((size_t)members, sizeof(int)),
            .spare_of = calloc((size_t)max_batch, sizeof(int)),
            .done = calloc((size_t)max_batch, sizeof(bool)),
            .spare = nspare ? rt_alloc_zeroed((size_t)nspare, leaf_bytes(p)) : NULL,
            .nspare = nspare,
        },
    };
    pthread_mutex_init(&b->claims.lock, NULL);
    pthread_cond_init(&b->claims.stolen_done, NULL);
    Claims *c = &b->claims;
    bool ok = b->work && b->bound && b->dest && (b->sums || !nsums) && b->root && b->stats && c->next && c->end &&
              c->spare_of && c->done && (c->spare || !nspare);
    /* member 0 also regroups whole meta-batches: temporaries for B levels */
    for (int i = 0; ok && i < members; i++)
        ok = rt_step_work_alloc(p, i == 0 ? max_batch : share, &b->work[i]);
    if (ok)
        ok = (b->team = rt_team_new(members)) != NULL;
    if (!ok) {
        rt_batch_free(b);
        return NULL;
    }
    return b;
}

/* Member i: the nodes of its tasks, then others' last tasks. */
static void member_job(void *ctx, int i)
{
    RtBatch *b = ctx;
    Leaves l = {&b->p, b->params, b->slice, b->members > 1 ? &b->claims : NULL, i};
    compute_nodes(&l, &b->work[i], 0, b->slice->B, b->bound[i], b->bound[i + 1], b->dest[i]);
    if (l.claims)
        steal(&l, &b->work[i]);
}

/* Member i's share [*from, *to) of n elements of `size` bytes: whole cache
 * lines but for the last. */
static void member_share(const RtBatch *b, int i, size_t n, size_t size, size_t *from, size_t *to)
{
    size_t line = ALIGN / size;
    *from = n * (size_t)i / (size_t)b->members / line * line;
    *to = i + 1 == b->members ? n : n * (size_t)(i + 1) / (size_t)b->members / line * line;
}

/* Member i's share of the elements of a node vector. */
static Parts share(const RtBatch *b, int i, int nparts, const int *bound, const double *sums)
{
    size_t v = rt_node_reals(&b->p), from, to;
    member_share(b, i, v, sizeof(double), &from, &to);
    return (Parts){nparts, bound, 0, sums, v, from, to - from};
}

/* Member i: its share of every node of the current call's tasks, from the
 * members' nodes (temporaries in member 0's stack, each member in its
 * share of them). */
static void regroup_job(void *ctx, int i)
{
    RtBatch *b = ctx;
    const RtSlice *s = b->slice;
    Parts c = share(b, i, b->members, b->bound, b->sums);
    regroup(&c, 0, s->B, s->first, s->first + s->count, b->out, b->work[0].stack);
}

/* Member i: its share of the mean of the parts' root (the loss: the last
 * member's). */
static void mean_job(void *ctx, int i)
{
    RtBatch *b = ctx;
    Parts c = share(b, i, b->nparts, b->part_bound, b->part_sums);
    const double *root = part_sum(&c, 0, b->B, b->root, b->work[0].stack);
    size_t to = c.from + c.len;
    mean_range(&b->p, root, b->B, b->grad, c.from, to < b->p.nreal ? to : b->p.nreal);
    if (to > b->p.nreal)
        b->loss = mean_loss(&b->p, root, b->B);
    for (size_t e = c.from > b->p.nreal + 1 ? c.from : b->p.nreal + 1; e < to; e++)
        b->stats[e - b->p.nreal - 1] = root[e] * (1.0 / b->B);
}

const double *rt_batch_stats(const RtBatch *b)
{
    return b->stats;
}

/* Member i: the optimiser's step on its share of the parameters. */
static void opt_job(void *ctx, int i)
{
    RtBatch *b = ctx;
    size_t from, to;
    member_share(b, i, b->p.nreal, rt_real_bytes(b->p.real), &from, &to);
    rt_opt_step_range(b->opt, b->p.real, b->p.nreal, from, to, b->opt_params, b->opt_grad, b->opt_state,
                      b->opt_t, b->opt_scale);
}

void rt_batch_nodes(RtBatch *b, const void *params, const RtSlice *s, double *out)
{
    if (s->count == 0)
        return;         /* no task, no node: out may be NULL */
    int n = b->members;
    size_t v = rt_node_reals(&b->p);
    b->slice = s;
    b->params = params;
    b->out = out;
    double *at = n > 1 ? b->sums : out;
    for (int i = 0; i <= n; i++)
        b->bound[i] = s->first + (int)((long)i * s->count / n);
    for (int i = 0; i < n; i++) {
        b->dest[i] = at;
        at += (size_t)rt_tree_count(s->B, b->bound[i], b->bound[i + 1]) * v;
        b->claims.next[i] = b->bound[i];
        b->claims.end[i] = b->bound[i + 1];
    }
    b->claims.first = s->first;
    b->claims.used = 0;
    memset(b->claims.done, 0, (size_t)s->count * sizeof(bool));
    rt_team_run(b->team, member_job, b);
    if (n > 1)
        rt_team_run(b->team, regroup_job, b);
}

double rt_batch_mean(RtBatch *b, int B, int nparts, const int *bound, const double *sums,
                     void *grad)
{
    b->B = B;
    b->nparts = nparts;
    b->part_bound = bound;
    b->part_sums = sums;
    b->grad = grad;
    rt_team_run(b->team, mean_job, b);
    return b->loss;
}

void rt_batch_opt_step(RtBatch *b, const RtOptimizer *o, void *params, const void *grad, void *state,
                       long t)
{
    b->opt = o;
    b->opt_params = params;
    b->opt_grad = grad;
    b->opt_state = state;
    b->opt_t = t;
    b->opt_scale = rt_opt_grad_scale(o, b->p.real, b->p.nreal, grad);
    rt_team_run(b->team, opt_job, b);
}
