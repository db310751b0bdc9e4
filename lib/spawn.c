/*
 * spawn.c -- admission: who gets a slot, who waits, who is refused.
 *
 * aj_spawn admits a job at once or fails; aj_spawn_async queues a request
 * (FIFO) until the pending queue has room.  aj__pump() is the one place that
 * hands out room: it promotes pending jobs while slots are free, then admits
 * queued requests while there is room.  It only changes state; callbacks
 * (the request's, the job's start) are queued on the run queue.
 *
 * Invariant (outside a closing scheduler): a free slot implies an empty
 * pending queue, and a queued request implies no room at all.
 */
#include "aj-internal.h"

static int has_room(const aj_scheduler *s)
{
    return s->limit == 0 || s->nactive < s->limit ||
           s->pending_limit == 0 || s->npending < s->pending_limit;
}

static void req_admit(aj_scheduler *s, struct aj__spawn_req *req)
{
    aj__q_remove(&req->link);
    aj__timer_stop(&req->timer);
    req->error = 0;
    req->job->call.flags |= AJ__JOB_UNANNOUNCED;
    aj__runq_push(s, &req->call);   /* its callback runs before the start */
    aj__job_admit(s, req->job);
}

/* The request is over with `error`: its callback runs from the loop. */
static void req_fail(aj_scheduler *s, struct aj__spawn_req *req, int error)
{
    aj__q_remove(&req->link);
    aj__timer_stop(&req->timer);
    req->error = error;
    s->stats.rejected++;
    aj__runq_push(s, &req->call);
}

void aj__pump(aj_scheduler *s)
{
    if (s->phase >= AJ__CLOSING || s->freeing)
        return;
    while (s->npending && (s->limit == 0 || s->nactive < s->limit)) {
        aj_job *job = aj__q_data(s->pending.next, aj_job, call.link);
        aj__job_promote(s, job);
    }
    while (!aj__q_empty(&s->spawn_reqs) && has_room(s)) {
        struct aj__spawn_req *req = aj__q_data(s->spawn_reqs.next, struct aj__spawn_req, link);
        req_admit(s, req);
    }
}

AJ_EXPORT aj_job *aj_spawn(aj_scheduler *s, const struct aj_job_ops *ops, void *arg)
{
    aj_job *job;

    if (!s || !ops || !ops->start) {
        errno = EINVAL;
        return NULL;
    }
    if (s->phase >= AJ__CLOSING || s->freeing) {
        s->stats.rejected++;
        errno = ESHUTDOWN;
        return NULL;
    }
    if (!aj__q_empty(&s->spawn_reqs) || !has_room(s)) {
        s->stats.rejected++;
        errno = EAGAIN;
        return NULL;
    }
    job = aj__job_new(s, ops, arg, AJ__CALLER());
    if (!job)
        return NULL;
    aj__job_admit(s, job);
    return job;
}

static void req_timer_fire(struct aj__timer *t)
{
    struct aj__spawn_req *req = aj__q_data(t, struct aj__spawn_req, timer);
    req_fail(req->s, req, ETIMEDOUT);
}

AJ_EXPORT int aj_spawn_async(aj_scheduler *s, const struct aj_job_ops *ops, void *arg,
                             const struct timeval *timeout, aj_spawn_cb cb, void *cbarg)
{
    struct aj__spawn_req *req;

    if (!s || !ops || !ops->start || !cb || (timeout && !aj__timeval_valid(timeout))) {
        errno = EINVAL;
        return -1;
    }
    if (s->phase >= AJ__CLOSING || s->freeing) {
        s->stats.rejected++;
        errno = ESHUTDOWN;
        return -1;
    }
    req = aj__malloc(sizeof *req);
    if (!req)
        return -1;
    req->job = aj__job_new(s, ops, arg, AJ__CALLER());
    if (!req->job) {
        aj__free(req);
        return -1;
    }
    aj__q_init(&req->call.link);
    req->call.kind = AJ__CALL_SPAWN_REQ;
    req->call.queued = 0;
    aj__q_init(&req->link);
    aj__timer_init(&req->timer, req_timer_fire);
    req->s = s;
    req->cb = cb;
    req->cbarg = cbarg;
    req->error = 0;
    if (timeout && aj__timer_start(s, &req->timer, timeout) < 0) {
        aj__job_free_embryo(req->job);
        aj__free(req);
        return -1;
    }
    aj__q_insert_tail(&s->spawn_reqs, &req->link);
    aj__pump(s);
    return 0;
}

/* From the loop: tell the caller how its request ended. */
void aj__spawn_req_run(aj_scheduler *s, struct aj__spawn_req *req)
{
    aj_job *job = req->job;
    aj_spawn_cb cb = req->cb;
    void *cbarg = req->cbarg;
    int error = req->error;

    aj__free(req);
    if (error) {
        aj__job_free_embryo(job);   /* it never existed; the caller keeps arg */
        cb(s, NULL, error, cbarg);
    } else {
        job->call.flags &= (uint8_t)~AJ__JOB_UNANNOUNCED;
        job->refs++;                /* cb may free s: the job stays till it returns */
        cb(s, job, 0, cbarg);
        aj__job_unhold(job);
    }
}

/* The scheduler closes: every queued request gets ESHUTDOWN. */
void aj__spawn_reqs_shutdown(aj_scheduler *s)
{
    while (!aj__q_empty(&s->spawn_reqs)) {
        struct aj__spawn_req *req = aj__q_data(s->spawn_reqs.next, struct aj__spawn_req, link);
        req_fail(s, req, ESHUTDOWN);
    }
}

/*
 * aj_scheduler_free: answer a request synchronously.  One whose job was
 * admitted but whose callback never ran gets ESHUTDOWN too: for the caller
 * that job never existed, so it goes without release.
 */
void aj__spawn_req_free_now(aj_scheduler *s, struct aj__spawn_req *req)
{
    aj_job *job = req->job;
    aj_spawn_cb cb = req->cb;
    void *cbarg = req->cbarg;
    int error = req->error ? req->error : ESHUTDOWN;

    if (req->error == 0 && (job->call.flags & AJ__JOB_UNANNOUNCED) &&
        aj__job_state(job) != AJ__JOB_EMBRYO)
        aj__job_discard_silently(job);
    else
        aj__job_free_embryo(job);
    aj__q_remove(&req->link);
    aj__timer_stop(&req->timer);
    aj__free(req);
    cb(s, NULL, error, cbarg);
}
