/* Runtime tests, part 3: the meta-batch's reduction tree and the threads
 * that share its tasks (runtime/batch.c, runtime/team.c).
 *
 * The stand-in meta-step hands back each task's data as its gradient: values
 * of wildly different magnitudes, so that any change in the order of the
 * additions changes the bits of the sum. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime.h"

#include "check.h"

enum { N = 7, MAX_B = 40 };
static const RtParam PARAMS[] = {{"a", 0, 4, {0}}, {"b", 4, 3, {0}}};

/* in: a, b, sx, sy, qx, qy   out: loss = qx[0], d/da = sx[0..4), d/db = sx[4..7) */
static void meta_step_f64(const void *const *in, void *const *out, void *arena)
{
    const double *sx = in[2], *qx = in[4];
    (void)arena;
    memcpy(out[1], sx, 4 * sizeof(double));
    memcpy(out[2], sx + 4, 3 * sizeof(double));
    *(double *)out[0] = qx[0];
}

static void meta_step_f32(const void *const *in, void *const *out, void *arena)
{
    const float *sx = in[2], *qx = in[4];
    (void)arena;
    memcpy(out[1], sx, 4 * sizeof(float));
    memcpy(out[2], sx + 4, 3 * sizeof(float));
    *(float *)out[0] = qx[0];
}

static RtProgram program(RtReal real)
{
    size_t rb = rt_real_bytes(real);
    return (RtProgram){
        .real = real, .nreal = N, .param = PARAMS, .nparam = 2,
        .sx_bytes = N * rb, .sy_bytes = rb, .qx_bytes = rb, .qy_bytes = rb,
        .meta_step = {real == RT_F32 ? meta_step_f32 : meta_step_f64, 64},
        .meta_batch = 1,
    };
}

/* MAX_B tasks of values m * 2^e, e in [-30, 30], either sign. */
static double data[MAX_B][N + 1];
static float data32[MAX_B][N + 1];
static double zero;
static RtTask tasks[MAX_B], tasks32[MAX_B];

static void make_tasks(void)
{
    RtRng r;
    rt_rng_seed(&r, 5);
    for (int t = 0; t < MAX_B; t++) {
        for (int i = 0; i <= N; i++) {
            double m = rt_rng_uniform(&r, -1.0, 1.0);
            data[t][i] = ldexp(m, (int)rt_rng_below(&r, 61) - 30);
            data32[t][i] = (float)data[t][i];
        }
        tasks[t] = (RtTask){data[t], &zero, &data[t][N], &zero};
        tasks32[t] = (RtTask){data32[t], &zero, &data32[t][N], &zero};
    }
}

/* The tree written out plainly: node [lo, hi) of column i. */
static double tree_sum(bool f32, int lo, int hi, int i)
{
    if (hi - lo == 1)
        return f32 ? (double)data32[lo][i] : data[lo][i];
    int mid = lo + (hi - lo) / 2;
    return tree_sum(f32, lo, mid, i) + tree_sum(f32, mid, hi, i);
}

/* --- the tree's shape --- */

static void test_tree_shape(void)
{
    EXPECT(rt_tree_depth(1) == 0 && rt_tree_depth(2) == 1 && rt_tree_depth(3) == 2);
    EXPECT(rt_tree_depth(32) == 5 && rt_tree_depth(33) == 6);
    EXPECT(rt_tree_count(8, 0, 8) == 1 && rt_tree_count(8, 0, 4) == 1 && rt_tree_count(8, 1, 8) == 3);
    EXPECT(rt_tree_count(5, 2, 2) == 0 && rt_tree_count(0, 0, 1) == 0);
    /* [0, 25) splits into [0, 12) and [12, 25): tasks [1, 13) are the nodes
     * [1, 3) [3, 6) [6, 12) [12, 13) */
    EXPECT(rt_tree_count(25, 1, 13) == 4);
    bool within = true;
    for (int B = 1; B <= 200; B++)
        for (int a = 0; a < B; a++)
            for (int b = a + 1; b <= B; b++)
                within &= rt_tree_count(B, a, b) <= rt_tree_capacity(b - a);
    CHECK(within, "every range of trees up to 200 tasks has at most rt_tree_capacity nodes");
}

