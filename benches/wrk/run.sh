#!/usr/bin/env bash
# The issue's own measurement, outside the process: wrk (Debian package `wrk`) against a release
# `sts-broker serve --dev`, first `GET /healthz`, then `POST /api/v1/auth/github-oidc` with a
# fresh single-use OIDC token per request, fetched beforehand from the dev world's GitHub
# Actions-style token endpoint. The in-process benchmark (`cargo bench --bench load`) measures
# the same broker with its own HTTP clients, which cost more than wrk's and lower its /healthz.
#
#   benches/wrk/run.sh [seconds] [connections] [tokens]
#   PERF_OUT=perf.data benches/wrk/run.sh …   # also profile the broker during the exchanges
#   PERF_CG=dwarf PERF_FREQ=300 …             # perf's call-graph mode and sampling rate
#   BROKER_BIN=/path/to/sts-broker …          # measure that build (a "before") instead
#
# Tokens must outlast the run: once they are used up, every further request is refused and the
# ok/s figure is only tokens / seconds. The script says so when that happens.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-10}
connections=${2:-32}
tokens=${3:-100000}
threads=2
command -v wrk >/dev/null || { echo "wrk is needed (apt-get install wrk)"; exit 1; }
if [ -z "${BROKER_BIN:-}" ]; then
  cargo build --release --locked --quiet --bin sts-broker
  BROKER_BIN=target/release/sts-broker
fi
work=$(mktemp -d)
broker=
trap '[ -z "$broker" ] || kill "$broker" 2>/dev/null; rm -rf "$work"' EXIT

# Quiet logs: the access line of every request would be a measurable part of the work.
RUST_LOG=warn "$BROKER_BIN" serve --dev --listen 127.0.0.1:0 >"$work/banner" 2>/dev/null &
broker=$!
for _ in $(seq 1 120); do grep -q '/audit' "$work/banner" 2>/dev/null && break; sleep 0.5; done
url=$(awk '$1 == "broker" { print $2; exit }' "$work/banner")
eval "$(grep '^export ' "$work/banner")"
[ -n "$url" ] || { echo "serve --dev printed no broker URL"; cat "$work/banner"; exit 1; }

# Each token is single use and lives 5 minutes: fetch them now, by 8 curls at once (each on its
# own connection and file, so that no two answers interleave), then one thread's share per file.
fetchers=8
start=$(date +%s)
pids=()
for f in $(seq 1 "$fetchers"); do
  for _ in $(seq 1 $((tokens / fetchers))); do
    printf 'url = "%s&audience=atmos-pro.com"\n' "$ACTIONS_ID_TOKEN_REQUEST_URL"
  done >"$work/urls.$f"
  curl -s --cacert "$STS_CA_CERT" -H "Authorization: bearer $ACTIONS_ID_TOKEN_REQUEST_TOKEN" \
    -K "$work/urls.$f" -w '\n' >"$work/fetched.$f" &
  pids+=($!)
done
wait "${pids[@]}"
cat "$work"/fetched.* | sed -n 's/.*"value":"\([^"]*\)".*/\1/p' >"$work/all"
echo "fetched $(wc -l <"$work/all") OIDC tokens in $(( $(date +%s) - start )) s (not measured)"
for t in $(seq 0 $((threads - 1))); do
  awk -v n="$threads" -v k="$t" 'NR % n == k' "$work/all" >"$work/tokens.$t"
done

echo "--- GET /healthz, $connections connections, $threads threads, $seconds s"
wrk -t"$threads" -c"$connections" -d"${seconds}s" --latency "$url/healthz" | tee "$work/healthz"
echo "--- POST /api/v1/auth/github-oidc, $connections connections, $threads threads, $seconds s"
if [ -n "${PERF_OUT:-}" ]; then
  perf record -F "${PERF_FREQ:-999}" --call-graph "${PERF_CG:-fp}" -p "$broker" -o "$PERF_OUT" -- sleep "$seconds" 2>/dev/null &
  profiler=$!
fi
WRK_TOKENS="$work/tokens" wrk -t"$threads" -c"$connections" -d"${seconds}s" --latency \
  -s benches/wrk/exchange.lua "$url" | tee "$work/exchange"

[ -z "${profiler:-}" ] || wait "$profiler"
healthz=$(awk '/^Requests\/sec/ { print $2 }' "$work/healthz")
exchange=$(awk '/^exchange ok:/ { gsub(/[(]/, "", $6); print $6 }' "$work/exchange")
awk -v h="$healthz" -v e="$exchange" \
  'BEGIN { printf "\nhealthz %.0f req/s, exchange %.1f ok/s, ratio %.3f (goal >= 0.10)\n", h, e, e / h }'
# The broker's own peak resident memory over the whole run (the in-process benchmark can only
# report its whole process, clients and simulators included).
awk '/^VmHWM/ { printf "broker peak RSS (VmHWM): %.0f MB\n", $2 / 1024 }' "/proc/$broker/status"
