/* A team of threads started once and reused: rt_team_run hands every member
 * the same job and waits until all are done, with one mutex and two
 * condition variables, so a job costs no allocation and no thread start. */
#include <pthread.h>
#include <stdlib.h>

#include "runtime.h"

typedef struct {
    RtTeam *team;
    int index;
} Member;

struct RtTeam {
    int n;                      /* members, the caller (member 0) included */
    pthread_t *thread;          /* members 1..n-1 */
    Member *member;
    int started;                /* threads running */
    pthread_mutex_t lock;
    pthread_cond_t go, done;
    unsigned long job;          /* counts the jobs handed out */
    int busy;                   /* members still running the current job */
    bool quit;
    void (*fn)(void *ctx, int member);
    void *ctx;
};

static void *member_main(void *arg)
{
    Member *m = arg;
    RtTeam *t = m->team;
    unsigned long seen = 0;
    pthread_mutex_lock(&t->lock);
    for (;;) {
        while (t->job == seen && !t->quit)
            pthread_cond_wait(&t->go, &t->lock);
        if (t->quit)
            break;
        seen = t->job;
        void (*fn)(void *, int) = t->fn;
        void *ctx = t->ctx;
        pthread_mutex_unlock(&t->lock);
        fn(ctx, m->index);
        pthread_mutex_lock(&t->lock);
        if (--t->busy == 0)
            pthread_cond_signal(&t->done);
    }
    pthread_mutex_unlock(&t->lock);
    return NULL;
}

RtTeam *rt_team_new(int threads)
{
    RtTeam *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->n = threads > 1 ? threads : 1;
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
    t->quit = true;
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
        t->busy = t->n - 1;
        t->job++;
        pthread_cond_broadcast(&t->go);
        pthread_mutex_unlock(&t->lock);
    }
    fn(ctx, 0);
    if (t->n > 1) {
        pthread_mutex_lock(&t->lock);
        while (t->busy > 0)
            pthread_cond_wait(&t->done, &t->lock);
        pthread_mutex_unlock(&t->lock);
    }
}
