/*
 * registry.c -- the adapter's records of servers, and which scheduler
 * serves a request.
 *
 * The adapter knows servers through nodes: one per evhttp given a
 * scheduler (aj_evhttp_setup), a vhost (aj_evhttp_add_virtual_host), an
 * alias (aj_evhttp_add_server_alias), flags or an atomic route.  Nodes form
 * the tree of virtual hosts made through the adapter, with the aliases
 * added through it.  A lookup reads only these records: it never asks
 * libevent about a server (libevent keeps vhosts and aliases private) and
 * never changes libevent's state to learn something.
 *
 * Records never go stale through the documented ways to end a server
 * (aj_evhttp_shutdown, aj_evhttp_free, aj_evhttp_remove_virtual_host,
 * aj_evhttp_forget): each removes its nodes from the index before the
 * server's memory can be reused, so a new evhttp at the same address is a
 * stranger.
 *
 * Threads: the index (evhttp or route id -> record) is shared by every
 * thread, each running its own base and servers.  It is a fixed hash table
 * with striped bucket locks: a lookup holds one short lock that only keys
 * hashing to the same stripe share, and a lookup costs the same with 1 or
 * 1,000 servers registered.  A node's contents and its tree belong to the
 * thread that runs the server, as the evhttp itself does.
 *
 * libevent does not say which vhost served a request, so for a request
 * seen from outside an atomic handler the adapter repeats libevent 2.1's
 * evhttp_find_vhost over the servers it knows: from the server that
 * accepted the connection, first the aliases (depth first, the server
 * before its vhosts), then the patterns, descending into the first vhost
 * whose pattern matches until none does.  Then the chosen server's
 * scheduler, else its nearest parent's.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <event2/http.h>

#include "evhttp-internal.h"

/* ------------------------------------------------------------------ */
/* The index                                                           */
/* ------------------------------------------------------------------ */

#define NBUCKETS 4096            /* a power of two */
#define NSTRIPES 64              /* locks; bucket b uses stripe b % NSTRIPES */

static struct aj__q node_buckets[NBUCKETS];
static struct aj__q route_buckets[NBUCKETS];
static pthread_mutex_t stripes[NSTRIPES];
static pthread_once_t index_once = PTHREAD_ONCE_INIT;
static uintptr_t next_route_id;   /* under id_mutex: taken on aj_atomic only */
static pthread_mutex_t id_mutex = PTHREAD_MUTEX_INITIALIZER;

static void index_init(void)
{
    size_t i;

    for (i = 0; i < NBUCKETS; i++) {
        aj__q_init(&node_buckets[i]);
        aj__q_init(&route_buckets[i]);
    }
    for (i = 0; i < NSTRIPES; i++)
        pthread_mutex_init(&stripes[i], NULL);
}

static size_t hash_key(uintptr_t k)
{
    /* Fibonacci hashing: pointers differ in their middle bits. */
    uint64_t h = (uint64_t)k * UINT64_C(0x9E3779B97F4A7C15);

    return (size_t)(h >> 40) & (NBUCKETS - 1);
}

static void stripe_lock(size_t b)
{
    pthread_mutex_lock(&stripes[b % NSTRIPES]);
}

static void stripe_unlock(size_t b)
{
    pthread_mutex_unlock(&stripes[b % NSTRIPES]);
}

char *ajh__strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = aj_malloc(n);

    if (p)
        memcpy(p, s, n);
    return p;
}

struct aj__node *ajh__node_find(const struct evhttp *http)
{
    size_t b = hash_key((uintptr_t)http);
    struct aj__node *found = NULL;
    struct aj__q *q;

    pthread_once(&index_once, index_init);
    stripe_lock(b);
    for (q = node_buckets[b].next; q != &node_buckets[b]; q = q->next) {
        struct aj__node *n = aj__q_data(q, struct aj__node, hlink);
        if (n->http == http) {
            found = n;
            break;
        }
    }
    stripe_unlock(b);
    return found;
}

struct aj__node *ajh__node_get(struct evhttp *http)
{
    struct aj__node *n = ajh__node_find(http);
    size_t b;

    if (n)
        return n;
    n = aj_calloc(1, sizeof *n);
    if (!n)
        return NULL;
    n->http = http;
    aj__q_init(&n->children);
    aj__q_init(&n->sibling);
    aj__q_init(&n->aliases);
    aj__q_init(&n->held);
    aj__q_init(&n->routes);
    b = hash_key((uintptr_t)http);
    stripe_lock(b);
    aj__q_insert_tail(&node_buckets[b], &n->hlink);
    stripe_unlock(b);
    return n;
}

