/* Arena offsets: pack spans of bytes, each live from one node to another,
 * so that no two live at one node share a byte (plan.c makes the spans:
 * the buffers and the scratch). */
#include "plan_impl.h"

#include <stdlib.h>
#include <string.h>

/* Largest first; on a tie the one live first, then the longer lived, then
 * the one made first (the spans are in one array). */
static int span_by_size(const void *pa, const void *pb)
{
    const BeSpan *a = *(const BeSpan *const *)pa, *b = *(const BeSpan *const *)pb;
    if (a->size != b->size)
        return a->size > b->size ? -1 : 1;
    if (a->first != b->first)
        return a->first < b->first ? -1 : 1;
    if (a->last != b->last)
        return a->last > b->last ? -1 : 1;
    return a < b ? -1 : a > b;
}

/* In node order: the one live first, then the one made first. */
static int span_by_node(const void *pa, const void *pb)
{
    const BeSpan *a = *(const BeSpan *const *)pa, *b = *(const BeSpan *const *)pb;
    if (a->first != b->first)
        return a->first < b->first ? -1 : 1;
    return a < b ? -1 : a > b;
}

/* Bytes [off, end) that a placed span holds from node first to last. */
typedef struct {
    int64_t off, end;
    int first, last;
} Held;

static int held_by_offset(const void *pa, const void *pb)
{
    const Held *a = pa, *b = pb;
    return a->off < b->off ? -1 : a->off > b->off;
}

/* How many spans are live at one node with each span i: at[i + 1] - at[i];
 * and, when `with` is not NULL, which: with[at[i] .. at[i + 1]). */
typedef struct {
    size_t *at;
    int *with;
} Overlaps;

static int int_cmp(const void *pa, const void *pb)
{
    int a = *(const int *)pa, b = *(const int *)pb;
    return a < b ? -1 : a > b;
}

