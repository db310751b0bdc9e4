/*
 * pool.c -- job memory: slabs of equal-sized objects, one pool per job size.
 *
 * A scheduler spawns and releases jobs of two sizes (with or without a
 * waiter slot, job.c) by the million.  Through malloc each job is a chunk
 * of its own: glibc serves a plain job from a cheap LIFO bin, but a job
 * with a waiter slot (168 bytes) falls in a class it coalesces on every
 * free, and a million freed jobs of either size leave the heap to whatever
 * allocates next.  A pool carves jobs from slabs -- one allocation through
 * the hook (alloc.c) for up to AJ__SLAB_MAX jobs, laid out back to back in
 * spawn order -- and keeps freed jobs on their slab's free list.
 *
 *  - A slab holds AJ__SLAB_MIN objects at first; each new slab of a pool
 *    holds twice as many as the last, up to AJ__SLAB_MAX, so a scheduler
 *    that never has many jobs keeps a small one and a burst takes few
 *    allocations.
 *  - A slab with room is on pool->partial (the one last given room first,
 *    so freed memory is reused while warm), a slab without on pool->full.
 *  - A slab that empties is freed unless it is the pool's only slab with
 *    room: one spare is kept, so a scheduler that runs one job at a time
 *    does not allocate and free a slab per job.
 *  - A job finds its slab from its index in it and the object size, both
 *    known without the scheduler, so a job released after aj_scheduler_free
 *    (a reference was still held) still returns to its slab: the pool's
 *    destruction frees its empty slabs and orphans the others, and an
 *    orphaned slab is freed with its last object.
 *  - Fresh objects are handed out in address order and prefetched a few
 *    ahead: spawning a burst writes memory nothing has touched yet.
 *
 * Freed objects are poisoned for AddressSanitizer and marked inaccessible
 * for valgrind, so a use after release is still caught until the object is
 * reused.  Not thread-safe: a pool belongs to one scheduler, used from its
 * loop's thread.
 */
#include "aj-internal.h"

#include <stddef.h>

#if defined(__SANITIZE_ADDRESS__)
#define AJ__ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define AJ__ASAN 1
#endif
#endif

/*
 * Marking memory: POOL_NOACCESS(sl, p, n) and the others, for the objects of
 * slab sl.  Under valgrind only when it runs (sl->vg, asked when the slab is
 * made): its requests cost 5 ns a job where nothing listens.
 */
#ifdef AJ__ASAN
#include <sanitizer/asan_interface.h>
#define POOL_NOACCESS(sl, p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define POOL_ACCESS(sl, p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#define POOL_UNDEFINED(sl, p, n) ((void)0)
#define POOL_WATCHED() 0
#elif defined(HAVE_VALGRIND_MEMCHECK_H)
#include <valgrind/memcheck.h>
#define POOL_NOACCESS(sl, p, n) ((sl)->vg ? (void)VALGRIND_MAKE_MEM_NOACCESS((p), (n)) : (void)0)
#define POOL_ACCESS(sl, p, n) ((sl)->vg ? (void)VALGRIND_MAKE_MEM_DEFINED((p), (n)) : (void)0)
#define POOL_UNDEFINED(sl, p, n) ((sl)->vg ? (void)VALGRIND_MAKE_MEM_UNDEFINED((p), (n)) : (void)0)
#define POOL_WATCHED() (RUNNING_ON_VALGRIND != 0)
#else
#define POOL_NOACCESS(sl, p, n) ((void)0)
#define POOL_ACCESS(sl, p, n) ((void)0)
#define POOL_UNDEFINED(sl, p, n) ((void)0)
#define POOL_WATCHED() 0
#endif

#define AJ__SLAB_MIN 16
#define AJ__SLAB_MAX 256                /* job->pool_idx is 16 bits */
#define AJ__PREFETCH_AHEAD 32           /* fresh objects (1M pending: 54 -> 51 ns a job) */

/* What a put object holds until it is handed out again. */
struct aj__free_obj {
    struct aj__free_obj *next;
    uint32_t idx;                       /* its index, as aj__pool_put got it */
};

struct aj__slab {
    struct aj__q link;                  /* pool->partial or pool->full */
    struct aj__pool *pool;              /* NULL once the pool is destroyed */
    struct aj__free_obj *free;          /* put objects */
    uint32_t nobj;                      /* capacity */
    uint32_t nlive;                     /* handed out, not put back */
    uint32_t nfresh;                    /* handed out at least once: the rest never was */
    uint8_t vg;                         /* valgrind watches: mark its objects */
};