static void node_unindex(struct aj__node *n)
{
    size_t b = hash_key((uintptr_t)n->http);

    stripe_lock(b);
    aj__q_remove(&n->hlink);
    stripe_unlock(b);
}

static void node_free(struct aj__node *n)
{
    struct aj__q *q;

    while ((q = aj__q_first(&n->aliases)) != NULL) {
        aj__q_remove(q);
        aj_free(aj__q_data(q, struct aj__alias, link));
    }
    aj_free(n->pattern);
    aj_free(n);
}

/* A node nothing refers to (just created and its operation failed, or
 * whatever it recorded was taken back). */
void ajh__node_drop_if_unused(struct aj__node *n)
{
    if (!n->sched && !n->parent && !n->pattern && aj__q_empty(&n->children) &&
        aj__q_empty(&n->routes) && aj__q_empty(&n->aliases) && aj__q_empty(&n->held) &&
        !n->gencb && !n->shutdown && !n->flags) {
        node_unindex(n);
        node_free(n);
    }
}

struct aj__route *ajh__route_find(uintptr_t id)
{
    size_t b = hash_key(id);
    struct aj__route *found = NULL;
    struct aj__q *q;

    pthread_once(&index_once, index_init);
    stripe_lock(b);
    for (q = route_buckets[b].next; q != &route_buckets[b]; q = q->next) {
        struct aj__route *r = aj__q_data(q, struct aj__route, hlink);
        if (r->id == id) {
            found = r;
            break;
        }
    }
    stripe_unlock(b);
    return found;
}

/* Ids are never reused (a route callback libevent still holds after the
 * records went must find nothing); 0 is never one. */
void ajh__route_index(struct aj__route *r)
{
    size_t b;

    pthread_mutex_lock(&id_mutex);
    r->id = ++next_route_id;
    pthread_mutex_unlock(&id_mutex);
    b = hash_key(r->id);
    stripe_lock(b);
    aj__q_insert_tail(&route_buckets[b], &r->hlink);
    stripe_unlock(b);
}

void ajh__route_unindex(struct aj__route *r)
{
    size_t b = hash_key(r->id);

    stripe_lock(b);
    aj__q_remove(&r->hlink);
    stripe_unlock(b);
}

/* ------------------------------------------------------------------ */
/* Trees                                                               */
/* ------------------------------------------------------------------ */

struct aj__node *ajh__node_sched_node(struct aj__node *n)
{
    while (n && !n->sched)
        n = n->parent;
    return n;
}

/* Calls fn on n and every registered vhost below it (pre-order); fn may
 * unlink the node it is given. */
void ajh__tree_walk(struct aj__node *n, void (*fn)(struct aj__node *, void *), void *arg)
{
    struct aj__q *q, *next;

    fn(n, arg);
    for (q = n->children.next; q != &n->children; q = next) {
        next = q->next;
        ajh__tree_walk(aj__q_data(q, struct aj__node, sibling), fn, arg);
    }
}

static void chain_dead(struct aj__node *n, void *arg)
{
    struct aj__node **dead = arg;
    struct aj__q *q;

    /* Requests whose answer is still being written keep their callbacks
     * (they free themselves when libevent is done) but leave the node. */
    while ((q = aj__q_first(&n->held)) != NULL) {
        aj__q_data(q, struct aj__atomic, link)->node = NULL;
        aj__q_remove(q);
    }
    /* libevent keeps the route callbacks the user left it: their ids now
     * find nothing (route_cb answers 503). */
    while ((q = aj__q_first(&n->routes)) != NULL) {
        struct aj__route *r = aj__q_data(q, struct aj__route, link);
        aj__q_remove(q);
        ajh__route_unindex(r);
        ajh__route_free(r);
    }
    if (n->gencb) {
        ajh__route_unindex(n->gencb);
        ajh__route_free(n->gencb);
        n->gencb = NULL;
    }
    node_unindex(n);
    /* AJH_LIMITS_DETACH: the registry forgets this server here.  When
     * evhttp/limits.c (hostile clients, SPEC 4.5) is in the tree, call
     * ajh__limits_detach(n->http) at this spot. */
    n->next_dead = *dead;
    *dead = n;
}

/*
 * Forgets top and its registered vhosts: off the index, off top's parent,
 * without touching any server.  The nodes are chained on *dead, their
 * schedulers still alive: ajh__free_dead() frees both.
 */
