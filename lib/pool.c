/*
 * pool.c -- a per-scheduler slab allocator for small fixed-size records.
 *
 * Every aj_job_wait and aj_job_close makes a waiter record that lives until
 * the job finishes.  A malloc and a free for each was the largest cost of a
 * wait (issue 5: the malloc pair was over a third of wait_ns), so waiters
 * come from slabs of AJ__SLAB_OBJS records: one allocation per slab, and an
 * object is handed out by popping a free list or bumping a pointer.
 *
 * Each object is preceded by a pointer to its slab, so a put needs neither
 * the pool nor a search.  Slabs with a free object are on pool->partial; a
 * full slab is on no list; a slab that becomes empty is kept if it is the
 * only spare, else freed, so an idle scheduler holds at most one spare slab
 * (plus the partial ones in use).
 *
 * Built with AddressSanitizer, the pool is a plain malloc/free per object, so
 * a use after free of a waiter is still caught.
 *
 * Invariant: slab->nused objects are out; slab is on pool->partial exactly
 * when it has a free object (nused < AJ__SLAB_OBJS).
 */
#include "aj-internal.h"

#if defined(__SANITIZE_ADDRESS__)
#define AJ__POOL_PASSTHROUGH 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define AJ__POOL_PASSTHROUGH 1
#endif
#endif

#define AJ__SLAB_OBJS 32u

/* The header in front of every object; the union keeps the object aligned
 * for anything. */
union aj__pool_hdr {
    struct aj__slab *slab;          /* out: its slab; free: the next free */
    struct aj__pool *pool;          /* pass-through mode: its pool */
    long double align_ld;
    void *align_p;
    uint64_t align_u64;
};

struct aj__slab {
    struct aj__q link;              /* pool->partial while it has room */
    struct aj__pool *pool;
    union aj__pool_hdr *free;       /* put-back objects; reuses the header */
    unsigned nused;                 /* objects out */
    unsigned nfresh;                /* objects never handed out yet */
    char *fresh;                    /* the next of those */
    union aj__pool_hdr objs[];      /* AJ__SLAB_OBJS x pool->stride */
};

void aj__pool_init(struct aj__pool *p, size_t size)
{
    size_t h = sizeof(union aj__pool_hdr);

    aj__q_init(&p->partial);
    p->spare = NULL;
    p->stride = h + (size + h - 1) / h * h;
    p->live = 0;
}

#ifdef AJ__POOL_PASSTHROUGH

void *aj__pool_get(struct aj__pool *p)
{
    union aj__pool_hdr *o = aj__malloc(p->stride);
    if (!o)
        return NULL;
    o->pool = p;
    p->live++;
    return o + 1;
}

void aj__pool_put(void *obj)
{
    union aj__pool_hdr *o;

    if (!obj)
        return;
    o = (union aj__pool_hdr *)obj - 1;
    o->pool->live--;
    aj__free(o);
}

void aj__pool_destroy(struct aj__pool *p)
{
    AJ__UNUSED(p);
}

#else

static struct aj__slab *slab_new(struct aj__pool *p)
{
    struct aj__slab *sl = aj__malloc(sizeof *sl + AJ__SLAB_OBJS * p->stride);
    if (!sl)
        return NULL;
    aj__q_init(&sl->link);
    sl->pool = p;
    sl->free = NULL;
    sl->nused = 0;
    sl->nfresh = AJ__SLAB_OBJS;
    sl->fresh = (char *)sl->objs;
    return sl;
}

void *aj__pool_get(struct aj__pool *p)
{
    struct aj__slab *sl;
    union aj__pool_hdr *o;
    struct aj__q *n = aj__q_first(&p->partial);

    if (n) {
        sl = aj__q_data(n, struct aj__slab, link);
    } else {
        if (p->spare) {
            sl = p->spare;
            p->spare = NULL;
        } else if (!(sl = slab_new(p))) {
            return NULL;
        }
        aj__q_insert_tail(&p->partial, &sl->link);
    }
    if (sl->free) {
        o = sl->free;
        sl->free = (union aj__pool_hdr *)(void *)o->slab;
    } else {
        o = (union aj__pool_hdr *)(void *)sl->fresh;
        sl->fresh += p->stride;
        sl->nfresh--;
    }
    o->slab = sl;
    if (++sl->nused == AJ__SLAB_OBJS)
        aj__q_remove(&sl->link);        /* full: off the partial list */
    p->live++;
    return o + 1;
}

void aj__pool_put(void *obj)
{
    union aj__pool_hdr *o;
    struct aj__slab *sl;
    struct aj__pool *p;

    if (!obj)
        return;
    o = (union aj__pool_hdr *)obj - 1;
    sl = o->slab;
    p = sl->pool;
    if (sl->nused-- == AJ__SLAB_OBJS)
        aj__q_insert_tail(&p->partial, &sl->link);  /* has room again */
    /* The free list threads through the headers (a NULL link ends it). */
    o->slab = (struct aj__slab *)(void *)sl->free;
    sl->free = o;
    p->live--;
    if (sl->nused == 0) {
        aj__q_remove(&sl->link);
        if (p->spare) {
            aj__free(sl);
        } else {
            sl->free = NULL;            /* start over as a fresh slab */
            sl->nfresh = AJ__SLAB_OBJS;
            sl->fresh = (char *)sl->objs;
            p->spare = sl;
        }
    }
}

/* Frees every slab.  Objects still out would be an internal bug: rather
 * than leave them dangling, their slabs are logged and left alone. */
void aj__pool_destroy(struct aj__pool *p)
{
    if (p->live) {
        aj_log(EVENT_LOG_ERR, "libaj: internal error: %zu pooled records still in use", p->live);
        return;
    }
    while (!aj__q_empty(&p->partial)) {
        struct aj__slab *sl = aj__q_data(p->partial.next, struct aj__slab, link);
        aj__q_remove(&sl->link);
        aj__free(sl);
    }
    aj__free(p->spare);
    p->spare = NULL;
}

#endif /* AJ__POOL_PASSTHROUGH */
