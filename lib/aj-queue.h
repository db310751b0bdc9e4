/*
 * aj-queue.h -- intrusive circular doubly-linked lists (libuv's uv__queue
 * idea).  A list head and a node are the same struct: an empty list, and a
 * node on no list, point at themselves.  Removal needs no head, so an object
 * can leave whichever list it is on in O(1), and no operation allocates.
 */
#ifndef AJ_QUEUE_H
#define AJ_QUEUE_H

#include <stddef.h>

struct aj__q {
    struct aj__q *next;
    struct aj__q *prev;
};

#define aj__q_data(ptr, type, field) \
    ((type *)(void *)((char *)(ptr) - offsetof(type, field)))

static inline void aj__q_init(struct aj__q *q) { q->next = q->prev = q; }
static inline int aj__q_empty(const struct aj__q *h) { return h->next == h; }
/* A node is linked when it is on some list. */
static inline int aj__q_linked(const struct aj__q *n) { return n->next != n; }
static inline struct aj__q *aj__q_first(const struct aj__q *h)
{
    return h->next == h ? NULL : h->next;
}

static inline void aj__q_insert_tail(struct aj__q *h, struct aj__q *n)
{
    n->next = h;
    n->prev = h->prev;
    h->prev->next = n;
    h->prev = n;
}

static inline void aj__q_insert_head(struct aj__q *h, struct aj__q *n)
{
    n->next = h->next;
    n->prev = h;
    h->next->prev = n;
    h->next = n;
}

static inline void aj__q_remove(struct aj__q *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->next = n->prev = n;
}

/* Moves every node of `from` to the tail of `to`; `from` becomes empty. */
static inline void aj__q_move_all(struct aj__q *from, struct aj__q *to)
{
    if (aj__q_empty(from))
        return;
    from->next->prev = to->prev;
    to->prev->next = from->next;
    from->prev->next = to;
    to->prev = from->prev;
    aj__q_init(from);
}

#endif /* AJ_QUEUE_H */
