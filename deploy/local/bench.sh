#!/usr/bin/env bash
# Benchmarks POST /v1/check of the running local stack (start it with up.sh, a release
# build) and, in the same run for comparison, bare EVALSHA calls of the same check script
# with redis-benchmark against the same cluster.
#
#   deploy/local/bench.sh    (BENCH_CONNECTIONS=50 BENCH_SECONDS=10 BENCH_LOAD_FRACTION=0.7)
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)/lib.sh"

cd "$KM_ROOT"
km_settings
km_secrets quiet
limiter="http://$(km_client_addr "$KEYMETER_LIMITER_LISTEN")"
km_wait 5 curl -fsS -o /dev/null "$limiter/healthz" || km_die "no limiter at $limiter: run deploy/local/up.sh first"
key=$(km_admin_key bench '[{"name":"huge","algorithm":"token_bucket","limit":1000000000000,"window_ms":1000}]' "$KM_STATE/bench.env")

km_log "bench: POST /v1/check through the limiter (release build)"
BENCH_URL=$limiter BENCH_KEY=$key cargo bench -q -p limiter --bench check

host=${KM_REDIS_HOSTS[0]}
port=${KM_REDIS_PORTS[0]}
script=crates/storage/src/redis_cluster/lua/check.lua
# Load it on every master (the script starts with "--", which `--cluster call` reads as a flag).
for master in $(redis-cli -h "$host" -p "$port" cluster nodes | awk '/master/ && !/fail/ {split($2, a, "@"); print a[1]}'); do
	redis-cli -h "${master%:*}" -p "${master##*:}" -x SCRIPT LOAD <"$script" >/dev/null
done
sha=$(sha1sum "$script" | cut -d' ' -f1)
km_log "bench: bare EVALSHA of the same script, redis-benchmark --cluster -c ${BENCH_CONNECTIONS:-50}"
redis-benchmark -h "$host" -p "$port" --cluster -c "${BENCH_CONNECTIONS:-50}" -n 300000 -r 100000 -q \
	EVALSHA "$sha" 2 'bench:{tag}:credits' 'bench:{tag}:limit:__rand_int__' 1 0 0 0 1 token_bucket 1000000000000 1000 1000000000000 |
	tr '\r' '\n' | tail -n 1