void ajh__forget_tree(struct aj__node *top, struct aj__node **dead)
{
    struct aj__node *n, *parent = top->parent;
    struct aj__q *q;

    *dead = NULL;
    ajh__tree_walk(top, chain_dead, dead);
    for (n = *dead; n; n = n->next_dead) {
        while ((q = aj__q_first(&n->children)) != NULL)
            aj__q_remove(q);
        aj__q_remove(&n->sibling);
        n->parent = NULL;
        n->shutdown = NULL;
    }
    /* A parent known only as the parent of top is no record any more. */
    if (parent)
        ajh__node_drop_if_unused(parent);
}

/* Frees the schedulers (running owed callbacks, which may call back into
 * the adapter: the nodes are already forgotten) and the nodes. */
void ajh__free_dead(struct aj__node *dead)
{
    struct aj__node *n;

    while ((n = dead) != NULL) {
        dead = n->next_dead;
        if (n->sched)
            aj_scheduler_free(n->sched);
        node_free(n);
    }
}

struct foreach_ctx {
    void (*fn)(struct evhttp *http, const char *pattern, aj_scheduler *s, void *arg);
    void *arg;
};

static void foreach_one(struct aj__node *n, void *arg)
{
    struct foreach_ctx *c = arg;

    c->fn(n->http, n->parent ? n->pattern : NULL, n->sched, c->arg);
}

void ajh__registry_foreach(struct evhttp *root,
    void (*fn)(struct evhttp *http, const char *pattern, aj_scheduler *s, void *arg),
    void *arg)
{
    struct aj__node *n = ajh__node_find(root);
    struct foreach_ctx c = { fn, arg };

    if (!n) {
        fn(root, NULL, NULL, arg);
        return;
    }
    /* The root is the one asked about, even if it is a vhost itself. */
    fn(n->http, NULL, n->sched, arg);
    {
        struct aj__q *q, *next;
        for (q = n->children.next; q != &n->children; q = next) {
            next = q->next;
            ajh__tree_walk(aj__q_data(q, struct aj__node, sibling), foreach_one, &c);
        }
    }
}

/* ------------------------------------------------------------------ */
/* libevent 2.1's virtual host choice, over the servers we know        */
/* ------------------------------------------------------------------ */

static char ascii_lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static int ascii_strcaseeq(const char *a, const char *b)
{
    for (; *a && ascii_lower(*a) == ascii_lower(*b); a++, b++)
        ;
    return ascii_lower(*a) == ascii_lower(*b);
}

/* http.c's prefix_suffix_match(pattern, name, ignorecase=1), quirks
 * included: a trailing '*' never matches (its loop stops before trying the
 * empty rest), so "b.*" matches nothing in libevent 2.1 and nothing here. */
static int pattern_match(const char *pattern, const char *name)
{
    char c;

    for (;;) {
        switch (c = *pattern++) {
        case '\0':
            return *name == '\0';
        case '*':
            while (*name != '\0') {
                if (pattern_match(pattern, name))
                    return 1;
                ++name;
            }
            return 0;
        default:
            if (c != *name && ascii_lower(c) != ascii_lower(*name))
                return 0;
            ++name;
        }
    }
}

/* An alias recorded on n (libevent compares them ignoring case). */
static struct aj__alias *alias_find(const struct aj__node *n, const char *host)
{
    struct aj__q *q;

    for (q = n->aliases.next; q != &n->aliases; q = q->next) {
        struct aj__alias *al = aj__q_data(q, struct aj__alias, link);
        if (ascii_strcaseeq(al->name, host))
            return al;
    }
    return NULL;
}

static struct aj__node *find_alias(struct aj__node *n, const char *host)
{
    struct aj__q *q;

    if (alias_find(n, host))
        return n;
    for (q = n->children.next; q != &n->children; q = q->next) {
        struct aj__node *found = find_alias(aj__q_data(q, struct aj__node, sibling), host);
        if (found)
            return found;
    }
    return NULL;
}

static struct aj__node *find_vhost(struct aj__node *root, const char *host)
{
    struct aj__node *n;
    struct aj__q *q;

    /* With no vhost every choice is the root: skip the alias search. */
    if (!host || aj__q_empty(&root->children))
        return root;
    n = find_alias(root, host);
    if (n)
        return n;
    n = root;
again:
    for (q = n->children.next; q != &n->children; q = q->next) {
        struct aj__node *c = aj__q_data(q, struct aj__node, sibling);
        if (c->pattern && pattern_match(c->pattern, host)) {
            n = c;
            goto again;
        }
    }
    return n;
}

/* ------------------------------------------------------------------ */
/* Public API                                                          */
/* ------------------------------------------------------------------ */

