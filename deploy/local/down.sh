#!/usr/bin/env bash
# Stop the keymeter local stack: the services this stack started (pid files), then only the
# servers this stack itself started (per .local/stack-<tag>/started), nothing else.
# Use the same KEYMETER_* settings as for up.sh. Idempotent.
#
#   deploy/local/down.sh [--purge]     --purge also deletes the stack's state folder
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)/lib.sh"

purge=0
for arg in "$@"; do
	case $arg in
	--purge) purge=1 ;;
	-h | --help)
		sed -n '2,6p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*) km_die "unknown argument '$arg' (usage: down.sh [--purge])" ;;
	esac
done

cd "$KM_ROOT"
km_settings

if [[ ! -d $KM_STATE ]]; then
	km_log "stack: $(km_rel "$KM_STATE") does not exist; nothing to stop"
	others=$(find "$KM_ROOT/.local" -maxdepth 1 -name 'stack-*' -type d 2>/dev/null || true)
	[[ -z $others ]] || km_log "other stacks (run down.sh with their settings): $(echo "$others" | sed "s|$KM_ROOT/||" | tr '\n' ' ')"
	exit 0
fi

km_lock
km_log "stack: $(km_rel "$KM_STATE")"

if km_record_has docker compose; then
	if docker info >/dev/null 2>&1; then
		km_secrets quiet # the compose file requires them to be set
		if ((purge)); then km_compose down -v; else km_compose down; fi
		km_record_del docker compose
		km_log "docker: compose stack stopped"
	else
		km_warn "this stack was started with docker compose but no Docker engine answers; skipped"
	fi
fi

km_services_down
km_rabbit_down
km_redis_down
km_postgres_down

if ((purge)); then
	case $KM_STATE in
	"$KM_ROOT"/.local/stack-?*)
		rm -rf "$KM_STATE"
		# Where km_store_home put postgres and rabbitmq when their users could not reach it.
		rm -rf "$(km_tmp_home)"
		;;
	*) km_die "refusing to delete $KM_STATE" ;;
	esac
	km_log "purged $(km_rel "$KM_STATE")"
fi
km_log "stack is down"
