/*
 * registry.c -- which scheduler serves a request.
 *
 * The adapter knows servers through nodes: one per evhttp given a
 * scheduler (aj_evhttp_setup), a vhost (aj_evhttp_add_virtual_host) or an
 * atomic route.  Nodes form the same tree as libevent's virtual hosts and
 * live in one process-wide list behind a mutex: each thread may run its own
 * base and servers and register them at any time.
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

static pthread_mutex_t reg_mutex = PTHREAD_MUTEX_INITIALIZER;
static struct aj__q registry = { &registry, &registry };

void ajh__reg_lock(void)
{
    pthread_mutex_lock(&reg_mutex);
}

void ajh__reg_unlock(void)
{
    pthread_mutex_unlock(&reg_mutex);
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
    struct aj__q *q;

    for (q = registry.next; q != &registry; q = q->next) {
        struct aj__node *n = aj__q_data(q, struct aj__node, reg);
        if (n->http == http)
            return n;
    }
    return NULL;
}

struct aj__node *ajh__node_get(struct evhttp *http)
{
    struct aj__node *n = ajh__node_find(http);

    if (n)
        return n;
    n = aj_calloc(1, sizeof *n);
    if (!n)
        return NULL;
    n->http = http;
    aj__q_init(&n->children);
    aj__q_init(&n->sibling);
    aj__q_init(&n->held);
    aj__q_init(&n->routes);
    aj__q_insert_tail(&registry, &n->reg);
    return n;
}

/* A node nothing refers to yet (just created, its operation failed). */
static void node_drop_if_unused(struct aj__node *n)
{
    if (!n->sched && !n->parent && aj__q_empty(&n->children) && aj__q_empty(&n->routes) &&
        !n->gencb && !n->shutdown) {
        aj__q_remove(&n->reg);
        ajh__node_free(n);
    }
}

void ajh__node_unlink(struct aj__node *n)
{
    aj__q_remove(&n->reg);
    aj__q_remove(&n->sibling);
    n->parent = NULL;
}

void ajh__node_free(struct aj__node *n)
{
    aj_free(n->pattern);
    aj_free(n);
}

struct aj__node *ajh__node_sched_node(struct aj__node *n)
{
    while (n && !n->sched)
        n = n->parent;
    return n;
}

/* ------------------------------------------------------------------ */
/* libevent 2.1's virtual host choice, over the servers we know        */
/* ------------------------------------------------------------------ */

static char ascii_lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
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

/*
 * Is `host` an alias of `http`?  libevent keeps aliases private; the only
 * public question it answers is evhttp_remove_server_alias(), which is
 * case-insensitive like its matching.  On a hit the alias is added back at
 * once (order among one server's aliases does not affect the choice).
 */
static int has_alias(struct evhttp *http, const char *host)
{
    if (evhttp_remove_server_alias(http, host) != 0)
        return 0;
    if (evhttp_add_server_alias(http, host) != 0)
        aj_log(EVENT_LOG_ERR, "aj_evhttp: could not restore server alias \"%s\" (out of memory)",
               host);
    return 1;
}

static struct aj__node *find_alias(struct aj__node *n, const char *host)
{
    struct aj__q *q;

    if (has_alias(n->http, host))
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

    /* With no vhost every choice is the root: skip the alias probes. */
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
    ajh__reg_lock();
    n = ajh__node_get(http);
    if (!n) {
        err = ENOMEM;
        goto fail;
    }
    if (n->sched || n->shutdown) {
        err = EEXIST;
        goto fail;
    }
    s = aj_scheduler_new(base);
    if (!s) {
        err = errno;
        node_drop_if_unused(n);
        goto fail;
    }
    n->sched = s;
    ajh__reg_unlock();
    return s;
fail:
    ajh__reg_unlock();
    errno = err;
    return NULL;
}

static int is_ancestor(const struct aj__node *a, const struct aj__node *n)
{
    for (; n; n = n->parent)
        if (n == a)
            return 1;
    return 0;
}

AJ_EXPORT int aj_evhttp_add_virtual_host(struct evhttp *parent, const char *pattern,
                                         struct evhttp *vhost)
{
    struct aj__node *pn, *vn;
    char *copy;
    int err;

    if (!parent || !pattern || !vhost || parent == vhost) {
        errno = EINVAL;
        return -1;
    }
    ajh__reg_lock();
    vn = ajh__node_find(vhost);
    if (vn && (vn->parent || vn->pattern)) {
        err = EEXIST;
        goto fail;
    }
    pn = ajh__node_find(parent);
    if (vn && pn && is_ancestor(vn, pn)) {
        err = EINVAL;       /* would make a cycle */
        goto fail;
    }
    copy = ajh__strdup(pattern);
    pn = ajh__node_get(parent);
    vn = ajh__node_get(vhost);
    if (!copy || !pn || !vn) {
        err = ENOMEM;
        goto undo;
    }
    if (evhttp_add_virtual_host(parent, pattern, vhost) != 0) {
        /* libevent refused: vhost is a vhost already or has sockets. */
        err = EEXIST;
        goto undo;
    }
    vn->pattern = copy;
    vn->parent = pn;
    aj__q_insert_tail(&pn->children, &vn->sibling);
    ajh__reg_unlock();
    return 0;
undo:
    aj_free(copy);
    if (vn)
        node_drop_if_unused(vn);
    if (pn)
        node_drop_if_unused(pn);
fail:
    ajh__reg_unlock();
    errno = err;
    return -1;
}

AJ_EXPORT aj_scheduler *aj_evhttp_get_scheduler_from_server(struct evhttp *http)
{
    struct aj__node *n;
    aj_scheduler *s;

    if (!http) {
        errno = EINVAL;
        return NULL;
    }
    ajh__reg_lock();
    n = ajh__node_find(http);
    s = n ? n->sched : NULL;
    ajh__reg_unlock();
    if (!s)
        errno = ENOENT;
    return s;
}

AJ_EXPORT aj_scheduler *aj_evhttp_get_scheduler_from_request(struct evhttp_request *req)
{
    struct evhttp_connection *evcon;
    struct evhttp *server;
    struct aj__node *root, *n;
    aj_scheduler *s = NULL;

    if (!req) {
        errno = EINVAL;
        return NULL;
    }
    evcon = evhttp_request_get_connection(req);
    server = evcon ? evhttp_connection_get_server(evcon) : NULL;
    if (server) {
        ajh__reg_lock();
        root = ajh__node_find(server);
        if (root) {
            n = ajh__node_sched_node(find_vhost(root, evhttp_request_get_host(req)));
            s = n ? n->sched : NULL;
        }
        ajh__reg_unlock();
    }
    if (!s)
        errno = ENOENT;
    return s;
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