/* --- sums --- */

/* rt_meta_grad follows the tree, in both element types. */
static void test_meta_grad_tree(void)
{
    const int sizes[] = {1, 2, 3, 7, 25, 32, MAX_B};
    for (int f32 = 0; f32 < 2; f32++) {
        RtProgram p = program(f32 ? RT_F32 : RT_F64);
        RtStepWork w;
        EXPECT(rt_step_work_alloc(&p, MAX_B, &w));
        double theta[N] = {0}, grad[N];
        bool same = true;
        for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
            int B = sizes[k];
            double loss = rt_meta_grad(&p, &w, theta, B, f32 ? tasks32 : tasks, grad);
            for (int i = 0; i < N; i++) {
                double want = tree_sum(f32, 0, B, i) * (1.0 / B);
                same &= f32 ? ((float *)grad)[i] == (float)want : grad[i] == want;
            }
            same &= loss == tree_sum(f32, 0, B, N) * (1.0 / B);
        }
        CHECK(same, "rt_meta_grad (%s) sums along the tree", f32 ? "f32" : "f64");
        rt_step_work_free(&w);
    }
}

/* The mean of B tasks split into nparts parts at bound, each part's nodes
 * computed by a batch of `threads` threads. */
static double split_mean(RtBatch *b, int B, int nparts, const int *bound, const RtTask *t, void *grad)
{
    static double sums[MAX_B * 2 * (N + 1)], theta[N];
    double *at = sums;
    for (int k = 0; k < nparts; k++) {
        RtSlice s = {.B = B, .first = bound[k], .count = bound[k + 1] - bound[k], .task = t + bound[k]};
        rt_batch_nodes(b, theta, &s, at);
        at += rt_tree_count(B, bound[k], bound[k + 1]) * (N + 1);
    }
    return rt_batch_mean(b, B, nparts, bound, sums, grad);
}

/* Any split among threads and parts gives the tree's bits. */
static void test_batch_splits(void)
{
    const int sizes[] = {1, 2, 5, 25, 32, MAX_B};
    for (int f32 = 0; f32 < 2; f32++) {
        RtProgram p = program(f32 ? RT_F32 : RT_F64);
        const RtTask *t = f32 ? tasks32 : tasks;
        bool same = true;
        for (int threads = 1; threads <= 4; threads++) {
            RtBatch *b = rt_batch_new(&p, MAX_B, threads);
            EXPECT(b != NULL);
            if (!b)
                continue;
            for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
                int B = sizes[k];
                for (int nparts = 1; nparts <= 5; nparts++) {
                    int bound[6];
                    for (int j = 0; j <= nparts; j++)
                        bound[j] = (int)((long)j * B / nparts);
                    double grad[N];
                    double loss = split_mean(b, B, nparts, bound, t, grad);
                    for (int i = 0; i < N; i++) {
                        double want = tree_sum(f32, 0, B, i) * (1.0 / B);
                        same &= f32 ? ((float *)grad)[i] == (float)want : grad[i] == want;
                    }
                    same &= loss == tree_sum(f32, 0, B, N) * (1.0 / B);
                }
            }
            /* uneven parts, an empty one among them */
            int bound[] = {0, 3, 3, 17, 40};
            double grad[N];
            split_mean(b, MAX_B, 4, bound, t, grad);
            for (int i = 0; i < N; i++) {
                double want = tree_sum(f32, 0, MAX_B, i) * (1.0 / MAX_B);
                same &= f32 ? ((float *)grad)[i] == (float)want : grad[i] == want;
            }
            rt_batch_free(b);
        }
        CHECK(same, "%s: 1-4 threads and 1-5 parts give the tree's bits", f32 ? "f32" : "f64");
    }
    /* Summing in task order instead would give other bits here: the test can tell. */
    double seq = 0;
    for (int t = 0; t < MAX_B; t++)
        seq += data[t][0];
    EXPECT(seq != tree_sum(false, 0, MAX_B, 0));
}

