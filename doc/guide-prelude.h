/*
 * doc/guide-prelude.h -- the includes doc/guide.md states once at its top.
 * doc/check-guide.sh puts this file before every C block of the guide.
 */
#ifndef AJ_GUIDE_PRELUDE_H
#define AJ_GUIDE_PRELUDE_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>

#include <aj/aj.h>
#include <aj/evhttp.h>

#endif
