#!/bin/sh
# doc/check-man.sh -- the man pages cover the API and render cleanly (run
# by `make check`).
#
#  1. Every function exported by include/aj/*.h (an AJ_EXPORT declaration)
#     has a page doc/NAME.3, and that page is in the installed list
#     (dist_man3_MANS), so `man NAME` works after `make install`.
#  2. A page is either real roff or a one-line `.so man3/TARGET.3` link to a
#     real page; either way the real page's NAME section lists the function
#     (so apropos and whatis find it).
#  3. Every function a NAME section lists exists in the headers (no page for
#     a function that was renamed or removed).
#  4. Every example in a page that is a complete program (it has `int
#     main(`) compiles with the project's warnings and -Werror.
#  5. Every installed page renders with `groff -man -ww -z` without a single
#     warning, `.so` links resolved as man(1) resolves them.  Without groff
#     this step cannot run: the test then SKIPs (77) once 1-4 passed.
set -u

top_builddir=${top_builddir:-.}
. "$top_builddir/doc/check-env" || exit 99
docdir=$abs_top_srcdir/doc
fail=0

# Function names, one per AJ_EXPORT declaration.
names=$(sed -n 's/^AJ_EXPORT[^(]*[ *]\(aj_[a-z0-9_]*\)(.*/\1/p' "$abs_top_srcdir"/include/aj/*.h | sort -u)
nexports=$(grep -h '^AJ_EXPORT' "$abs_top_srcdir"/include/aj/*.h | wc -l)
nnames=$(echo "$names" | grep -c .)
if [ "$nnames" -lt 1 ] || [ "$nnames" -ne "$nexports" ]; then
    echo "FAIL: $nexports AJ_EXPORT declarations but $nnames function names extracted"
    exit 1
fi

# The NAME section of a real page: the names before "\-".
name_section() {
    sed -n '/^\.SH NAME/,/^\.SH /p' "$1" | sed '1d;$d' | sed 's/\\-.*//' | tr ',' '\n' |
        sed 's/^[[:space:]]*//;s/[[:space:]]*$//;s/\\//g' | grep .
}

# The real page behind a page (itself, or the target of its .so line).
real_page() {
    target=$(sed -n '1s/^\.so man3\/\(.*\)$/\1/p' "$1")
    if [ -n "$target" ]; then
        echo "$docdir/$target"
    else
        echo "$1"
    fi
}

installed=" $(echo $doc_man_pages) "

# 1 and 2.
for name in $names; do
    page=$docdir/$name.3
    if [ ! -f "$page" ]; then
        echo "FAIL: $name has no man page (doc/$name.3)"
        fail=1
        continue
    fi
    case $installed in
    *" doc/$name.3 "*) ;;
    *) echo "FAIL: doc/$name.3 is not in dist_man3_MANS (doc/Makemodule.am)"; fail=1 ;;
    esac
    real=$(real_page "$page")
    if [ ! -f "$real" ] || head -n 1 "$real" | grep -q '^\.so'; then
        echo "FAIL: doc/$name.3 links to $real, which is not a real page"
        fail=1
        continue
    fi
    if ! name_section "$real" | grep -qx "$name"; then
        echo "FAIL: the NAME section of $(basename "$real") does not list $name"
        fail=1
    fi
done

# 3.
for page in $doc_man_pages; do
    page=$abs_top_srcdir/$page
    head -n 1 "$page" | grep -q '^\.so' && continue
    for listed in $(name_section "$page"); do
        case $listed in
        aj | aj_evhttp) continue ;;     # the overviews
        esac
        if ! echo "$names" | grep -qx "$listed"; then
            echo "FAIL: $(basename "$page") documents $listed, which no header declares"
            fail=1
        fi
    done
done

[ $fail = 0 ] || exit 1
echo "ok: $nnames functions, each with a page; $(echo $doc_man_pages | wc -w) pages installed"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/aj-man.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT

# 4. The .EX/.EE blocks with a main(), roff escapes undone.
for page in $doc_man_pages; do
    page=$abs_top_srcdir/$page
    head -n 1 "$page" | grep -q '^\.so' && continue
    name=$(basename "$page" .3)
    awk -v out="$tmp/$name" '/^\.EX/ { n++; f = out "-" n ".c"; next }
        /^\.EE/ { if (f != "") close(f); f = ""; next }
        f != "" && !/^\./ { print > f }' "$page"
    for ex in "$tmp/$name"-*.c; do
        [ -f "$ex" ] && grep -q '^int main(' "$ex" || continue
        sed 's/\\-/-/g; s/\\e/\\/g; s/\\&//g' "$ex" >"$ex.c"
        # shellcheck disable=SC2086
        if $CC $CPPFLAGS -I"$abs_top_srcdir/include" $LIBEVENT_EXTRA_CFLAGS $LIBEVENT_CORE_CFLAGS \
            $CFLAGS $WARN_CFLAGS -Werror -c "$ex.c" -o "$ex.o"; then
            echo "ok: the example program of $name(3) compiles"
        else
            echo "FAIL: the example program of $name(3) does not compile"
            fail=1
        fi
    done
done
[ $fail = 0 ] || exit 1

# 5.
if ! command -v groff >/dev/null 2>&1; then
    echo "SKIP: groff not found (apt-get install groff-base): pages not rendered"
    exit 77
fi
mkdir "$tmp/man3"
for page in $doc_man_pages; do
    cp "$abs_top_srcdir/$page" "$tmp/man3/"
done
for page in $doc_man_pages; do
    p=man3/$(basename "$page")
    # -ww: every warning; -z: no output, only diagnostics.  man(1) renders
    # for a terminal, so check the terminal devices.
    for dev in utf8 ascii; do
        warnings=$(cd "$tmp" && LC_ALL=C groff -man -ww -z -T$dev "$p" 2>&1)
        if [ -n "$warnings" ]; then
            echo "FAIL: $p (-T$dev):"
            echo "$warnings" | sed 's/^/    /'
            fail=1
        fi
    done
done
[ $fail = 0 ] && echo "ok: every page renders without warnings"
exit $fail
