/* A team of threads started once and reused: rt_team_run hands every member
 * the same job and waits until all are done, with no allocation and no
 * thread start.  Waiting, a member (or the caller) first watches the job
 * counter (or the count of busy members) for up to SPIN_NS, then sleeps on
 * a condition variable.  Waking a sleeping thread costs 100-400 us on a
 * virtual machine -- as much as a few percent of an Omniglot meta-step,
 * which hands the team three jobs -- while between a step's jobs a member
 * waits for at most about one task.  With more members than the CPUs the
 * process may run on, no one watches: a watcher would hold the CPU another
 * member needs. */
#define _GNU_SOURCE             /* sched_getaffinity */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "runtime.h"

enum { SPIN_NS = 2000000 };     /* about one task of the Omniglot MLP */

typedef struct {
    RtTeam *team;
    int index;
} Member;

struct RtTeam {
    int n;                      /* members, the caller (member 0) included */
    bool spin;                  /* whether waiters watch before sleeping */
    pthread_t *thread;          /* members 1..n-1 */
    Member *member;
    int started;                /* threads running */
    pthread_mutex_t lock;
    pthread_cond_t go, done;
    atomic_ulong job;           /* counts the jobs handed out (written under lock) */
    atomic_int busy;            /* members still running the current job */
    atomic_bool quit;
    void (*fn)(void *ctx, int member);  /* the job: written before `job` moves */
    void *ctx;
};

/* The CPUs this process may run on (taskset, cpusets), or failing that
 * the machine's. */
static long usable_cpus(void)
{
#ifdef __linux__
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0)
        return CPU_COUNT(&set);
#endif
    return sysconf(_SC_NPROCESSORS_ONLN);
}

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Whether a new job (or quit) is there for a member that has seen `seen`. */
static bool job_ready(RtTeam *t, unsigned long seen)
{
    return atomic_load_explicit(&t->job, memory_order_acquire) != seen ||
           atomic_load_explicit(&t->quit, memory_order_acquire);
}

static bool all_done(RtTeam *t)
{
    return atomic_load_explicit(&t->busy, memory_order_acquire) == 0;
}

/* Watches ready(t, seen) for up to SPIN_NS when the team spins; whether it
 * came true. */
static bool watch(RtTeam *t, bool (*ready)(RtTeam *, unsigned long), unsigned long seen)
{
    if (!t->spin)
        return ready(t, seen);
    long long end = now_ns() + SPIN_NS;
    for (;;) {
        for (int i = 0; i < 256; i++)
            if (ready(t, seen))
                return true;
        if (now_ns() > end)
            return false;
    }
}

static bool done_ready(RtTeam *t, unsigned long unused)
{
    (void)unused;
    return all_done(t);
}

static void *member_main(void *arg)
{
    Member *m = arg;
    RtTeam *t = m->team;
    unsigned long seen = 0;
    for (;;) {
        if (!watch(t, job_ready, seen)) {
            pthread_mutex_lock(&t->lock);
            while (!job_ready(t, seen))
                pthread_cond_wait(&t->go, &t->lock);
            pthread_mutex_unlock(&t->lock);
        }
        if (atomic_load_explicit(&t->quit, memory_order_acquire))
            return NULL;
        seen = atomic_load_explicit(&t->job, memory_order_acquire);
        t->fn(t->ctx, m->index);
        if (atomic_fetch_sub_explicit(&t->busy, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&t->lock);       /* the caller may be asleep */
            pthread_cond_signal(&t->done);
            pthread_mutex_unlock(&t->lock);
        }
    }
}

RtTeam *rt_team_new(int threads)
{
    RtTeam *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->n = threads > 1 ? threads : 1;
    long cpus = usable_cpus();
    t->spin = cpus > 0 && t->n <= cpus;
    t->thread = calloc((size_t)t->n, sizeof *t->thread);
    t->member = calloc((size_t)t->n, sizeof *t->member);
    if (!t->thread || !t->member) {
        free(t->thread);
        free(t->member);
        free(t);
        return NULL;
    }
    pthread_mutex_init(&t->lock, NULL);
    pthread_cond_init(&t->go, NULL);
    pthread_cond_init(&t->done, NULL);
    atomic_init(&t->job, 0);
    atomic_init(&t->busy, 0);
    atomic_init(&t->quit, false);
    for (int i = 1; i < t->n; i++) {
        t->member[i] = (Member){t, i};
        if (pthread_create(&t->thread[i], NULL, member_main, &t->member[i]) != 0) {
            rt_team_free(t);
            return NULL;
        }
        t->started = i;
    }
    return t;
}

void rt_team_free(RtTeam *t)
{
    if (!t)
        return;
    pthread_mutex_lock(&t->lock);
    atomic_store_explicit(&t->quit, true, memory_order_release);
    pthread_cond_broadcast(&t->go);
    pthread_mutex_unlock(&t->lock);
    for (int i = 1; i <= t->started; i++)
        pthread_join(t->thread[i], NULL);
    pthread_mutex_destroy(&t->lock);
    pthread_cond_destroy(&t->go);
    pthread_cond_destroy(&t->done);
    free(t->thread);
    free(t->member);
    free(t);
}

int rt_team_size(const RtTeam *t)
{
    return t->n;
}

void rt_team_run(RtTeam *t, void (*fn)(void *ctx, int member), void *ctx)
{
    if (t->n > 1) {
        pthread_mutex_lock(&t->lock);
        t->fn = fn;
        t->ctx = ctx;
        atomic_store_explicit(&t->busy, t->n - 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&t->job, 1, memory_order_release);
        pthread_cond_broadcast(&t->go);
        pthread_mutex_unlock(&t->lock);
    }
    fn(ctx, 0);
    if (t->n > 1 && !watch(t, done_ready, 0)) {
        pthread_mutex_lock(&t->lock);
        while (!all_done(t))
            pthread_cond_wait(&t->done, &t->lock);
        pthread_mutex_unlock(&t->lock);
    }
}