/* The spans of at most `below`, in a sorted array of n. */
static int count_below(const int *v, int n, int below)
{
    int lo = 0, hi = n;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (v[mid] <= below)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* The counts from the sorted first and last nodes: those live with span i
 * start by its last node and end from its first on.  Which they are,
 * from a sweep by first node, only where sorting each span's costs less
 * than passes over all of them. */
static Overlaps overlaps(const BeSpan *sp, int n, Arena *arena)
{
    Overlaps o = {arena_alloc(arena, sizeof(size_t) * (size_t)(n + 1)), NULL};
    int *first = arena_alloc(arena, sizeof(int) * (size_t)(n + 1));
    int *last = arena_alloc(arena, sizeof(int) * (size_t)(n + 1));
    for (int i = 0; i < n; i++)
        first[i] = sp[i].first, last[i] = sp[i].last;
    qsort(first, (size_t)n, sizeof *first, int_cmp);
    qsort(last, (size_t)n, sizeof *last, int_cmp);
    int64_t cost = 0;
    o.at[0] = 0;
    for (int i = 0; i < n; i++) {
        int64_t d = count_below(first, n, sp[i].last) - count_below(last, n, sp[i].first - 1) - 1, log2 = 1;
        while ((int64_t)1 << log2 < d)
            log2++;
        cost += 4 * d * log2;
        o.at[i + 1] = o.at[i] + (size_t)d;
    }
    if (cost >= (int64_t)n * n / 2)
        return o;
    const BeSpan **order = arena_alloc(arena, sizeof(BeSpan *) * (size_t)(n + 1));
    for (int i = 0; i < n; i++)
        order[i] = &sp[i];
    qsort(order, (size_t)n, sizeof *order, span_by_node);
    size_t *fill = arena_alloc(arena, sizeof(size_t) * (size_t)(n + 1));
    int *live = arena_alloc(arena, sizeof(int) * (size_t)(n + 1));
    memcpy(fill, o.at, sizeof(size_t) * (size_t)n);
    o.with = arena_alloc(arena, sizeof(int) * (o.at[n] + 1));
    int nlive = 0;
    for (int k = 0; k < n; k++) {
        int s = (int)(order[k] - sp), w = 0;
        for (int j = 0; j < nlive; j++) {
            int q = live[j];
            if (sp[q].last < sp[s].first)
                continue;
            live[w++] = q;
            o.with[fill[s]++] = q;
            o.with[fill[q]++] = s;
        }
        nlive = w;
        live[nlive++] = s;
    }
    return o;
}

/* The offset for span s among the spans h[0 .. n) placed (by offset; with
 * `all`, only those live with s count): the gap between them that fits s
 * (the lowest with `first_fit`, else the tightest, the space between them
 * and `top` included), else above them all. */
static int64_t gap_for(const BeSpan *s, const Held *h, int n, bool all, bool first_fit, int64_t top)
{
    int64_t at = 0, best = -1, best_gap = 0;
    for (int j = 0; j < n; j++) {
        if (all && (h[j].last < s->first || h[j].first > s->last))
            continue;
        if (h[j].off - at >= s->size && (best < 0 || h[j].off - at < best_gap)) {
            best = at;
            best_gap = h[j].off - at;
            if (first_fit || best_gap == s->size)
                return best;
        }
        if (h[j].end > at)
            at = h[j].end;
    }
    if (best < 0 || (!first_fit && top - at >= s->size && top - at < best_gap))
        return at;
    return best;
}

/* Give the spans offsets in the given order (gap_for); return the bytes
 * they need.  The spans placed are kept by offset and passed over for
 * each span, or (where that costs less) those live with it are sorted by
 * offset.  With `node_order` (the spans come by first node) a span dead
 * before one is dead for all the rest, and is dropped. */
static int64_t place_in_order(BeSpan *sp, const BeSpan *const *order, int n, bool first_fit, bool node_order,
                              const Overlaps *o, bool *is_placed, Held *placed, Held *held)
{
    for (int i = 0; i < n; i++)
        is_placed[i] = false;
    int64_t top = 0;
    int np = 0;
    for (int i = 0; i < n; i++) {
        int si = (int)(order[i] - sp);
        BeSpan *s = &sp[si];
        int64_t d = (int64_t)(o->at[si + 1] - o->at[si]), log2 = 1;
        while ((int64_t)1 << log2 < d)
            log2++;
        if (node_order) {
            int w = 0;
            for (int j = 0; j < np; j++)
                if (placed[j].last >= s->first)
                    placed[w++] = placed[j];
            np = w;
        }
        if (o->with && !node_order && 4 * d * log2 < np) {
            int nheld = 0;
            for (size_t e = o->at[si]; e < o->at[si + 1]; e++) {
                const BeSpan *q = &sp[o->with[e]];
                if (is_placed[o->with[e]])
                    held[nheld++] = (Held){q->off, q->off + q->size, q->first, q->last};
            }
            qsort(held, (size_t)nheld, sizeof *held, held_by_offset);
            s->off = gap_for(s, held, nheld, false, first_fit, top);
        } else {
            s->off = gap_for(s, placed, np, true, first_fit, top);
        }
        if (s->off + s->size > top)
            top = s->off + s->size;
        is_placed[si] = true;
        int lo = 0, hi = np;
        while (lo < hi) {
            int mid = (lo + hi) / 2;
            if (placed[mid].off <= s->off)
                lo = mid + 1;
            else
                hi = mid;
        }
        memmove(&placed[lo + 1], &placed[lo], sizeof(Held) * (size_t)(np - lo));
        placed[lo] = (Held){s->off, s->off + s->size, s->first, s->last};
        np++;
    }
    return top;
}

/* Three orders are tried, and the one needing the fewest bytes kept (the
 * first on a tie): the largest first, in the lowest gap that fits, then in
 * the tightest ("greedy by size", as TensorFlow Lite's arena planner
 * does); then in node order, in the tightest (a linear scan over a
 * best-fit free list).  Time: per span, a pass over those placed or a
 * sort of those live with it, whichever is less. */
int64_t be_place_spans(BeSpan *sp, int n, Arena *arena)
{
    Overlaps o = overlaps(sp, n, arena);
    const BeSpan **order = arena_alloc(arena, sizeof(BeSpan *) * (size_t)(n + 1));
    bool *is_placed = arena_alloc(arena, sizeof(bool) * (size_t)(n + 1));
    Held *placed = arena_alloc(arena, sizeof(Held) * (size_t)(n + 1));
    Held *held = arena_alloc(arena, sizeof(Held) * (size_t)(n + 1));
    int64_t *off = arena_alloc(arena, sizeof(int64_t) * (size_t)(n + 1));    /* the best's */
    int64_t bytes = 0;
    for (int way = 0; way < 3; way++) {
        for (int i = 0; i < n; i++)
            order[i] = &sp[i];
        qsort(order, (size_t)n, sizeof *order, way < 2 ? span_by_size : span_by_node);
        int64_t top = place_in_order(sp, order, n, way == 0, way == 2, &o, is_placed, placed, held);
        if (way == 0 || top < bytes) {
            bytes = top;
            for (int i = 0; i < n; i++)
                off[i] = sp[i].off;
        }
    }
    for (int i = 0; i < n; i++)
        sp[i].off = off[i];
    return bytes;
}
