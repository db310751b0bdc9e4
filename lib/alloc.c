/*
 * alloc.c -- the allocator hook.  Every allocation of the core and of the
 * adapter goes through these functions, so a test can make the n-th one fail
 * and a user can account for libaj's memory (aj_set_mem_functions).
 */
#include "aj-internal.h"

#include <stdlib.h>
#include <string.h>

static void *(*aj__malloc_fn)(size_t) = malloc;
static void *(*aj__realloc_fn)(void *, size_t) = realloc;
static void (*aj__free_fn)(void *) = free;

AJ_EXPORT void aj_set_mem_functions(void *(*malloc_fn)(size_t), void *(*realloc_fn)(void *, size_t),
                                    void (*free_fn)(void *))
{
    if (malloc_fn && realloc_fn && free_fn) {
        aj__malloc_fn = malloc_fn;
        aj__realloc_fn = realloc_fn;
        aj__free_fn = free_fn;
    } else {
        if (malloc_fn || realloc_fn || free_fn)
            aj_log(EVENT_LOG_WARN, "aj_set_mem_functions: give all three functions or none; "
                                   "using malloc, realloc and free");
        aj__malloc_fn = malloc;
        aj__realloc_fn = realloc;
        aj__free_fn = free;
    }
}

void *aj__malloc(size_t sz)
{
    void *p = aj__malloc_fn(sz ? sz : 1);
    if (!p)
        errno = ENOMEM;
    return p;
}

void *aj__calloc(size_t n, size_t sz)
{
    void *p;
    if (sz && n > (size_t)-1 / sz) {
        errno = ENOMEM;
        return NULL;
    }
    p = aj__malloc(n * sz);
    if (p)
        memset(p, 0, n * sz);
    return p;
}

void *aj__realloc(void *p, size_t sz)
{
    void *q = aj__realloc_fn(p, sz ? sz : 1);
    if (!q)
        errno = ENOMEM;
    return q;
}

void aj__free(void *p)
{
    if (p)
        aj__free_fn(p);
}

char *aj__strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = aj__malloc(n);
    if (p)
        memcpy(p, s, n);
    return p;
}

/* The public face of the hook, for layers built on libaj (libaj_evhttp
 * allocates through these so that one hook accounts for both libraries). */
AJ_EXPORT void *aj_malloc(size_t sz) { return aj__malloc(sz); }
AJ_EXPORT void *aj_calloc(size_t n, size_t sz) { return aj__calloc(n, sz); }
AJ_EXPORT void aj_free(void *p) { aj__free(p); }
