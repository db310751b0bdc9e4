#!/bin/sh
# doc/check-guide.sh -- every C block of doc/guide.md compiles (run by
# `make check`; a block that stops compiling fails it).
#
# Each ```c block (fence at the start of a line) is checked.  HTML comments
# on the lines right before the fence (invisible when the guide is rendered)
# say how:
#
#   <!-- quote: examples/cancel-states.c -->
#       The block is an excerpt: it must appear verbatim, as consecutive
#       whole lines, in that file (relative to the source tree).  The file
#       itself is compiled and run by `make check`.
#   <!-- unit: NAME -->
#       The block belongs to translation unit NAME; the blocks of a unit are
#       compiled together, in order.  Without it a block is a unit alone.
#   <!-- body: PARAMETERS -->
#       The block is statements, not declarations: it is compiled as the body
#       of `static void guide_body_N(PARAMETERS) { ... }`, so a fragment can
#       use `base`, `s`, `job`... as the text around it describes them.
#
# Every unit starts with doc/guide-prelude.h (the includes the guide states
# once at its top) and is compiled with the project's warnings and -Werror.
# A unit that defines `int main(` is linked against the libraries of this
# build and run; it must exit 0 within 60 s (under valgrind when `make
# check-valgrind` runs it).  Errors point at guide.md lines (#line).
set -u

