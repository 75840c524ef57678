/* Task families: tasks drawn by the runtime's generator and computed by
 * the family's compiled functions (frontend/family.c lowers them).
 *
 * A compiled function needs an arena of its own for each call that runs
 * at once, and its inputs need room: a source holds `callers` such
 * buffers and hands a free one to each call, under a lock, so that a
 * call allocates nothing.  Which buffer a call gets changes nothing it
 * computes: the data depend on (seed, task) alone. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>

#include "runtime.h"

enum { ALIGN = 64 };

typedef struct {
    void *reals;                /* the variables' values, then a set's draws */
    void *arena;
    const void **in;
} Buffers;

struct RtFamilySource {
    RtFamily f;
    Buffers *buf;
    int nbuf;
    int *idle;                  /* indices of the buffers no call holds */
    int nidle;
    pthread_mutex_t lock;
    pthread_cond_t freed;
};

/* Bytes of n reals, rounded up so that the next block starts aligned. */
static size_t block(const RtFamily *f, size_t n)
{
    size_t bytes = n * rt_real_bytes(f->real);
    return (bytes + ALIGN - 1) / ALIGN * ALIGN;
}

static void buffers_free(Buffers *b)
{
    free(b->reals);
    free(b->arena);
    free(b->in);
}

static bool buffers_alloc(const RtFamily *f, Buffers *b)
{
    size_t vars = 0, draws = 0, arena = 0;
    int inputs = 0;
    for (int i = 0; i < f->nvar; i++)
        vars += block(f, f->var[i].n);
    for (int s = 0; s < 2; s++) {
        size_t n = 0;
        for (int i = 0; i < f->set[s].ndraw; i++)
            n += block(f, f->set[s].draw[i].n);
        draws = n > draws ? n : draws;
        arena = f->set[s].fn.arena_bytes > arena ? f->set[s].fn.arena_bytes : arena;
        inputs = f->set[s].ndraw > inputs ? f->set[s].ndraw : inputs;
    }
    *b = (Buffers){rt_alloc_zeroed(vars + draws, 1), rt_alloc_zeroed(arena, 1),
                   calloc((size_t)(f->nvar + inputs + 1), sizeof *b->in)};
    if (b->reals && b->arena && b->in)
        return true;
    buffers_free(b);
    return false;
}

RtFamilySource *rt_family_new(const RtFamily *f, int callers)
{
    RtFamilySource *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->f = *f;
    s->nbuf = callers > 1 ? callers : 1;
    s->buf = calloc((size_t)s->nbuf, sizeof *s->buf);
    s->idle = calloc((size_t)s->nbuf, sizeof *s->idle);
    bool ok = s->buf && s->idle && pthread_mutex_init(&s->lock, NULL) == 0;
    if (ok && pthread_cond_init(&s->freed, NULL) != 0) {
        pthread_mutex_destroy(&s->lock);
        ok = false;
    }
    if (!ok) {
        free(s->buf);
        free(s->idle);
        free(s);
        return NULL;
    }
    for (; s->nidle < s->nbuf; s->nidle++) {
        if (!buffers_alloc(f, &s->buf[s->nidle])) {
            rt_family_free(s);
            return NULL;
        }
        s->idle[s->nidle] = s->nidle;
    }
    return s;
}

void rt_family_free(RtFamilySource *s)
{
    if (!s)
        return;
    for (int i = 0; i < s->nidle; i++)
        buffers_free(&s->buf[s->idle[i]]);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->freed);
    free(s->buf);
    free(s->idle);
    free(s);
}

/* n values of d into out, in the real type. */
static void draw(RtRng *r, const RtDraw *d, RtReal real, void *out)
{
    for (size_t i = 0; i < d->n; i++) {
        double v = d->kind == RT_DRAW_UNIFORM ? rt_rng_uniform(r, d->a, d->b) : d->a + d->b * rt_rng_normal(r);
        if (real == RT_F64) {
            ((double *)out)[i] = v;
            continue;
        }
        float x = (float)v;
        if (d->kind == RT_DRAW_UNIFORM && (double)x >= d->b)
            x = nextafterf(x, -INFINITY);   /* v < b, so the float below x is at most v */
        ((float *)out)[i] = x;
    }
}

void rt_family_sample(const void *ctx, uint64_t seed, uint64_t task,
                      void *sx, void *sy, void *qx, void *qy)
{
    RtFamilySource *s = (RtFamilySource *)ctx;     /* the lock is the only state a call changes */
    const RtFamily *f = &s->f;
    pthread_mutex_lock(&s->lock);
    while (s->nidle == 0)
        pthread_cond_wait(&s->freed, &s->lock);
    int k = s->idle[--s->nidle];
    pthread_mutex_unlock(&s->lock);

    Buffers *b = &s->buf[k];
    RtRng r;
    rt_rng_stream(&r, seed, task);
    char *at = b->reals;
    for (int i = 0; i < f->nvar; i++) {
        b->in[i] = at;
        draw(&r, &f->var[i], f->real, at);
        at += block(f, f->var[i].n);
    }
    char *draws = at;
    void *out[2][2] = {{sx, sy}, {qx, qy}};
    for (int set = 0; set < 2; set++) {
        const RtFamilySet *fs = &f->set[set];
        at = draws;
        for (int i = 0; i < fs->ndraw; i++) {
            b->in[f->nvar + i] = at;
            draw(&r, &fs->draw[i], f->real, at);
            at += block(f, fs->draw[i].n);
        }
        fs->fn.fn(b->in, out[set], b->arena);
    }

    pthread_mutex_lock(&s->lock);
    s->idle[s->nidle++] = k;
    pthread_cond_signal(&s->freed);
    pthread_mutex_unlock(&s->lock);
}