/* Sizes past the runtime's limits are refused before anything is allocated
 * and without int overflow (max_batch + members - 1 overflowed for
 * max_batch = INT_MAX); the largest meta-batch allowed is accepted, on
 * threads too, and sums along the tree. */
static void test_batch_limits(void)
{
    RtProgram p = program(RT_F64);
    EXPECT(rt_batch_new(&p, INT_MAX, 1) == NULL);
    EXPECT(rt_batch_new(&p, INT_MAX, 3) == NULL);
    EXPECT(rt_batch_new(&p, RT_MAX_BATCH + 1, 1) == NULL);
    EXPECT(rt_batch_new(&p, 0, 1) == NULL && rt_batch_new(&p, INT_MIN, 1) == NULL);
    EXPECT(rt_batch_new(&p, 1, RT_MAX_THREADS + 1) == NULL && rt_batch_new(&p, 1, INT_MAX) == NULL);
    RtBatch *b = rt_batch_new(&p, RT_MAX_BATCH, 3);
    EXPECT(b != NULL);
    if (!b)
        return;
    int bound[] = {0, MAX_B};
    double grad[N];
    double loss = split_mean(b, MAX_B, 1, bound, tasks, grad);
    bool same = loss == tree_sum(false, 0, MAX_B, N) * (1.0 / MAX_B);
    for (int i = 0; i < N; i++)
        same &= grad[i] == tree_sum(false, 0, MAX_B, i) * (1.0 / MAX_B);
    CHECK(same, "a batch for RT_MAX_BATCH tasks on 3 threads sums along the tree");
    rt_batch_free(b);
}

/* A meta-step that is slow for the first half of the tasks and notes which
 * member's arena computed each: sy holds the task's index. */
enum { STEAL_B = 32 };
static void *computed_in[STEAL_B];

static void meta_step_slow(const void *const *in, void *const *out, void *arena)
{
    int t = (int)*(const double *)in[3];
    if (t < STEAL_B / 2)
        nanosleep(&(struct timespec){0, 5000000}, NULL);
    computed_in[t] = arena;
    meta_step_f64(in, out, arena);
}

/* A member with no tasks left computes another's last ones, and the sums
 * keep the tree's bits. */
static void test_batch_steals(void)
{
    RtProgram p = program(RT_F64);
    p.meta_step.fn = meta_step_slow;
    static double index[STEAL_B];
    RtTask t[STEAL_B];
    for (int i = 0; i < STEAL_B; i++) {
        index[i] = i;
        t[i] = (RtTask){data[i], &index[i], &data[i][N], &zero};
    }
    RtBatch *b = rt_batch_new(&p, STEAL_B, 2);
    EXPECT(b != NULL);
    if (!b)
        return;
    bool same = true, stolen = false, bounded = true;
    /* member 1's tasks take no time and member 0's 80 ms: unless member 1
     * starts that late, it takes member 0's last tasks */
    for (int round = 0; round < 5 && !stolen; round++) {
        double grad[N];
        int bound[] = {0, STEAL_B};
        double loss = split_mean(b, STEAL_B, 1, bound, t, grad);
        for (int i = 0; i < N; i++)
            same &= grad[i] == tree_sum(false, 0, STEAL_B, i) * (1.0 / STEAL_B);
        same &= loss == tree_sum(false, 0, STEAL_B, N) * (1.0 / STEAL_B);
        stolen = computed_in[STEAL_B / 2 - 1] != computed_in[0];
        for (int i = 1; i < STEAL_B / 2 - STEAL_B / 8; i++)
            bounded &= computed_in[i] == computed_in[0];
    }
    CHECK(stolen, "a member with no tasks left computes another's last task");
    CHECK(bounded, "it takes at most a quarter of the other's tasks (its spare buffers)");
    CHECK(same, "tasks computed by another member give the tree's bits");
    rt_batch_free(b);
}