/* The strictest alignment a job needs (pointers, 64-bit integers). */
struct aj__align_probe {
    char c;
    union {
        void *p;
        uint64_t u;
        void (*f)(void);
    } x;
};
#define POOL_ALIGN offsetof(struct aj__align_probe, x)
#define POOL_ROUND(n) (((n) + POOL_ALIGN - 1) / POOL_ALIGN * POOL_ALIGN)
#define SLAB_HDR POOL_ROUND(sizeof(struct aj__slab))

static inline char *slab_objects(struct aj__slab *sl)
{
    return (char *)sl + SLAB_HDR;
}

/* The room an object of objsz takes in a slab. */
static inline size_t pool_objsz(size_t objsz)
{
    return POOL_ROUND(objsz < sizeof(struct aj__free_obj) ? sizeof(struct aj__free_obj) : objsz);
}

void aj__pool_init(struct aj__pool *p, size_t objsz)
{
    aj__q_init(&p->partial);
    aj__q_init(&p->full);
    p->objsz = pool_objsz(objsz);
    p->next_nobj = AJ__SLAB_MIN;
}

static struct aj__slab *slab_new(struct aj__pool *p)
{
    uint32_t nobj = p->next_nobj;
    struct aj__slab *sl = aj__malloc(SLAB_HDR + (size_t)nobj * p->objsz);

    if (!sl)
        return NULL;                    /* errno is ENOMEM */
    sl->pool = p;
    sl->free = NULL;
    sl->nobj = nobj;
    sl->nlive = 0;
    sl->nfresh = 0;
    sl->vg = (uint8_t)POOL_WATCHED();
    POOL_NOACCESS(sl, slab_objects(sl), (size_t)nobj * p->objsz);
    aj__q_insert_head(&p->partial, &sl->link);
    if (nobj < AJ__SLAB_MAX)
        p->next_nobj = nobj * 2;
    return sl;
}

static void slab_free(struct aj__slab *sl, size_t objsz)
{
    POOL_ACCESS(sl, slab_objects(sl), (size_t)sl->nobj * objsz);
    aj__free(sl);
}

void *aj__pool_get(struct aj__pool *p, uint16_t *idx)
{
    struct aj__slab *sl;
    char *obj;
    uint32_t i;

    if (aj__q_empty(&p->partial)) {
        sl = slab_new(p);
        if (!sl)
            return NULL;
    } else {
        sl = aj__q_data(p->partial.next, struct aj__slab, link);
    }
    if (sl->free) {
        struct aj__free_obj *f = sl->free;
        POOL_ACCESS(sl, f, sizeof *f);
        sl->free = f->next;
        i = f->idx;
        obj = (char *)f;
    } else {
        i = sl->nfresh++;
        obj = slab_objects(sl) + (size_t)i * p->objsz;
        /* May point past the slab: a prefetch never faults. */
        AJ__PREFETCH((const void *)((uintptr_t)obj + AJ__PREFETCH_AHEAD * p->objsz));
    }
    POOL_ACCESS(sl, obj, p->objsz);
    POOL_UNDEFINED(sl, obj, p->objsz);
    if (++sl->nlive == sl->nobj) {
        aj__q_remove(&sl->link);
        aj__q_insert_head(&p->full, &sl->link);
    }
    *idx = (uint16_t)i;
    return obj;
}

void aj__pool_put(void *obj, size_t objsz, uint16_t idx)
{
    struct aj__slab *sl;
    struct aj__pool *p;
    struct aj__free_obj *f = obj;

    objsz = pool_objsz(objsz);
    sl = (struct aj__slab *)(void *)((char *)obj - (size_t)idx * objsz - SLAB_HDR);
    p = sl->pool;
    f->next = sl->free;
    f->idx = idx;
    sl->free = f;
    POOL_NOACCESS(sl, obj, objsz);
    if (sl->nlive-- == sl->nobj && p) {         /* full until now: has room */
        aj__q_remove(&sl->link);
        aj__q_insert_head(&p->partial, &sl->link);
    }
    if (sl->nlive > 0)
        return;
    if (!p) {
        slab_free(sl, objsz);                   /* orphaned: its pool is gone */
    } else if (p->partial.next != &sl->link || p->partial.prev != &sl->link) {
        aj__q_remove(&sl->link);                /* another slab has room */
        slab_free(sl, objsz);
    }
}

static void pool_let_go(struct aj__q *slabs, size_t objsz)
{
    while (!aj__q_empty(slabs)) {
        struct aj__slab *sl = aj__q_data(slabs->next, struct aj__slab, link);
        aj__q_remove(&sl->link);
        if (sl->nlive == 0)
            slab_free(sl, objsz);
        else
            sl->pool = NULL;                    /* freed with its last object */
    }
}

void aj__pool_destroy(struct aj__pool *p)
{
    pool_let_go(&p->partial, p->objsz);
    pool_let_go(&p->full, p->objsz);
}
