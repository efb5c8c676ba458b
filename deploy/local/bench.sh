#!/usr/bin/env bash
# Benchmarks POST /v1/check of the running local stack (start it with up.sh, a release
# build) and, in the same run for comparison, bare EVALSHA calls of the same check script
# with redis-benchmark against the same cluster; then, with wrk, the limiter against the
# fastify + rate-limiter-flexible service of deploy/local/baseline on the same cluster
# (wrk is installed with apt-get; the baseline needs node and npm, else it is skipped).
#
# Last, the bench's own generator (closed loop) spreads checks over BENCH_MANY_KEYS keys of
# the bench plan, taken in turn, limiter and baseline one after the other: one key
# measures batching, many keys each checked rarely measure a script call per check.
#
#   deploy/local/bench.sh    (BENCH_CONNECTIONS=50 BENCH_SECONDS=10
#                             BENCH_LOAD_FRACTIONS=0.1,0.3,0.5,0.7 BENCH_OPEN_CONNECTIONS=200
#                             BENCH_MANY_KEYS=200)
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)/lib.sh"

cd "$KM_ROOT"
km_settings
km_secrets quiet
limiter="http://$(km_client_addr "$KEYMETER_LIMITER_LISTEN")"
km_wait 5 curl -fsS -o /dev/null "$limiter/healthz" || km_die "no limiter at $limiter: run deploy/local/up.sh first"
key=$(km_admin_key bench '[{"name":"huge","algorithm":"token_bucket","limit":1000000000000,"window_ms":1000}]' "$KM_STATE/bench.env")

# The numbers mean little for a debug build of the limiter (KEYMETER_BUILD_PROFILE=dev).
build=unknown
if pid=$(km_service_pid limiter); then
	case $(readlink "/proc/$pid/exe") in
	*/target/release/*) build=release ;;
	*/target/debug/*) build="debug: run up.sh with KEYMETER_BUILD_PROFILE=release for numbers that mean anything" ;;
	esac
fi
km_log "bench: POST /v1/check through the limiter ($build build)"
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
	EVALSHA "$sha" 2 'bench:{tag}:credits' 'bench:{tag}:limit:__rand_int__' 0 0 0 1 token_bucket 1000000000000 1000 1000000000000 1 |
	tr '\r' '\n' | tail -n 1

# ---------------------------------------------------------------- wrk: limiter vs baseline
km_need_cmd wrk wrk
body=$(mktemp)
trap 'rm -f "$body"; [[ -n ${baseline_pid:-} ]] && kill "$baseline_pid" 2>/dev/null || true' EXIT
printf 'wrk.method = "POST"\nwrk.body = \x27{"key":"%s"}\x27\nwrk.headers["Content-Type"] = "application/json"\n' "$key" >"$body"
wrk_rate() { # url -> "<req/s> <p99>"
	wrk -t2 -c"${BENCH_CONNECTIONS:-50}" -d"${BENCH_SECONDS:-10}s" --latency -s "$body" "$1/v1/check" |
		awk '/Requests\/sec/ {r=$2} $1=="99%" {p=$2} END {print r, p}'
}
# many_keys_file N: a file of N keys of the bench plan, one a line. The keys are made once
# and kept in the stack's state (a new stack, or too few, makes them anew).
many_keys_file() {
	local n=$1 all="$KM_STATE/bench-keys.txt" plan_id
	if ! [[ -f $all && $(wc -l <"$all") -ge $n && $(km_peek "$(head -n 1 "$all")") == 200 ]]; then
		plan_id=$(km_admin_plan_id bench)
		km_log "bench: making $n keys of the bench plan" >&2
		# Raw keys, like bench.env: for this user only.
		(
			umask 077
			for ((i = 1; i <= n; i++)); do km_admin_new_key "$plan_id" bench "bench-$i"; done >"$all.new"
		)
		mv "$all.new" "$all"
		km_wait 10 km_peek_ok "$(tail -n 1 "$all")" || km_die "the limiter does not know the new bench keys yet"
	fi
	(umask 077 && head -n "$n" "$all" >"$KM_STATE/bench-keys-$n.txt")
	printf '%s\n' "$KM_STATE/bench-keys-$n.txt"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
many=${BENCH_MANY_KEYS:-200}
many_rate() { # url -> checks/s of a closed loop over the many keys
	env -u BENCH_OPEN_RATE BENCH_URL="$1" BENCH_KEYS_FILE="$keys_file" BENCH_LOAD_FRACTIONS='' \
		cargo bench -q -p limiter --bench check |
		sed -n 's/^closed loop[^:]*: \([0-9]*\) checks\/s.*/\1/p'
}

if command -v node >/dev/null && command -v npm >/dev/null; then
	(cd deploy/local/baseline && npm ci --no-audit --no-fund --silent >/dev/null)
	port=3987
	while km_port_open 127.0.0.1 "$port"; do port=$((port + 1)); done
	nodes=$(for i in "${!KM_REDIS_PORTS[@]}"; do printf '%s:%s,' "${KM_REDIS_HOSTS[i]}" "${KM_REDIS_PORTS[i]}"; done)
	REDIS_NODES=${nodes%,} PORT=$port node deploy/local/baseline/server.js >"$KM_LOGS/baseline.log" 2>&1 &
	baseline_pid=$!
	baseline="http://127.0.0.1:$port"
	km_wait 10 curl -fs -o /dev/null -X POST -H 'content-type: application/json' -d '{"key":"x"}' "$baseline/v1/check" ||
		km_die "the baseline did not start (log: $(km_rel "$KM_LOGS/baseline.log"))"
	km_log "bench: wrk -t2 -c${BENCH_CONNECTIONS:-50}, limiter and baseline in turn"
	read -r ours ours_p99 < <(wrk_rate "$limiter")
	read -r theirs theirs_p99 < <(wrk_rate "$baseline")
	km_log "limiter:  $ours req/s (p99 $ours_p99)"
	km_log "baseline: $theirs req/s (p99 $theirs_p99), fastify + rate-limiter-flexible"
	km_log "ratio limiter / baseline: $(ratio "$ours" "$theirs")"
	if ((many > 0)); then
		keys_file=$(many_keys_file "$many")
		km_log "bench: $many keys in turn, the bench's generator (closed loop), limiter then baseline"
		ours=$(many_rate "$limiter")
		theirs=$(many_rate "$baseline")
		km_log "limiter:  $ours checks/s over $many keys"
		km_log "baseline: $theirs checks/s over $many keys"
		km_log "ratio limiter / baseline: $(ratio "$ours" "$theirs")"
	fi
else
	read -r ours ours_p99 < <(wrk_rate "$limiter")
	km_log "limiter (wrk): $ours req/s (p99 $ours_p99); no node/npm, so no baseline"
	if ((many > 0)); then
		keys_file=$(many_keys_file "$many")
		km_log "limiter: $(many_rate "$limiter") checks/s over $many keys (the bench's generator)"
	fi
fi
