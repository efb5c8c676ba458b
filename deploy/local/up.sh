#!/usr/bin/env bash
# Start the keymeter local stack: PostgreSQL, a 6-node Redis Cluster, RabbitMQ, then (unless
# --stores-only) build, migrate and start key-admin, limiter and usage-ingest.
# Servers already answering at the configured addresses are used as they are; the others
# are started privately with their state in .local/stack-<tag>/. Idempotent.
#
#   deploy/local/up.sh [--stores-only]
#
# Settings (environment): KEYMETER_DATABASE_URL, KEYMETER_REDIS_NODES, KEYMETER_AMQP_URL,
# KEYMETER_ADMIN_LISTEN, KEYMETER_LIMITER_LISTEN, KEYMETER_INGEST_LISTEN, KEYMETER_PEPPER,
# KEYMETER_BOOTSTRAP_ADMIN_TOKEN, KEYMETER_BUILD_PROFILE (release|dev),
# KEYMETER_USE_DOCKER=1 (use docker compose when a Docker engine answers).
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)/lib.sh"

stores_only=0
for arg in "$@"; do
	case $arg in
	--stores-only) stores_only=1 ;;
	-h | --help)
		sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*) km_die "unknown argument '$arg' (usage: up.sh [--stores-only])" ;;
	esac
done

cd "$KM_ROOT"
km_settings
km_lock
km_state_init
km_log "stack: $(km_rel "$KM_STATE")"
km_secrets verbose

# ---------------------------------------------------------------- docker compose path
if km_docker_wanted; then
	if ((stores_only)); then
		km_warn "--stores-only with KEYMETER_USE_DOCKER=1: the compose stores are reachable only inside the compose network; using local servers"
	else
		km_log "docker: docker compose up -d --build"
		km_compose up -d --build 9>&-
		km_record_add docker compose
		for name in "${KM_SERVICES[@]}"; do
			case $name in
			key-admin) url=http://127.0.0.1:8080 ;;
			limiter) url=http://127.0.0.1:8081 ;;
			usage-ingest) url=http://127.0.0.1:8082 ;;
			esac
			if ! km_wait 60 curl -fsS --max-time 2 -o /dev/null "$url/healthz"; then
				km_compose logs --tail 30 "$name" >&2 || true
				km_die "$name did not answer $url/healthz within 60 s"
			fi
			km_log "$name: $url (docker compose logs $name)"
		done
		km_log "secrets: $(km_rel "$KM_SECRETS_FILE")"
		"$KM_LIB_DIR/demo.sh"
		exit 0
	fi
fi

# ---------------------------------------------------------------- stores
km_postgres_up
km_redis_up
km_rabbit_up

if ((stores_only)); then
	km_log "stores are up (state in $(km_rel "$KM_STATE"))"
	exit 0
fi

# ---------------------------------------------------------------- services
km_need_cmd curl curl
command -v cargo >/dev/null || km_die "cargo not found (install Rust with rustup)"
km_build_deps

build_flags=(--workspace --bins)
[[ $KEYMETER_BUILD_PROFILE == release ]] && build_flags+=(--release)
km_log "build: cargo build ${build_flags[*]}"
cargo build "${build_flags[@]}"
bindir="${CARGO_TARGET_DIR:-$KM_ROOT/target}/$KM_PROFILE_DIR"
[[ $bindir == /* ]] || bindir="$KM_ROOT/$bindir"
for name in "${KM_SERVICES[@]}"; do
	[[ -x $bindir/$name ]] || km_die "$bindir/$name was not built"
done

km_log "migrate: key-admin migrate"
"$bindir/key-admin" migrate >"$KM_LOGS/migrate.log" 2>&1 || {
	tail -n 30 "$KM_LOGS/migrate.log" >&2
	km_die "key-admin migrate failed (log: $(km_rel "$KM_LOGS/migrate.log"))"
}

kept=0
healthy() { curl -fsS --max-time 1 -o /dev/null "http://$1/healthz"; }

for name in "${KM_SERVICES[@]}"; do
	listen=$(km_service_listen "$name")
	addr=$(km_client_addr "$listen")
	log="$KM_LOGS/$name.log"
	pidfile="$KM_PIDS/$name.pid"
	if pid=$(km_service_pid "$name"); then
		how="already running"
		kept=1
	else
		how=started
		km_parse_hostport "$addr"
		if km_port_open "$KM_H" "$KM_P"; then
			km_die "$name: $listen is already taken by a process this stack did not start"
		fi
		rm -f "$pidfile"
		printf '=== %s: up.sh starts %s serve\n' "$(date -u +%FT%TZ)" "$name" >>"$log"
		# New session (a later Ctrl-C in this terminal does not reach it); the pid is
		# written by the shell that then execs the binary, so it is the service's own.
		# shellcheck disable=SC2016 # expanded by the inner bash
		setsid bash -c 'echo $$ >"$1"; exec nohup "$2" serve' _ "$pidfile" "$bindir/$name" \
			>>"$log" 2>&1 </dev/null 9>&- &
		km_wait 5 test -s "$pidfile" || km_die "$name: no pid file"
		pid=$(km_pidfile_pid "$pidfile")
	fi
	deadline=$((SECONDS + 30))
	until healthy "$addr"; do
		if ! kill -0 "$pid" 2>/dev/null || ((SECONDS >= deadline)); then
			km_warn "$name did not answer http://$addr/healthz; last lines of $(km_rel "$log"):"
			tail -n 30 "$log" >&2 || true
			exit 1
		fi
		sleep 0.5
	done
	km_log "$name: $how on http://$addr (pid $pid, log $(km_rel "$log"))"
done

((kept == 0)) || km_log "note: services already running were left as they are; down.sh then up.sh restarts them with a new build"
km_log "logs: $(km_rel "$KM_LOGS")/"
km_log "secrets: $(km_rel "$KM_SECRETS_FILE")"
for name in "${KM_SERVICES[@]}"; do
	addr=$(km_client_addr "$(km_service_listen "$name")")
	km_log "$name readyz: $(curl -s --max-time 3 "http://$addr/readyz" || echo '(no answer)')"
done

# Show a key being checked: a demo plan and key through the admin API, then the limiter.
"$KM_LIB_DIR/demo.sh"
