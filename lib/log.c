/*
 * log.c -- the one log sink of libaj.  The core and the adapter write every
 * diagnostic through aj_log(); aj_set_log_callback() redirects it.  Messages
 * are formatted on the stack: logging never allocates, so it works when
 * memory is short.
 */
#include "aj-internal.h"

#include <stdarg.h>
#include <stdio.h>

static aj_log_cb aj__log_fn;

AJ_EXPORT void aj_set_log_callback(aj_log_cb cb)
{
    aj__log_fn = cb;
}

static const char *severity_name(int severity)
{
    switch (severity) {
    case EVENT_LOG_DEBUG: return "debug";
    case EVENT_LOG_MSG: return "msg";
    case EVENT_LOG_WARN: return "warn";
    case EVENT_LOG_ERR: return "err";
    default: return "?";
    }
}

void aj__logv(int severity, const char *fmt, va_list ap)
{
    char buf[1024];
    aj_log_cb fn = aj__log_fn;

    vsnprintf(buf, sizeof buf, fmt, ap);
    if (fn)
        fn(severity, buf);
    else
        fprintf(stderr, "[aj] %s: %s\n", severity_name(severity), buf);
}

AJ_EXPORT void aj_log(int severity, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    aj__logv(severity, fmt, ap);
    va_end(ap);
}
