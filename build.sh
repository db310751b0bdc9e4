#!/bin/sh
# build.sh -- from a fresh clone to a running demo or a tested build.
#
#   ./build.sh demo    install build deps if missing, build, run the demos
#   ./build.sh check   install build deps if missing, build, run the test suite
#   ./build.sh         install deps if missing and build only
#
# Environment: BUILD_DIR (default _build), CONFIGURE_FLAGS (extra flags for
# ./configure, e.g. --enable-sanitizers), AJ_NO_INSTALL=1 to skip apt-get.
set -eu
cd "$(dirname "$0")"
top=$(pwd)
what=${1:-build}

# 1. Dependencies: Debian package names; only the missing ones are installed.
deps="gcc make autoconf automake libtool pkg-config libevent-dev check curl apache2-utils wrk valgrind"
if [ "${AJ_NO_INSTALL:-0}" != 1 ] && command -v dpkg >/dev/null 2>&1; then
    missing=
    for p in $deps; do
        dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        echo "build.sh: installing$missing"
        sudo=
        [ "$(id -u)" = 0 ] || sudo=sudo
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
    fi
fi

# 2. Configure and build out of tree.
build=${BUILD_DIR:-_build}
if [ ! -x configure ] || [ configure.ac -nt configure ]; then
    autoreconf -fi
fi
mkdir -p "$build"
cd "$build"
if [ ! -f Makefile ]; then
    # shellcheck disable=SC2086
    "$top/configure" -q ${CONFIGURE_FLAGS:-}
fi
jobs=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)
make -s -j"$jobs"

# 3. Run.
case $what in
demo)
    echo "== examples/basic: jobs under a limit, a failure, a drain"
    ./examples/basic
    echo
    echo "== make demo: the HTTP demo server under a short real load"
    make -s demo
    ;;
check)
    rc=0
    make -j"$jobs" check || rc=$?
    log=test-suite.log
    if [ -f "$log" ]; then
        pass=$(sed -n 's/^# PASS: *//p' "$log" | head -n1)
        fail=$(sed -n 's/^# FAIL: *//p' "$log" | head -n1)
        xpass=$(sed -n 's/^# XPASS: *//p' "$log" | head -n1)
        err=$(sed -n 's/^# ERROR: *//p' "$log" | head -n1)
        skip=$(sed -n 's/^# SKIP: *//p' "$log" | head -n1)
        echo "$pass passed, $((${fail:-0} + ${xpass:-0} + ${err:-0})) failed, ${skip:-0} skipped"
    fi
    exit $rc
    ;;
build) ;;
*)
    echo "usage: $0 [demo|check|build]" >&2
    exit 2
    ;;
esac
