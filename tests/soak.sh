#!/bin/sh
# tests/soak.sh -- steady load, flat memory (issue 6).
#
#   tests/soak.sh BUILD_DIR SECONDS      e.g. tests/soak.sh _build 60
#
# Starts examples/demo-server (a libaj_evhttp server: atomic routes, a
# background job per request, a small scheduler that sheds with 503) on an
# ephemeral port, holds a steady load on it for SECONDS with wrk (ab -k when
# wrk is missing), and samples the server's RSS (VmRSS in /proc/PID/status)
# once a second.  Memory is flat if the last sample is at most 10% above the
# first one taken after the warm-up (10% of the run, at least 1 s).  Then
# SIGTERM: the server must drain and exit 0.  Exit status 0 = PASS.
#
# Not part of `make check` (it is long); .ci/run calls it with 60 s.
# A short run by hand: tests/soak.sh _build 5
set -eu

build=${1:-_build}
secs=${2:-60}
case $secs in
'' | *[!0-9]*) echo "usage: $0 BUILD_DIR SECONDS" >&2; exit 2 ;;
esac
[ "$secs" -ge 2 ] || secs=2
limit_pct=10                  # fail if last RSS > first RSS + 10%
warm=$((secs / 10))           # first sample after 10% of the run
[ "$warm" -ge 1 ] || warm=1

say() { printf 'soak: %s\n' "$*"; }
fail() { say "FAIL: $*"; exit 1; }

# The server: built by a plain `make`; make sure it is up to date.
[ -f "$build/Makefile" ] || fail "no build in $build (run ./build.sh first)"
make -C "$build" -s examples/demo-server >/dev/null || fail "cannot build examples/demo-server"
server=$build/examples/demo-server
[ -x "$server" ] || fail "$server is missing"

# The load tool: wrk, else ab.
if command -v wrk >/dev/null 2>&1; then
    tool=wrk
elif command -v ab >/dev/null 2>&1; then
    tool=ab