AJ_EXPORT aj_scheduler *aj_evhttp_setup(struct evhttp *http, struct event_base *base)
{
    struct aj__node *n;
    aj_scheduler *s;
    int err;

    if (!http || !base) {
        errno = EINVAL;
        return NULL;
    }
    n = ajh__node_get(http);
    if (!n)
        return NULL;
    if (n->sched || n->shutdown) {
        errno = EEXIST;
        return NULL;
    }
    s = aj_scheduler_new(base);
    if (!s) {
        err = errno;
        ajh__node_drop_if_unused(n);
        errno = err;
        return NULL;
    }
    n->sched = s;
    return s;
}

static int is_ancestor(const struct aj__node *a, const struct aj__node *n)
{
    for (; n; n = n->parent)
        if (n == a)
            return 1;
    return 0;
}

static void has_socket(struct evhttp_bound_socket *b, void *arg)
{
    (void)b;
    *(int *)arg = 1;
}

AJ_EXPORT int aj_evhttp_add_virtual_host(struct evhttp *parent, const char *pattern,
                                         struct evhttp *vhost)
{
    struct aj__node *pn, *vn;
    char *copy;
    int err, sockets = 0;

    if (!parent || !pattern || !vhost || parent == vhost) {
        errno = EINVAL;
        return -1;
    }
    vn = ajh__node_find(vhost);
    if (vn && vn->parent) {
        errno = EEXIST;
        return -1;
    }
    pn = ajh__node_find(parent);
    if (vn && pn && is_ancestor(vn, pn)) {
        errno = EINVAL;          /* would make a cycle */
        return -1;
    }
    if ((pn && pn->shutdown) || (vn && vn->shutdown)) {
        errno = EBUSY;           /* a shutdown covers it */
        return -1;
    }
    copy = ajh__strdup(pattern);
    pn = copy ? ajh__node_get(parent) : NULL;
    vn = pn ? ajh__node_get(vhost) : NULL;
    if (!vn) {
        err = ENOMEM;
        goto undo;
    }
    errno = 0;
    if (evhttp_add_virtual_host(parent, pattern, vhost) != 0) {
        /* libevent refuses a vhost with bound sockets or one that is a
         * vhost already (added behind our back), and fails on its own
         * strdup: tell them apart. */
        err = errno == ENOMEM ? ENOMEM : EEXIST;
        evhttp_foreach_bound_socket(vhost, has_socket, &sockets);
        if (sockets)
            err = EINVAL;
        goto undo;
    }
    vn->pattern = copy;
    vn->parent = pn;
    aj__q_insert_tail(&pn->children, &vn->sibling);
    return 0;
undo:
    aj_free(copy);
    if (vn)
        ajh__node_drop_if_unused(vn);
    if (pn)
        ajh__node_drop_if_unused(pn);
    errno = err;
    return -1;
}

AJ_EXPORT int aj_evhttp_remove_virtual_host(struct evhttp *parent, struct evhttp *vhost)
{
    struct aj__node *pn, *vn;

    if (!parent || !vhost) {
        errno = EINVAL;
        return -1;
    }
    pn = ajh__node_find(parent);
    vn = ajh__node_find(vhost);
    if (!vn || !vn->parent) {
        /* Not made through the adapter: libevent's answer alone. */
        if (evhttp_remove_virtual_host(parent, vhost) != 0) {
            errno = ENOENT;
            return -1;
        }
        return 0;
    }
    if (vn->parent != pn) {
        errno = ENOENT;
        return -1;
    }
    if (vn->shutdown) {
        errno = EBUSY;           /* a shutdown covers it: wait for its callback */
        return -1;
    }
    evhttp_remove_virtual_host(parent, vhost);
    aj__q_remove(&vn->sibling);
    vn->parent = NULL;
    aj_free(vn->pattern);
    vn->pattern = NULL;
    ajh__node_drop_if_unused(vn);
    ajh__node_drop_if_unused(pn);
    return 0;
}

AJ_EXPORT int aj_evhttp_add_server_alias(struct evhttp *http, const char *alias)
{
    struct aj__node *n;
    struct aj__alias *al;
    size_t len;

    if (!http || !alias || !*alias) {
        errno = EINVAL;
        return -1;
    }
    n = ajh__node_find(http);
    if (n && alias_find(n, alias)) {
        errno = EEXIST;
        return -1;
    }
    len = strlen(alias) + 1;
    al = aj_malloc(sizeof *al + len);
    if (!al)
        return -1;
    memcpy(al->name, alias, len);
    n = ajh__node_get(http);
    if (!n) {
        aj_free(al);
        return -1;
    }
    if (evhttp_add_server_alias(http, alias) != 0) {
        aj_free(al);
        ajh__node_drop_if_unused(n);
        errno = ENOMEM;
        return -1;
    }
    aj__q_insert_tail(&n->aliases, &al->link);
    return 0;
}

