#!/usr/bin/env bash
# Customer 360 reads (GET /api/v1/profiles/{id}) against 100,000 profiles at rising
# rates, from the Redis cache and uncached (built from Postgres), with this machine's
# own limits measured in the same run: the gateway's trivial /healthz rate and Redis's
# GET rate. Figures and how to read them: docs/api.md. Not part of `just test`.
#
# Usage: bench/api/run.sh            (PROFILES=100000 SECONDS_PER_STEP=10 to change)
#
# Builds the api-gateway in release mode, creates a throw-away database
# (constintel_bench_api), seeds the profiles straight into Postgres (bench/api/seed.sql),
# starts the gateway on 127.0.0.1:18380 (BENCH_API_BIND) with a viewer API token, drives it with wrk
# (bench/api/c360.lua paces each connection to reach the target rate), and removes the
# database and its Redis keys again.
set -euo pipefail
cd "$(dirname "$0")/../.."
# The project's own tools (cmake for LightGBM, just) first on PATH, as `just` has them.
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
# The load generator and Redis's own benchmark, from Debian's packages.
command -v wrk >/dev/null || apt_install wrk
command -v redis-benchmark >/dev/null || apt_install redis-tools

profiles="${PROFILES:-100000}"
step="${SECONDS_PER_STEP:-10}"
db_name="constintel_bench_api"
admin_url="${BENCH_ADMIN_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export DATABASE_URL="${admin_url%/*}/$db_name"
export REDIS_URL="${BENCH_REDIS_URL:-redis://127.0.0.1:6379}"
export STREAM_PREFIX="bench-api:"
# Integration secrets are sealed at rest; a throw-away key for the throw-away database.
export INTEGRATION_SECRETS_KEY="${INTEGRATION_SECRETS_KEY:-$(head -c 32 /dev/urandom | base64)}"
export API_GATEWAY_BIND="${BENCH_API_BIND:-127.0.0.1:18380}"
export DATABASE_MAX_CONNECTIONS="${DATABASE_MAX_CONNECTIONS:-16}"
export DASHBOARD_DIR=/nonexistent
export LOG_FORMAT=json
export RUST_LOG="${RUST_LOG:-warn}"
base="http://$API_GATEWAY_BIND"
work="$(mktemp -d)"

redis_del_prefix() {
    redis-cli -u "$REDIS_URL" --scan --pattern "$1*" | xargs -r -n 1000 redis-cli -u "$REDIS_URL" unlink >/dev/null
}
cleanup() {
    [ -n "${gateway_pid:-}" ] && { kill "$gateway_pid" 2>/dev/null || true; wait "$gateway_pid" 2>/dev/null || true; }
    psql -q "$admin_url" -c "DROP DATABASE IF EXISTS $db_name WITH (FORCE)" >/dev/null 2>&1 || true
    redis_del_prefix "$STREAM_PREFIX" || true
    rm -rf "$work"
}
trap cleanup EXIT

cargo build --release -q -p api-gateway
psql -q "$admin_url" -c "DROP DATABASE IF EXISTS $db_name WITH (FORCE)" >/dev/null
psql -q "$admin_url" -c "CREATE DATABASE $db_name" >/dev/null
redis_del_prefix "$STREAM_PREFIX"

# The gateway applies the migrations at start-up.
target/release/api-gateway >"$work/gateway.log" 2>&1 &
gateway_pid=$!
for _ in $(seq 1 200); do
    curl -fs "$base/readyz" >/dev/null && break
    sleep 0.1
done
# Ready, and it is ours (not another process already on that port).
if ! curl -fs "$base/readyz" >/dev/null || ! kill -0 "$gateway_pid" 2>/dev/null; then
    cat "$work/gateway.log"
    exit 1
fi

echo "seeding $profiles profiles..."
psql -q "$DATABASE_URL" -v profiles="$profiles" -f bench/api/seed.sql
psql -qAt "$DATABASE_URL" -c "SELECT id FROM customer_profile ORDER BY random()" >"$work/ids.txt"
token="ci_tok_bench$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
token_sha=$(printf '%s' "$token" | sha256sum | cut -d' ' -f1)
psql -q "$DATABASE_URL" -c "INSERT INTO api_tokens (id, name, token_sha256, prefix, role) \
    VALUES (gen_random_uuid(), 'bench', decode('$token_sha', 'hex'), 'ci_tok_bench', 'viewer')"
export IDS="$work/ids.txt" TOKEN="$token"

result() { grep '^RESULT' | sed 's/^RESULT //'; }
field() { sed -n "s/.*$1=\([^ ]*\).*/\1/p"; }

# wrk -c connections for a target rate: enough that each one waits a while between
# requests (so the pacing, not the latency, sets the rate).
run_c360() { # mode rate offset threads
    local mode=$1 rate=$2 offset=$3 threads=$4 conns
    conns=$(( rate > 0 ? (rate / 50 > 8 ? rate / 50 : 8) : 32 ))
    MODE=$mode RATE=$rate OFFSET=$offset THREADS=$threads CONNECTIONS=$conns \
        wrk -t"$threads" -c"$conns" -d"${step}s" -s bench/api/c360.lua "$base" | result
}

echo
echo "== this machine's limits (same run)"
healthz=$(wrk -t2 -c32 -d"${step}s" -s bench/api/plain.lua "$base/healthz" | result)
echo "healthz (closed loop, 32 connections): $healthz"
redis_get=$(redis-cli -u "$REDIS_URL" set "${STREAM_PREFIX}bench-doc" "$(head -c 2500 /dev/zero | tr '\0' x)" >/dev/null;
    redis-benchmark -q -n 200000 -c 32 -t get 2>/dev/null | tr '\r' '\n' | sed -n 's/^GET: \([0-9.]*\) requests per second.*/\1/p' | tail -1)
echo "redis GET (redis-benchmark, 32 clients): $redis_get /s"

echo
echo "== uncached: every read a cache miss (built from Postgres, then cached)"
offset=0
declare -A uncached
for rate in 250 500 1000 2000; do
    r=$(run_c360 seq "$rate" "$offset" 1)
    uncached[$rate]="$r"
    echo "target $rate/s: $r"
    offset=$(( offset + rate * step * 12 / 10 ))
done
r=$(run_c360 seq 0 "$offset" 2)
uncached_max="$r"
echo "max (closed loop): $r"
done_reqs=$(echo "$r" | field requests)
offset=$(( offset + done_reqs ))

# Fill the cache for every profile, as the identity merger would have. The uncached steps
# read fewer ids than their targets (the uncached path saturates), so sweep all ids from
# the first: cached ones answer fast, the rest get cached. Until at least 99% are.
rate=$(echo "$uncached_max" | field rate | cut -d. -f1)
count_cached() { redis-cli -u "$REDIS_URL" --scan --pattern "${STREAM_PREFIX}c360:*" | wc -l; }
for _ in 1 2 3; do
    cached_keys=$(count_cached)
    missing=$(( profiles - cached_keys ))
    [ "$missing" -le $(( profiles / 100 )) ] && break
    secs=$(( missing * 13 / 10 / (rate > 0 ? rate : 100) + 10 ))
    echo "warming the cache: $missing profiles not cached yet (~${secs}s)..."
    MODE=seq RATE=0 OFFSET=0 THREADS=2 CONNECTIONS=32 \
        wrk -t2 -c32 -d"${secs}s" -s bench/api/c360.lua "$base" >/dev/null
done
cached_keys=$(count_cached)
echo "cached documents: $cached_keys of $profiles"

echo
echo "== cached: reads served from Redis"
declare -A cached
for rate in 250 500 1000 2000 3000; do
    r=$(run_c360 random "$rate" 0 1)
    cached[$rate]="$r"
    echo "target $rate/s: $r"
done
cached_max=$(run_c360 random 0 0 2)
echo "max (closed loop): $cached_max"

echo
echo "== summary"
hz=$(echo "$healthz" | field rate)
cmax=$(echo "$cached_max" | field rate)
umax=$(echo "$uncached_max" | field rate)
printf "%-28s %10s %10s %10s %8s\n" "run" "achieved/s" "p50 ms" "p99 ms" "errors"
for rate in 250 500 1000 2000; do
    r=${uncached[$rate]}
    printf "%-28s %10s %10s %10s %8s\n" "uncached @ $rate/s" "$(echo "$r" | field rate)" "$(echo "$r" | field p50_ms)" "$(echo "$r" | field p99_ms)" "$(echo "$r" | field errors)"
done
for rate in 250 500 1000 2000 3000; do
    r=${cached[$rate]}
    printf "%-28s %10s %10s %10s %8s\n" "cached @ $rate/s" "$(echo "$r" | field rate)" "$(echo "$r" | field p50_ms)" "$(echo "$r" | field p99_ms)" "$(echo "$r" | field errors)"
done
awk -v hz="$hz" -v c="$cmax" -v u="$umax" -v rg="$redis_get" 'BEGIN {
    printf "max rates: /healthz %.0f/s, cached C360 %.0f/s (%.2f of /healthz), uncached C360 %.0f/s (%.2f of /healthz); redis GET %.0f/s\n",
        hz, c, c / hz, u, u / hz, rg }'
