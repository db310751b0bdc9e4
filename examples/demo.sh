#!/bin/sh
# examples/demo.sh -- what `make demo` runs: examples/demo-server under a
# short real load, its /stats, and a graceful drain on SIGTERM.
#
#   examples/demo.sh [PATH/TO/demo-server]     (make demo passes it)
#
# Uses curl for single requests and a burst, ab (apache2-utils) for a
# sustained load; whichever is missing is skipped with a note.  Every step
# is bounded (curl --max-time, ab -s, bounded waits): about 10 s in all.
# Exit status 0 only if the server drained and exited 0.
set -eu

server=${1:-examples/demo-server}
[ -x "$server" ] || { echo "demo: $server is not built (run make)" >&2; exit 1; }

have() { command -v "$1" >/dev/null 2>&1; }
section() { printf '\n== %s\n' "$*"; }
show() { printf '$ %s\n' "$*"; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/aj-demo.XXXXXX")
pid=
cleanup() {
    [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || :
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# The server: default limits (16 jobs running, 32 pending), 2 s drain, on a
# port the kernel picks (-p 0); its first line says which.
"$server" -p 0 >"$tmp/server.log" 2>&1 &
pid=$!
port=
i=0
while [ $i -lt 50 ]; do
    port=$(sed -n 's|.*listening on http://127\.0\.0\.1:\([0-9]*\)/.*|\1|p' "$tmp/server.log")
    [ -n "$port" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
    i=$((i + 1))
done
if [ -z "$port" ]; then
    cat "$tmp/server.log"
    echo "demo: the server did not start" >&2
    exit 1
fi
url=http://127.0.0.1:$port
section "examples/demo-server: an evhttp server whose routes run as libaj jobs"
sed -n 1p "$tmp/server.log"

# curl with a time bound; prints the body (or -w output).
get() { curl -s --max-time 10 "$@"; }

# /stats as "key value" pairs, four to a line.
stats() {
    get "$url/stats" | tr -d '{}"' | tr ',' '\n' | sed 's/^ *//; s/^demo: //; s/: / /' |
        awk '{ printf "    %-16s %-8s", $1, $2; if (NR % 4 == 0) printf "\n" }
             END { if (NR % 4) printf "\n" }'
}

if have curl; then
    section "one request each: /hello answers at once, /slow waits on a timer"
    show "curl $url/hello"
    get "$url/hello"
    show "curl '$url/slow?ms=250'"
    get -w '    (HTTP %{http_code} after %{time_total} s)\n' "$url/slow?ms=250"

    # 80 clients at once, each holding a job for 500 ms: 16 run, 32 wait in
    # the queue, the rest are answered 503 + Retry-After at once (no job is
    # made for them).  As slots free up, later arrivals get in.
    section "burst: 80 clients at once on /slow?ms=500 (16 run, 32 queue, the rest are shed)"
    clients=
    i=0
    while [ $i -lt 80 ]; do
        get -o /dev/null -w '%{http_code}\n' "$url/slow?ms=500" >>"$tmp/burst" &
        clients="$clients $!"
        i=$((i + 1))
    done
    sleep 0.2
    show "curl -i $url/hello    # while the burst fills the scheduler"
    get -i "$url/hello" | tr -d '\r' | sed -n '1p; /^Retry-After/p' | sed 's/^/    /'
    show "curl $url/stats    # meanwhile"
    get "$url/stats" | sed 's/.*"size": \([0-9]*\), "active": \([0-9]*\), "pending": \([0-9]*\),.*"rejected": \([0-9]*\),.*/    size \1: active \2, pending \3; rejected so far \4/'
    wait $clients      # (a bare `wait` would wait for the server too)
    printf '    burst answers: '
    sort "$tmp/burst" | uniq -c | awk '{ printf "%s x HTTP %s   ", $1, $2 }'
    printf '\n'
else
    section "curl is not installed: skipping the single requests and the burst"
fi

if have ab; then
    # 20 keep-alive connections: more than the 16 slots, so jobs queue,
    # but the queue absorbs the overflow.  (ab does not back off on 503: a
    # load past the queue would be mostly instant 503s, as the burst shows.)
    section "sustained load: ab, 20 keep-alive connections, 2000 requests on /slow?ms=5"
    show "ab -k -c 20 -n 2000 '$url/slow?ms=5'"
    ab -k -q -s 10 -c 20 -n 2000 "$url/slow?ms=5" >"$tmp/ab.out" 2>&1 || :
    sed -n 's/^\(Complete requests\|Non-2xx responses\|Time taken for tests\|Requests per second\):/    &/p' \
        "$tmp/ab.out"
elif have curl; then
    section "sustained load: ab is not installed; 4 curl loops of 50 requests on /slow?ms=5"
    clients=
    for j in 1 2 3 4; do
        (
            i=0
            while [ $i -lt 50 ]; do
                get -o /dev/null -w '%{http_code}\n' "$url/slow?ms=5"
                i=$((i + 1))
            done
        ) >>"$tmp/loop" &
        clients="$clients $!"
    done
    wait $clients
    printf '    answers: '
    sort "$tmp/loop" | uniq -c | awk '{ printf "%s x HTTP %s   ", $1, $2 }'
    printf '\n'
else
    section "neither ab nor curl is installed: no load"
fi

if have curl; then
    section "GET /stats: the scheduler's counters (a plain evhttp route, answers even under load)"
    stats
fi

# Two requests in flight when SIGTERM comes: one finishes within the 2 s
# drain, the other would take 4 s, so the drain cancels it and its client
# gets 503.  A request after the signal finds the listener closed.
section "SIGTERM with /slow?ms=500 and /slow?ms=4000 in flight (drain: 2 s)"
clients=
if have curl; then
    get -o /dev/null -w '    /slow?ms=500   -> HTTP %{http_code} after %{time_total} s\n' \
        "$url/slow?ms=500" >"$tmp/short" &
    clients="$!"
    get -o /dev/null -w '    /slow?ms=4000  -> HTTP %{http_code} after %{time_total} s\n' \
        "$url/slow?ms=4000" >"$tmp/long" &
    clients="$clients $!"
    sleep 0.2
fi
show "kill -TERM $pid"
kill -TERM "$pid"
if have curl; then
    sleep 0.1
    code=$(get -o /dev/null -w '%{http_code}' "$url/hello" || :)
    printf '    new request after SIGTERM -> %s\n' \
        "$([ "$code" = 000 ] && echo 'connection refused (listener closed)' || echo "HTTP $code")"
fi
i=0
while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do
    sleep 0.1
    i=$((i + 1))
done
if kill -0 "$pid" 2>/dev/null; then
    cat "$tmp/server.log"
    echo "demo: the server did not exit within 10 s of SIGTERM" >&2
    exit 1
fi
rc=0
wait "$pid" || rc=$?
pid=
[ -z "$clients" ] || wait $clients
if have curl; then
    cat "$tmp/short" "$tmp/long"
fi
echo "    server output:"
sed -n '2,$s/^/    /p' "$tmp/server.log"
if [ $rc -ne 0 ]; then
    echo "demo: the server exited with status $rc" >&2
    exit 1
fi
printf '\ndemo: done (the server drained and exited 0)\n'