AJ_EXPORT int aj_evhttp_remove_server_alias(struct evhttp *http, const char *alias)
{
    struct aj__node *n;
    struct aj__alias *al;

    if (!http || !alias) {
        errno = EINVAL;
        return -1;
    }
    n = ajh__node_find(http);
    al = n ? alias_find(n, alias) : NULL;
    if (!al) {
        errno = ENOENT;
        return -1;
    }
    evhttp_remove_server_alias(http, al->name);
    aj__q_remove(&al->link);
    aj_free(al);
    ajh__node_drop_if_unused(n);
    return 0;
}

AJ_EXPORT int aj_evhttp_set_flags(struct evhttp *http, unsigned flags)
{
    struct aj__node *n;

    if (!http || (flags & ~(unsigned)(AJ_EVHTTP_CANCEL_ON_DISCONNECT | AJ_EVHTTP_ALLOW_HALF_CLOSE))) {
        errno = EINVAL;
        return -1;
    }
    n = flags ? ajh__node_get(http) : ajh__node_find(http);
    if (!n)
        return flags ? -1 : 0;
    n->flags = flags;
    ajh__node_drop_if_unused(n);
    return 0;
}

AJ_EXPORT unsigned aj_evhttp_flags(const struct evhttp *http)
{
    struct aj__node *n = http ? ajh__node_find(http) : NULL;

    return n ? n->flags : 0;
}

AJ_EXPORT void aj_evhttp_free(struct evhttp *http)
{
    struct aj__shutdown *abandoned;
    struct aj__node *n, *dead;

    if (!http)
        return;
    n = ajh__node_find(http);
    if (!n) {
        evhttp_free(http);
        return;
    }
    /* A vhost leaves its parent in libevent too, or the parent would keep
     * a freed server in its list. */
    if (n->parent)
        evhttp_remove_virtual_host(n->parent->http, http);
    if (n->shutdown && ajh__shutdown_in_callback(n->shutdown)) {
        evhttp_free(http);        /* the shutdown forgets the records after */
        return;
    }
    abandoned = ajh__shutdown_release_tree(n);
    ajh__forget_tree(n, &dead);
    /* Held requests are dropped by libevent here (their close callbacks
     * tell the atomics, which are off the nodes already). */
    evhttp_free(http);
    ajh__free_dead(dead);
    ajh__shutdown_free_abandoned(abandoned);
}

AJ_EXPORT aj_scheduler *aj_evhttp_get_scheduler_from_server(struct evhttp *http)
{
    struct aj__node *n;

    if (!http) {
        errno = EINVAL;
        return NULL;
    }
    n = ajh__node_find(http);
    if (!n || !n->sched) {
        errno = ENOENT;
        return NULL;
    }
    return n->sched;
}

AJ_EXPORT aj_scheduler *aj_evhttp_get_scheduler_from_request(struct evhttp_request *req)
{
    struct evhttp_connection *evcon;
    struct evhttp *server;
    struct aj__node *root, *n;

    if (!req) {
        errno = EINVAL;
        return NULL;
    }
    evcon = evhttp_request_get_connection(req);
    server = evcon ? evhttp_connection_get_server(evcon) : NULL;
    root = server ? ajh__node_find(server) : NULL;
    n = root ? ajh__node_sched_node(find_vhost(root, evhttp_request_get_host(req))) : NULL;
    if (!n) {
        errno = ENOENT;
        return NULL;
    }
    return n->sched;
}

AJ_EXPORT aj_scheduler *aj_evhttp_get_scheduler(struct evhttp_request *req)
{
    aj_scheduler *s = aj_evhttp_get_scheduler_from_request(req);

    if (!s && req)
        aj_log(EVENT_LOG_WARN, "aj_evhttp_get_scheduler: no scheduler serves this request "
                               "(aj_evhttp_setup() was not called for its server or a parent)");
    return s;
}

AJ_EXPORT aj_job *aj_evhttp_spawn(struct evhttp_request *req, const struct aj_job_ops *ops,
                                  void *arg)
{
    aj_scheduler *s = aj_evhttp_get_scheduler(req);

    return s ? aj_spawn(s, ops, arg) : NULL;
}