else
    fail "neither wrk nor ab is installed (apt-get install wrk apache2-utils)"
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/aj-soak.XXXXXX")
pid=
loadpid=
cleanup() {
    [ -n "$loadpid" ] && kill "$loadpid" 2>/dev/null || :
    [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || :
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# 1. Start the server on a free port and read which one from its stdout.
#    Its own small limits (16 running, 32 pending): the load below is more
#    than that, so the server both runs jobs and sheds with 503.
"$server" -p 0 >"$tmp/server.log" 2>&1 &
pid=$!
port=
i=0
while [ $i -lt 100 ]; do
    port=$(sed -n 's|.*listening on http://127\.0\.0\.1:\([0-9]*\)/.*|\1|p' "$tmp/server.log")
    [ -n "$port" ] && break
    kill -0 "$pid" 2>/dev/null || { cat "$tmp/server.log"; fail "the server died at start"; }
    sleep 0.1
    i=$((i + 1))
done
[ -n "$port" ] || fail "the server did not say its port"
url=http://127.0.0.1:$port

rss() { sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\).*/\1/p' "/proc/$pid/status" 2>/dev/null; }
[ -n "$(rss)" ] || fail "cannot read VmRSS from /proc/$pid/status (Linux only)"

# 2. Steady load for $secs seconds.  wrk mixes the routes: /hello (a job
#    that answers at once) and /slow with short and longer naps (jobs that
#    wait on a timer and hold their request).  64 connections are more than
#    the scheduler takes, so some requests are shed with 503 + Retry-After;
#    like a polite client, a connection that got 503 waits 100 ms (not the
#    full second Retry-After asks for) before its next request.  Both paths,
#    jobs and shedding, thus run all along.  ab cannot back off (a load
#    past the queue would be almost all instant 503s), so it keeps 24
#    keep-alive connections on /slow?ms=5: jobs queue, few or none are shed.
if [ $tool = wrk ]; then
    cat >"$tmp/mix.lua" <<'EOF'
local paths = { "/hello", "/slow?ms=1", "/slow?ms=5", "/hello", "/slow?ms=20" }
local i, backoffs = 0, 0
request = function()
    i = i + 1
    return wrk.format("GET", paths[i % #paths + 1])
end
response = function(status, headers, body)
    if status == 503 then backoffs = backoffs + 1 end
end
delay = function()
    if backoffs > 0 then
        backoffs = backoffs - 1
        return 100
    end
    return 0
end
EOF
    say "demo-server (pid $pid) on 127.0.0.1:$port; wrk -t1 -c64 for $secs s" \
        "(mixed /hello and /slow?ms=1,5,20; 100 ms back-off after a 503)"
    wrk -t1 -c64 -d"${secs}s" -s "$tmp/mix.lua" "$url/" >"$tmp/load.out" 2>&1 &
else
    say "demo-server (pid $pid) on 127.0.0.1:$port; wrk missing: ab -k -c24 for $secs s" \
        "(GET /slow?ms=5)"
    ab -k -r -q -c 24 -t "$secs" -n 100000000 "$url/slow?ms=5" >"$tmp/load.out" 2>&1 &
fi
loadpid=$!

# 3. Sample RSS once a second while the load runs.
start=$(date +%s)
first=
first_t=
last=
last_t=
next_print=$warm
step=$(((secs + 9) / 10))
while kill -0 "$loadpid" 2>/dev/null; do
    sleep 1
    kill -0 "$pid" 2>/dev/null || fail "the server died under load"
    kill -0 "$loadpid" 2>/dev/null || break
    t=$(($(date +%s) - start))
    r=$(rss)
    [ -n "$r" ] || continue
    [ "$t" -ge "$warm" ] || continue
    if [ -z "$first" ]; then
        first=$r
        first_t=$t
    fi
    last=$r
    last_t=$t
    if [ "$t" -ge "$next_print" ]; then
        say "$(printf '%4d s  RSS %6d kB' "$t" "$r")"
        next_print=$((t + step))
    fi
done
status=0
wait "$loadpid" || status=$?
loadpid=
[ $status -eq 0 ] || { cat "$tmp/load.out"; fail "$tool exited with status $status"; }
[ -n "$first" ] && [ -n "$last" ] || fail "no RSS sample after the warm-up ($warm s)"
say "$(printf '%4d s  RSS %6d kB  (last sample under load)' "$last_t" "$last")"

# 4. What the load saw, and what the server counted.
if [ $tool = wrk ]; then
    requests=$(sed -n 's/^ *\([0-9]*\) requests in .*/\1/p' "$tmp/load.out")
    non2xx=$(sed -n 's/^ *Non-2xx or 3xx responses: *\([0-9]*\).*/\1/p' "$tmp/load.out")
    errors=$(sed -n 's/^ *Socket errors: *\(.*\)/\1/p' "$tmp/load.out")
    rps=$(sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' "$tmp/load.out")
else
    requests=$(sed -n 's/^Complete requests: *\([0-9]*\).*/\1/p' "$tmp/load.out")
    non2xx=$(sed -n 's/^Non-2xx responses: *\([0-9]*\).*/\1/p' "$tmp/load.out")
    errors=
    rps=$(sed -n 's/^Requests per second: *\([0-9.]*\).*/\1/p' "$tmp/load.out")
fi
[ -n "$requests" ] || { cat "$tmp/load.out"; fail "cannot read the request count from $tool"; }
say "load: $requests requests in $secs s (${rps:-?}/s), ${non2xx:-0} non-2xx (503 shed)${errors:+, socket errors: $errors}"
[ "$requests" -gt 0 ] || fail "no request was served"
[ "${non2xx:-0}" -lt "$requests" ] || fail "every request failed"
if command -v curl >/dev/null 2>&1; then
    say "server /stats: $(curl -s --max-time 5 "$url/stats" || echo unavailable)"
fi

# 5. The verdict on memory.
growth=$(((last - first) * 1000 / first))     # per mille
sign=+
[ $growth -ge 0 ] || { sign=-; growth=$((-growth)); }
say "RSS first $first kB (at $first_t s), last $last kB (at $last_t s):" \
    "$sign$((growth / 10)).$((growth % 10))% (limit +$limit_pct%)"
verdict=PASS
if [ $((last * 100)) -gt $((first * (100 + limit_pct))) ]; then
    verdict=FAIL
fi

# 6. SIGTERM: the server drains and must exit 0 (bounded wait).
kill -TERM "$pid"
i=0
while kill -0 "$pid" 2>/dev/null && [ $i -lt 150 ]; do
    sleep 0.1
    i=$((i + 1))
done
if kill -0 "$pid" 2>/dev/null; then
    cat "$tmp/server.log"
    fail "the server did not exit within 15 s of SIGTERM"
fi
rc=0
wait "$pid" || rc=$?
pid=
sed -n 's/^demo-server: \(SIG.*\|drained.*\|final stats.*\|every job.*\|counters.*\)/soak: server: \1/p' \
    "$tmp/server.log"
if [ $rc -ne 0 ]; then
    cat "$tmp/server.log"
    fail "the server exited with status $rc after SIGTERM"
fi
grep -q '^demo-server: every job accounted for' "$tmp/server.log" ||
    fail "the scheduler's counters do not balance (spawned != succeeded + failed + cancelled)"
say "SIGTERM: the server drained and exited 0"

if [ $verdict = FAIL ]; then
    fail "RSS grew more than $limit_pct% under steady load ($first kB -> $last kB)"
fi
say "PASS: memory flat under steady load"
