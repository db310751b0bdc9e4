#!/bin/sh
# doc/check-pkgconfig.sh -- an installed libaj is usable with nothing but
# pkg-config, and its man pages are found by man(1).
#
# `make check` runs it last (doc/Makemodule.am makes its log depend on every
# other test's, because `make install` relinks libaj_evhttp in the build
# tree).  It installs this build into a temporary DESTDIR, compiles
# examples/crawler.c with only `pkg-config --cflags --libs libaj_evhttp`
# (PKG_CONFIG_PATH and PKG_CONFIG_SYSROOT_DIR pointing into the staged
# tree; pkgconf prefixes libevent's system paths with the sysroot too,
# which is harmless: the compiler's own search paths still find libevent),
# runs it against the staged libraries, and asks man(1) for aj, aj_evhttp,
# aj_spawn, aj_job_close and aj_evhttp_shutdown there.
#
# With AJ_INSTALLED=1 (make installcheck, which make distcheck runs after
# its own `make install`) it skips the install and uses $prefix itself.
set -u

top_builddir=${top_builddir:-.}
. "$top_builddir/doc/check-env" || exit 99
PKG_CONFIG=${PKG_CONFIG:-pkg-config}
if ! command -v "$PKG_CONFIG" >/dev/null 2>&1; then
    echo "SKIP: $PKG_CONFIG not found"
    exit 77
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/aj-pkgconfig.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT

if [ "${AJ_INSTALLED:-0}" = 1 ]; then
    root=
    echo "using the installed copy under $prefix"
else
    root=$tmp/root
    # A clean make: no TESTS=, LOG_COMPILER= ... inherited from `make check`.
    if ! (cd "$abs_top_builddir" && MAKEFLAGS= MFLAGS= $MAKE install DESTDIR="$root") \
        >"$tmp/install.log" 2>&1; then
        echo "FAIL: make install DESTDIR=$root"
        cat "$tmp/install.log"
        exit 1
    fi
    echo "installed into DESTDIR=$root"
fi

PKG_CONFIG_PATH=$root$libdir/pkgconfig
export PKG_CONFIG_PATH
if [ -n "$root" ]; then
    PKG_CONFIG_SYSROOT_DIR=$root
    export PKG_CONFIG_SYSROOT_DIR
fi
if ! flags=$($PKG_CONFIG --cflags --libs libaj_evhttp); then
    echo "FAIL: pkg-config --cflags --libs libaj_evhttp"
    exit 1
fi
echo "pkg-config --cflags --libs libaj_evhttp: $flags"
case " $flags " in
*"$abs_top_srcdir"* | *"$abs_top_builddir"*)
    echo "FAIL: the flags point into the source or build tree"
    exit 1
    ;;
esac

# The build's own CFLAGS and LDFLAGS come along: in a --enable-sanitizers
# build the installed libraries need the sanitizer runtime linked first.
# shellcheck disable=SC2086
if ! $CC $CFLAGS -o "$tmp/crawler" "$abs_top_srcdir/examples/crawler.c" $flags $LDFLAGS; then
    echo "FAIL: examples/crawler.c does not build with the pkg-config flags alone"
    exit 1
fi
if ! LD_LIBRARY_PATH=$root$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} "$tmp/crawler" >"$tmp/run.log" 2>&1; then
    echo "FAIL: the crawler built against the installed library failed:"
    cat "$tmp/run.log"
    exit 1
fi
echo "ok: examples/crawler.c built with pkg-config alone, ran against the installed libraries"

if command -v man >/dev/null 2>&1; then
    for name in aj aj_evhttp aj_spawn aj_job_close aj_evhttp_shutdown; do
        if ! page=$(MANPATH=$root$mandir man -w "$name" 2>/dev/null); then
            echo "FAIL: man -w $name finds no page under $root$mandir"
            exit 1
        fi
        case $page in
        "$root$mandir"/*) echo "ok: man $name -> $page" ;;
        *) echo "FAIL: man -w $name -> $page, not the installed page"; exit 1 ;;
        esac
    done
else
    echo "man not found: installed pages not looked up"
fi
exit 0