/* --- the optimiser's step, shared among threads --- */

/* rt_batch_opt_step with 1-4 threads is rt_opt_step, bit for bit: Adam and
 * SGD, both element types, over more parameters than one cache line each
 * and a count that does not divide into lines. */
static void test_batch_opt_step(void)
{
    enum { NP = 1003, STEPS = 3 };
    static double p0[NP], g[NP], want[NP], got[NP], sw[2 * NP], sg[2 * NP];
    RtRng r;
    rt_rng_seed(&r, 9);
    for (int i = 0; i < NP; i++) {
        p0[i] = rt_rng_uniform(&r, -1.0, 1.0);
        g[i] = ldexp(rt_rng_uniform(&r, -1.0, 1.0), (int)rt_rng_below(&r, 21) - 10);
    }
    const RtOptimizer opts[] = {{.kind = RT_ADAM, .lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8},
                                {.kind = RT_SGD, .lr = 0.1}};
    bool same = true;
    for (int f32 = 0; f32 < 2; f32++) {
        RtProgram p = program(f32 ? RT_F32 : RT_F64);
        p.nreal = NP;
        size_t rb = rt_real_bytes(p.real);
        static float gf[NP];
        for (int i = 0; i < NP; i++)
            gf[i] = (float)g[i];
        const void *grad = f32 ? (const void *)gf : g;
        for (int k = 0; k < 2; k++) {
            for (int threads = 1; threads <= 4; threads++) {
                RtBatch *b = rt_batch_new(&p, 1, threads);
                EXPECT(b != NULL);
                if (!b)
                    continue;
                for (int i = 0; i < NP; i++) {
                    if (f32)
                        ((float *)want)[i] = ((float *)got)[i] = (float)p0[i];
                    else
                        want[i] = got[i] = p0[i];
                }
                memset(sw, 0, sizeof sw);
                memset(sg, 0, sizeof sg);
                for (long t = 1; t <= STEPS; t++) {
                    rt_opt_step(&opts[k], p.real, NP, want, grad, sw, t);
                    rt_batch_opt_step(b, &opts[k], got, grad, sg, t);
                }
                same &= memcmp(want, got, NP * rb) == 0 && memcmp(sw, sg, 2 * NP * rb) == 0;
                rt_batch_free(b);
            }
        }
    }
    EXPECT(same);
}

/* --- the team --- */

static void count_member(void *ctx, int member)
{
    int *hits = ctx;
    hits[member]++;
}

/* Every member runs every job once, whether the jobs come back to back (the
 * members still watching, when the team has a CPU each) or 3 ms apart (the
 * members asleep by then). */
static void test_team(void)
{
    for (int n = 2; n <= 3; n++) {
        RtTeam *t = rt_team_new(n);
        EXPECT(t && rt_team_size(t) == n);
        if (!t)
            return;
        int hits[3] = {0};
        for (int k = 0; k < 1000; k++) {
            if (k % 100 == 0)
                nanosleep(&(struct timespec){0, 3000000}, NULL);
            rt_team_run(t, count_member, hits);
        }
        EXPECT(hits[0] == 1000 && hits[1] == 1000 && hits[n - 1] == 1000);
        rt_team_free(t);
    }
    RtTeam *t = rt_team_new(0);
    EXPECT(t && rt_team_size(t) == 1);
    rt_team_free(t);
}

int main(void)
{
    make_tasks();
    test_tree_shape();
    test_meta_grad_tree();
    test_batch_splits();
    test_batch_limits();
    test_batch_steals();
    test_batch_opt_step();
    test_team();
    return check_summary();
}
