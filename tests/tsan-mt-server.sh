#!/bin/sh
# tests/tsan-mt-server.sh BUILD_DIR [SECONDS] -- examples/mt-server under
# load, for the ThreadSanitizer build (.ci/run): 4 threads, each with its
# own base, evhttp and scheduler, on an ephemeral port of 127.0.0.1; wrk
# (or ab) loads it for SECONDS (default 10); SIGTERM shuts it down.  Fails
# if the server does not come up, a load tool fails, the server exits
# non-zero, or ThreadSanitizer reports anything (TSAN_OPTIONS exitcode).
set -eu
build=${1:?usage: $0 BUILD_DIR [SECONDS]}
secs=${2:-10}
out=$(mktemp)
trap 'rm -f "$out"; [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null || true' EXIT

TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:exitcode=66} \
    "$build/examples/mt-server" --serve 0 4 >"$out" 2>&1 &
pid=$!
port=
i=0
while [ $i -lt 600 ] && [ -z "$port" ]; do      # up to 60 s: TSan is slow
    port=$(sed -n 's|^http://127.0.0.1:\([0-9]*\)/.*|\1|p' "$out")
    kill -0 "$pid" 2>/dev/null || break
    [ -n "$port" ] || sleep 0.1
    i=$((i + 1))
done
if [ -z "$port" ]; then
    echo "tsan-mt-server: the server did not come up"; cat "$out"; exit 1
fi
echo "tsan-mt-server: port $port, load for ${secs}s"
if command -v wrk >/dev/null 2>&1; then
    wrk -t2 -c32 -d"${secs}s" "http://127.0.0.1:$port/" || { echo "wrk failed"; exit 1; }
else
    ab -q -c 32 -t "$secs" -n 1000000 "http://127.0.0.1:$port/" >/dev/null || { echo "ab failed"; exit 1; }
fi
kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
pid=
cat "$out"
if [ "$rc" -ne 0 ] || grep -q "ThreadSanitizer" "$out"; then
    echo "tsan-mt-server: FAILED (exit $rc)"; exit 1
fi
echo "tsan-mt-server: clean"
