#!/usr/bin/env bash
# Stop or start one server of a local stack, for outage drills: only a server that this
# stack started itself (a private Postgres or RabbitMQ node) is stopped; its data stays, so
# `start` brings it back as it was. Use the same KEYMETER_* settings as for up.sh.
#
#   deploy/local/store.sh stop|start postgres|rabbitmq
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)/lib.sh"

usage="usage: store.sh stop|start postgres|rabbitmq"
[[ $# -eq 2 ]] || km_die "$usage"
action=$1 store=$2

cd "$KM_ROOT"
km_settings
km_lock
km_state_init

case $action:$store in
stop:postgres)
	km_record_has postgres "$KM_PG_PORT" || km_die "postgres on $KM_PG_PORT was not started by this stack; not stopping it"
	km_postgres_down
	;;
start:postgres) km_postgres_up ;;
stop:rabbitmq)
	km_record_has rabbitmq "$(km_rabbit_node)" "$KM_AMQP_PORT" ||
		km_die "rabbitmq on $KM_AMQP_PORT was not started by this stack; not stopping it"
	km_rabbit_down
	;;
start:rabbitmq) km_rabbit_up ;;
*) km_die "$usage" ;;
esac