top_builddir=${top_builddir:-.}
. "$top_builddir/doc/check-env" || exit 99
guide=$abs_top_srcdir/doc/guide.md
tmp=$(mktemp -d "${TMPDIR:-/tmp}/aj-guide.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
fail=0

compile() {     # compile UNIT.c [extra flags...]: 0 if it compiles cleanly
    src=$1
    shift
    # shellcheck disable=SC2086
    $CC $CPPFLAGS -I"$abs_top_srcdir/include" -I"$abs_top_srcdir/doc" \
        $LIBEVENT_EXTRA_CFLAGS $LIBEVENT_CORE_CFLAGS $CFLAGS $WARN_CFLAGS \
        -Wno-unused-function -Wno-unused-parameter -Werror "$@" \
        -c "$src" -o "${src%.c}.o"
}

link_and_run() {    # link_and_run UNIT: 0 if it links, runs and exits 0
    obj=$1.o
    exe=$1.run
    # shellcheck disable=SC2086
    $LIBTOOL --quiet --mode=link $CC $CFLAGS $LDFLAGS -no-install -o "$exe" "$obj" \
        "$abs_top_builddir/evhttp/libaj_evhttp.la" "$abs_top_builddir/lib/libaj.la" \
        $LIBEVENT_EXTRA_LIBS $LIBEVENT_CORE_LIBS $LIBS || return 1
    run=
    command -v timeout >/dev/null 2>&1 && run="timeout 60"
    # Under `make check-valgrind` (AJ_UNDER_VALGRIND=1) the programs run
    # under memcheck too: any error or leak fails them.
    if [ "${AJ_UNDER_VALGRIND:-0}" = 1 ] && [ -n "${VALGRIND:-}" ] && [ "$VALGRIND" != no ]; then
        run="$run $VALGRIND --quiet --leak-check=full --show-leak-kinds=definite,indirect,possible"
        run="$run --errors-for-leak-kinds=definite,indirect,possible --error-exitcode=99"
    fi
    # shellcheck disable=SC2086
    (cd "$tmp" && $run "$exe" >"$exe.out" 2>&1)
    rc=$?
    sed 's/^/    | /' "$exe.out"
    return $rc
}

# 0. The harness itself can fail: a broken block must not compile.
printf '#include "guide-prelude.h"\nint broken(void) { return aj_no_such_function(); }\n' >"$tmp/selftest.c"
if compile "$tmp/selftest.c" 2>/dev/null; then
    echo "FAIL: the harness compiled a block that calls an undeclared function"
    exit 1
fi

# 1. Split the guide into units and quotes.
awk -v out="$tmp" '
function flush_directives() { unit = ""; body = ""; quote = ""; ndir = 0 }
BEGIN { n = 0; infence = 0; flush_directives() }
infence == 0 && /^<!-- *unit: .* -->[ \t]*$/ {
    s = $0; sub(/^<!-- *unit: */, "", s); sub(/ *-->[ \t]*$/, "", s); unit = s; ndir++; next }
infence == 0 && /^<!-- *body: .* -->[ \t]*$/ {
    s = $0; sub(/^<!-- *body: */, "", s); sub(/ *-->[ \t]*$/, "", s); body = s; ndir++; next }
infence == 0 && /^<!-- *quote: .* -->[ \t]*$/ {
    s = $0; sub(/^<!-- *quote: */, "", s); sub(/ *-->[ \t]*$/, "", s); quote = s; ndir++; next }
infence == 0 && /^```c[ \t]*$/ {
    infence = 1; n++; start = NR + 1
    if (quote != "") {
        qfile = out "/quote-" n ".txt"
        print n, start, quote >> (out "/quotes.list")
        mode = "quote"
    } else {
        name = unit != "" ? unit : ("block-" n)
        ufile = out "/unit-" name ".c"
        if (!(name in seen)) {
            seen[name] = 1
            order[++nunits] = name
            print "#include \"guide-prelude.h\"" > ufile
        }
        if (body != "")
            printf "static void guide_body_%d(%s)\n{\n", n, body >> ufile
        printf "#line %d \"doc/guide.md\"\n", start >> ufile
        mode = body != "" ? "body" : "code"
    }
    next
}
infence == 1 && /^```[ \t]*$/ {
    infence = 0
    if (mode == "body")
        print "}" >> ufile
    if (mode == "quote")
        close(qfile)
    else
        close(ufile)
    flush_directives()
    next
}
infence == 1 {
    if (mode == "quote") print > qfile; else print >> ufile
    next
}
{ flush_directives() }
END {
    for (i = 1; i <= nunits; i++) print order[i] > (out "/units.list")
    print n > (out "/count")
    if (infence) { print "unterminated ```c block" > "/dev/stderr"; exit 1 }
}' "$guide" || exit 99

blocks=$(cat "$tmp/count")
fences=$(grep -c '^```c[[:space:]]*$' "$guide")
if [ "$blocks" != "$fences" ] || [ "$blocks" -lt 1 ]; then
    echo "FAIL: $fences C blocks in the guide, $blocks extracted"
    exit 1
fi
echo "doc/guide.md: $blocks C blocks"

# 2. Quotes: verbatim excerpts of files that make check compiles.
if [ -f "$tmp/quotes.list" ]; then
    while read -r n line file; do
        if [ ! -f "$abs_top_srcdir/$file" ]; then
            echo "FAIL: guide.md:$line: quoted file $file does not exist"
            fail=1
            continue
        fi
        if awk 'NR == FNR { q[++m] = $0; next }
                { f[++k] = $0 }
                END {
                    for (i = 1; i + m - 1 <= k; i++) {
                        for (j = 1; j <= m && f[i + j - 1] == q[j]; j++) ;
                        if (j > m) exit 0
                    }
                    exit 1
                }' "$tmp/quote-$n.txt" "$abs_top_srcdir/$file"; then
            echo "ok: guide.md:$line quotes $file verbatim"
        else
            echo "FAIL: guide.md:$line: the block is no longer a verbatim excerpt of $file"
            fail=1
        fi
    done <"$tmp/quotes.list"
fi

# 3. Units: compile; link and run those with a main().
if [ -f "$tmp/units.list" ]; then
    while read -r name; do
        src=$tmp/unit-$name.c
        if ! compile "$src"; then
            echo "FAIL: unit $name does not compile"
            fail=1
            continue
        fi
        if grep -q '^int main(' "$src"; then
            if link_and_run "$tmp/unit-$name"; then
                echo "ok: unit $name compiles, runs and exits 0"
            else
                echo "FAIL: unit $name: link or run failed"
                fail=1
            fi
        else
            echo "ok: unit $name compiles"
        fi
    done <"$tmp/units.list"
fi

exit $fail
