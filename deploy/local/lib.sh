# shellcheck shell=bash
# shellcheck disable=SC2034 # KM_* variables are read by the scripts that source this file
# keymeter local stack: helpers shared by up.sh, down.sh and test.sh (sourced, not run).
#
# Settings are the KEYMETER_* environment variables that the services read too; see
# km_settings. Each stack keeps its state in .local/stack-<tag>/ at the repo root, where
# <tag> is derived from its addresses, so a second stack on other ports gets its own folder:
#   pg/  pgsock/  redis/<port>/  rabbitmq/  logs/  pids/  secrets.env
#   started   one line per server this stack started itself ("postgres 15432",
#             "redis 17000", "rabbitmq keymeter5673@localhost 5673", "docker compose");
#             down.sh stops those and nothing else.

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	echo "lib.sh is sourced by up.sh, down.sh and test.sh; run one of those" >&2
	exit 1
fi
set -euo pipefail
# Debian puts nginx, rabbitmq-server and the postgres tools in sbin, which a non-root
# user's PATH lacks.
export PATH="$PATH:/usr/sbin:/sbin"

KM_LIB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
KM_ROOT="$(cd "$KM_LIB_DIR/../.." && pwd -P)"
KM_SERVICES=(key-admin limiter usage-ingest)
KM_APT_UPDATED=0

km_log() { printf '%s\n' "$*"; }
km_warn() { printf 'warning: %s\n' "$*" >&2; }
km_die() {
	printf 'error: %s\n' "$*" >&2
	exit 1
}
# Path relative to the repo root, for messages.
km_rel() { printf '%s' "${1#"$KM_ROOT"/}"; }

# ---------------------------------------------------------------- settings

km_parse_hostport() { # "host:port" or "[v6]:port" -> KM_H KM_P
	local hp=$1
	KM_P=${hp##*:}
	KM_H=${hp%:*}
	KM_H=${KM_H#[}
	KM_H=${KM_H%]}
	[[ $KM_P =~ ^[0-9]+$ && $KM_P -ge 1 && $KM_P -le 65535 && -n $KM_H ]] ||
		km_die "bad address '$hp' (want host:port)"
}

# Decode %XX escapes (for the AMQP vhost).
km_urldecode() {
	local s=${1//+/ }
	printf '%b' "${s//%/\\x}"
}

km_is_loopback() {
	case $1 in
	127.* | localhost | ::1) return 0 ;;
	*) return 1 ;;
	esac
}

# The address a local server binds to / a local client dials for host $1.
km_local_ip() {
	case $1 in
	localhost) printf '127.0.0.1' ;;
	*) printf '%s' "$1" ;;
	esac
}

# Where to reach a listen address from this machine (0.0.0.0 -> 127.0.0.1).
km_client_addr() {
	km_parse_hostport "$1"
	case $KM_H in
	0.0.0.0 | "") printf '127.0.0.1:%s' "$KM_P" ;;
	:: | ::0) printf '[::1]:%s' "$KM_P" ;;
	*:*) printf '[%s]:%s' "$KM_H" "$KM_P" ;;
	*) printf '%s:%s' "$KM_H" "$KM_P" ;;
	esac
}

# Resolve defaults, parse the addresses, export everything, compute the state folder.
km_settings() {
	: "${KEYMETER_DATABASE_URL:=postgres://postgres@127.0.0.1:5432/keymeter}"
	: "${KEYMETER_REDIS_NODES:=redis://127.0.0.1:7000,redis://127.0.0.1:7001,redis://127.0.0.1:7002,redis://127.0.0.1:7003,redis://127.0.0.1:7004,redis://127.0.0.1:7005}"
	: "${KEYMETER_AMQP_URL:=amqp://guest:guest@127.0.0.1:5672/%2f}"
	: "${KEYMETER_ADMIN_LISTEN:=127.0.0.1:8080}"
	: "${KEYMETER_LIMITER_LISTEN:=127.0.0.1:8081}"
	: "${KEYMETER_INGEST_LISTEN:=127.0.0.1:8082}"
	: "${KEYMETER_BUILD_PROFILE:=release}"
	export KEYMETER_DATABASE_URL KEYMETER_REDIS_NODES KEYMETER_AMQP_URL \
		KEYMETER_ADMIN_LISTEN KEYMETER_LIMITER_LISTEN KEYMETER_INGEST_LISTEN KEYMETER_BUILD_PROFILE

	case $KEYMETER_BUILD_PROFILE in
	release) KM_PROFILE_DIR=release ;;
	dev | debug) KM_PROFILE_DIR=debug ;;
	*) km_die "KEYMETER_BUILD_PROFILE must be 'release' or 'dev', not '$KEYMETER_BUILD_PROFILE'" ;;
	esac

	# postgres://user[:password]@host[:port]/db[?params]
	local re='^postgres(ql)?://(([^:@/]*)(:([^@/]*))?@)?(\[[^]/]+\]|[^:/?]*)(:([0-9]+))?(/([^?]*))?(\?.*)?$'
	[[ $KEYMETER_DATABASE_URL =~ $re ]] || km_die "cannot parse KEYMETER_DATABASE_URL=$KEYMETER_DATABASE_URL"
	KM_PG_USER=${BASH_REMATCH[3]:-postgres}
	KM_PG_PASSWORD=${BASH_REMATCH[5]:-}
	KM_PG_HOST=${BASH_REMATCH[6]:-127.0.0.1}
	KM_PG_HOST=${KM_PG_HOST#[}
	KM_PG_HOST=${KM_PG_HOST%]}
	KM_PG_PORT=${BASH_REMATCH[8]:-5432}
	KM_PG_DB=${BASH_REMATCH[10]:-keymeter}
	[[ $KM_PG_DB =~ ^[A-Za-z0-9_-]+$ ]] || km_die "database name '$KM_PG_DB' in KEYMETER_DATABASE_URL: use letters, digits, _ and -"
	[[ $KM_PG_USER =~ ^[A-Za-z0-9_-]+$ ]] || km_die "user '$KM_PG_USER' in KEYMETER_DATABASE_URL: use letters, digits, _ and -"

	# redis://[user:pass@]host:port[/db], comma separated
	local item hp
	KM_REDIS_HOSTS=()
	KM_REDIS_PORTS=()
	IFS=, read -r -a _km_items <<<"$KEYMETER_REDIS_NODES"
	for item in "${_km_items[@]}"; do
		item=${item//[[:space:]]/}
		[[ -n $item ]] || continue
		hp=${item#redis://}
		hp=${hp#*@}
		hp=${hp%%/*}
		km_parse_hostport "$hp"
		KM_REDIS_HOSTS+=("$KM_H")
		KM_REDIS_PORTS+=("$KM_P")
	done
	((${#KM_REDIS_PORTS[@]} == 6)) ||
		km_die "KEYMETER_REDIS_NODES must name exactly 6 nodes (3 masters + 3 replicas), got ${#KM_REDIS_PORTS[@]}"

	# amqp://user:pass@host[:port]/vhost
	re='^amqps?://(([^:@/]*)(:([^@/]*))?@)?(\[[^]/]+\]|[^:/?]*)(:([0-9]+))?(/([^?]*))?(\?.*)?$'
	[[ $KEYMETER_AMQP_URL =~ $re ]] || km_die "cannot parse KEYMETER_AMQP_URL=$KEYMETER_AMQP_URL"
	KM_AMQP_USER=$(km_urldecode "${BASH_REMATCH[2]:-guest}")
	KM_AMQP_HOST=${BASH_REMATCH[5]:-127.0.0.1}
	KM_AMQP_HOST=${KM_AMQP_HOST#[}
	KM_AMQP_HOST=${KM_AMQP_HOST%]}
	KM_AMQP_PORT=${BASH_REMATCH[7]:-5672}
	if [[ -n ${BASH_REMATCH[8]} ]]; then
		KM_AMQP_VHOST=$(km_urldecode "${BASH_REMATCH[9]}")
	else
		KM_AMQP_VHOST=/
	fi

	km_parse_hostport "$KEYMETER_ADMIN_LISTEN"
	local admin_port=$KM_P
	km_parse_hostport "$KEYMETER_LIMITER_LISTEN"
	km_parse_hostport "$KEYMETER_INGEST_LISTEN"

	# Tag: the admin port plus a short hash of every address, so it is readable,
	# deterministic, and differs whenever any port differs.
	local hash
	hash=$(printf '%s\n' "pg $KM_PG_HOST:$KM_PG_PORT" "amqp $KM_AMQP_HOST:$KM_AMQP_PORT" \
		"redis ${KM_REDIS_HOSTS[*]} ${KM_REDIS_PORTS[*]}" \
		"listen $KEYMETER_ADMIN_LISTEN $KEYMETER_LIMITER_LISTEN $KEYMETER_INGEST_LISTEN" |
		sha256sum | cut -c1-8)
	KM_STACK_TAG="$admin_port-$hash"
	KM_STATE="$KM_ROOT/.local/stack-$KM_STACK_TAG"
	KM_RECORD="$KM_STATE/started"
	KM_SECRETS_FILE="$KM_STATE/secrets.env"
	KM_LOGS="$KM_STATE/logs"
	KM_PIDS="$KM_STATE/pids"
}

km_service_listen() { # service name -> its listen address
	case $1 in
	key-admin) printf '%s' "$KEYMETER_ADMIN_LISTEN" ;;
	limiter) printf '%s' "$KEYMETER_LIMITER_LISTEN" ;;
	usage-ingest) printf '%s' "$KEYMETER_INGEST_LISTEN" ;;
	*) km_die "unknown service $1" ;;
	esac
}

# ---------------------------------------------------------------- state folder

km_state_init() {
	mkdir -p "$KM_STATE" "$KM_LOGS" "$KM_PIDS"
	touch "$KM_RECORD"
}

# km_tmp_home: this stack's folder under /var/tmp/keymeter (see km_store_home).
km_tmp_home() {
	printf '/var/tmp/keymeter/%s-%s' "${KM_STATE##*/}" "$(printf '%s' "$KM_ROOT" | cksum | cut -d' ' -f1)"
}

# km_store_home USER: where the server that runs as USER (postgres, rabbitmq) keeps its data
# and logs: the stack's state folder when USER can reach it; otherwise (root's checkout
# under /root, mode 700) a folder of the stack's own under /var/tmp/keymeter.
km_store_home() {
	if km_as_user "$1" test -x "$KM_STATE" 2>/dev/null; then
		printf '%s' "$KM_STATE"
		return 0
	fi
	# Named after the checkout too, so two checkouts with the same settings do not share
	# it; /var/tmp is world-writable, so the folder must be root's own, not a symlink.
	local base=/var/tmp/keymeter home
	home=$(km_tmp_home)
	km_as_root install -d -m 0755 "$base"
	if [[ -L $base || -L $home || $(stat -c %u "$base") != 0 ]] ||
		{ [[ -e $home ]] && [[ $(stat -c %u "$home") != 0 ]]; }; then
		km_die "$base or $home is a symlink or not root's own; remove it and run again"
	fi
	printf '%s' "$home"
}

# One up.sh/down.sh at a time per stack. The lock is fd 9: every server or service we
# start gets `9>&-` so that it does not inherit (and keep holding) the lock.
km_lock() {
	mkdir -p "$KM_STATE"
	exec 9>"$KM_STATE/.lock"
	if ! flock -n 9; then
		km_log "waiting for another up.sh/down.sh on this stack..."
		flock -w 600 9 || km_die "could not lock $(km_rel "$KM_STATE")"
	fi
}

km_record_has() { [[ -f $KM_RECORD ]] && grep -qxF -- "$*" "$KM_RECORD"; }
km_record_add() { km_record_has "$@" || printf '%s\n' "$*" >>"$KM_RECORD"; }
km_record_del() {
	[[ -f $KM_RECORD ]] || return 0
	grep -vxF -- "$*" "$KM_RECORD" >"$KM_RECORD.tmp" || true
	mv "$KM_RECORD.tmp" "$KM_RECORD"
}

# ---------------------------------------------------------------- secrets

km_random_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }

km_secret_from_file() { # name -> value (status 1 if absent)
	[[ -f $KM_SECRETS_FILE ]] || return 1
	local line
	line=$(grep -E "^$1=" "$KM_SECRETS_FILE" | tail -n 1) || return 1
	[[ -n ${line#*=} ]] || return 1
	printf '%s' "${line#*=}"
}

km_secret_store() { # name value
	if [[ ! -f $KM_SECRETS_FILE ]]; then
		(
			umask 077
			printf '# keymeter local stack secrets (generated by deploy/local/up.sh; keep private)\n' >"$KM_SECRETS_FILE"
		)
	fi
	printf '%s=%s\n' "$1" "$2" >>"$KM_SECRETS_FILE"
}

# KEYMETER_PEPPER / KEYMETER_BOOTSTRAP_ADMIN_TOKEN: the environment wins; else secrets.env;
# else generate and keep in secrets.env. Values given in the environment are never written.
km_secrets() { # verbose|quiet
	local mode=$1 generated=() from_env=() v
	mkdir -p "$KM_STATE"
	if [[ -n ${KEYMETER_PEPPER:-} ]]; then
		from_env+=(KEYMETER_PEPPER)
	elif v=$(km_secret_from_file KEYMETER_PEPPER); then
		KEYMETER_PEPPER=$v
	else
		KEYMETER_PEPPER=$(km_random_hex 32)
		km_secret_store KEYMETER_PEPPER "$KEYMETER_PEPPER"
		generated+=(KEYMETER_PEPPER)
	fi
	if [[ -n ${KEYMETER_BOOTSTRAP_ADMIN_TOKEN:-} ]]; then
		from_env+=(KEYMETER_BOOTSTRAP_ADMIN_TOKEN)
	elif v=$(km_secret_from_file KEYMETER_BOOTSTRAP_ADMIN_TOKEN); then
		KEYMETER_BOOTSTRAP_ADMIN_TOKEN=$v
	else
		KEYMETER_BOOTSTRAP_ADMIN_TOKEN=$(km_random_hex 32)
		km_secret_store KEYMETER_BOOTSTRAP_ADMIN_TOKEN "$KEYMETER_BOOTSTRAP_ADMIN_TOKEN"
		generated+=(KEYMETER_BOOTSTRAP_ADMIN_TOKEN)
	fi
	[[ $KEYMETER_PEPPER =~ ^[0-9a-fA-F]{64}$ ]] ||
		km_die "KEYMETER_PEPPER must be 64 hex characters (32 bytes)"
	((${#KEYMETER_BOOTSTRAP_ADMIN_TOKEN} >= 32)) ||
		km_die "KEYMETER_BOOTSTRAP_ADMIN_TOKEN must be at least 32 characters"
	export KEYMETER_PEPPER KEYMETER_BOOTSTRAP_ADMIN_TOKEN
	[[ $mode == quiet ]] && return 0
	if ((${#generated[@]})); then
		km_log "secrets: generated ${generated[*]} into $(km_rel "$KM_SECRETS_FILE")"
	elif ((${#from_env[@]} < 2)); then
		km_log "secrets: $(km_rel "$KM_SECRETS_FILE")"
	fi
	if ((${#from_env[@]})); then
		km_log "secrets: ${from_env[*]} taken from the environment"
	fi
}

# ---------------------------------------------------------------- packages and users

km_as_root() {
	if [[ $(id -u) -eq 0 ]]; then
		"$@"
	elif command -v sudo >/dev/null; then
		sudo "$@"
	else
		km_die "need root to run: $*"
	fi
}

km_apt_install() { # packages...
	command -v apt-get >/dev/null || km_die "missing $*; install it (no apt-get here)"
	mkdir -p "$KM_LOGS"
	local log="$KM_LOGS/apt.log"
	km_log "installing with apt-get: $*"
	if ((!KM_APT_UPDATED)); then
		km_as_root apt-get update -qq >>"$log" 2>&1 || {
			tail -n 20 "$log" >&2
			km_die "apt-get update failed (log: $(km_rel "$log"))"
		}
		KM_APT_UPDATED=1
	fi
	km_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >>"$log" 2>&1 9>&- || {
		tail -n 20 "$log" >&2
		km_die "apt-get install $* failed (log: $(km_rel "$log"))"
	}
}

km_need_cmd() { # command package
	command -v "$1" >/dev/null && return 0
	km_apt_install "$2"
	hash -r
	command -v "$1" >/dev/null || km_die "$1 still missing after installing $2"
}

# Build dependencies for cargo: a C compiler and pkg-config always; libssl-dev / libpq-dev
# only if the lock file pulls in openssl-sys / pq-sys.
km_build_deps() {
	local pkgs=()
	command -v cc >/dev/null || pkgs+=(gcc libc6-dev)
	command -v pkg-config >/dev/null || pkgs+=(pkg-config)
	if grep -q '^name = "openssl-sys"$' "$KM_ROOT/Cargo.lock" 2>/dev/null &&
		! { command -v pkg-config >/dev/null && pkg-config --exists openssl; }; then
		pkgs+=(libssl-dev)
	fi
	if grep -q '^name = "pq-sys"$' "$KM_ROOT/Cargo.lock" 2>/dev/null &&
		! { command -v pkg-config >/dev/null && pkg-config --exists libpq; }; then
		pkgs+=(libpq-dev)
	fi
	((${#pkgs[@]} == 0)) || km_apt_install "${pkgs[@]}"
}

# Run as a system user (when we are root and it exists); otherwise as ourselves.
km_as_user() { # user command...
	local user=$1
	shift
	if [[ $(id -u) -eq 0 && $user != root ]] && id -u "$user" >/dev/null 2>&1; then
		runuser -u "$user" -- "$@"
	else
		"$@"
	fi
}

km_chown_for() { # user paths...
	local user=$1
	shift
	if [[ $(id -u) -eq 0 && $user != root ]] && id -u "$user" >/dev/null 2>&1; then
		chown -R "$user": "$@"
	fi
}

# ---------------------------------------------------------------- probes

km_port_open() { # host port
	# shellcheck disable=SC2016 # expanded by the inner bash
	timeout 1 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$(km_local_ip "$1")" "$2" 2>/dev/null
}

km_wait() { # seconds command... : poll every 0.5 s
	local deadline=$((SECONDS + $1))
	shift
	until "$@"; do
		((SECONDS < deadline)) || return 1
		sleep 0.5
	done
}

# Live process $1 whose argv[0] (or argv[1], for a script run by its interpreter) ends
# with $2: guards against reused pids.
km_pid_is() {
	local pid=$1 want=$2 arg
	[[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
	while IFS= read -r arg; do
		[[ $arg == *"$want" ]] && return 0
	done < <(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | head -n 2)
	return 1
}

km_pidfile_pid() { # pidfile -> pid
	[[ -s $1 ]] || return 1
	tr -dc '0-9' <"$1"
}

# Send TERM, wait up to $2 seconds, then KILL.
km_stop_pid() { # pid seconds
	local pid=$1 i
	kill -TERM "$pid" 2>/dev/null || return 0
	for ((i = 0; i < $2 * 10; i++)); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	km_warn "pid $pid did not stop within $2 s; killing it"
	kill -KILL "$pid" 2>/dev/null || true
}

km_port_range() { # ports... -> "7000-7005" when consecutive, else "7000 7002 ..."
	local first=$1 prev=$1 p
	for p in "${@:2}"; do
		((p == prev + 1)) || {
			printf '%s' "$*"
			return 0
		}
		prev=$p
	done
	if (($# == 1)); then printf '%s' "$first"; else printf '%s-%s' "$first" "$prev"; fi
}

# ---------------------------------------------------------------- postgres

km_pg_bindir() {
	local d
	if command -v pg_ctl >/dev/null && command -v initdb >/dev/null; then
		dirname "$(command -v pg_ctl)"
		return 0
	fi
	d=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
	[[ -n $d && -x $d/initdb && -x $d/pg_ctl ]] || return 1
	printf '%s' "$d"
}

km_psql() { # args... (connects as the URL's user to the URL's server)
	PGPASSWORD=$KM_PG_PASSWORD PGCONNECT_TIMEOUT=5 psql -X -q -v ON_ERROR_STOP=1 \
		-h "$(km_local_ip "$KM_PG_HOST")" -p "$KM_PG_PORT" -U "$KM_PG_USER" "$@"
}

km_pg_ready() { pg_isready -q -t 2 -h "$(km_local_ip "$KM_PG_HOST")" -p "$KM_PG_PORT"; }

km_postgres_up() {
	km_need_cmd pg_isready postgresql-client
	km_need_cmd psql postgresql-client
	local addr="$KM_PG_HOST:$KM_PG_PORT"
	if km_pg_ready; then
		if km_record_has postgres "$KM_PG_PORT"; then
			km_log "postgres: running on $addr (started by this stack)"
		else
			km_log "postgres: using $addr"
		fi
	else
		km_is_loopback "$KM_PG_HOST" || km_die "no PostgreSQL answers at $addr and it is not a loopback address"
		km_port_open "$KM_PG_HOST" "$KM_PG_PORT" && km_die "$addr is taken by something that is not PostgreSQL"
		local bindir
		if ! bindir=$(km_pg_bindir); then
			# Debian's package would create and start a "main" cluster that asks for a
			# password over TCP; this stack runs its own with trust auth instead.
			# (postgresql-common reads createcluster.d; the setting stays for later installs.)
			km_as_root mkdir -p /etc/postgresql-common/createcluster.d
			echo 'create_main_cluster = false' |
				km_as_root tee /etc/postgresql-common/createcluster.d/keymeter.conf >/dev/null
			km_apt_install postgresql
			# The package may have started its own cluster on this very port.
			if km_pg_ready; then
				km_log "postgres: using $addr (the freshly installed system cluster)"
				km_pg_createdb
				return 0
			fi
			bindir=$(km_pg_bindir) || km_die "no initdb/pg_ctl found after installing postgresql"
		fi
		local home data sock log="$KM_LOGS/postgres.log"
		home=$(km_store_home postgres)
		data="$home/pg" sock="$home/pgsock"
		[[ $home == "$KM_STATE" ]] || log="$home/postgres.log"
		mkdir -p "$data" "$sock"
		chmod 700 "$data"
		km_chown_for postgres "$data" "$sock"
		if [[ ! -f $data/PG_VERSION ]]; then
			km_log "postgres: initdb $(km_rel "$data")"
			km_as_user postgres "$bindir/initdb" -D "$data" -U "$KM_PG_USER" --auth=trust \
				-E UTF8 --no-locale >"$KM_LOGS/initdb.log" 2>&1 || {
				tail -n 20 "$KM_LOGS/initdb.log" >&2
				km_die "initdb failed (log: $(km_rel "$KM_LOGS/initdb.log"))"
			}
			# A unix socket path is limited to ~107 bytes; without room, TCP only.
			local sockdir=$sock
			((${#sock} + 20 < 100)) || sockdir=
			cat >>"$data/postgresql.conf" <<-EOF

				# keymeter local stack
				listen_addresses = '$(km_local_ip "$KM_PG_HOST")'
				port = $KM_PG_PORT
				unix_socket_directories = '$sockdir'
				max_connections = 200
				synchronous_commit = off
			EOF
		fi
		touch "$log"
		km_chown_for postgres "$log"
		km_as_user postgres "$bindir/pg_ctl" -D "$data" -l "$log" -w -t 60 start >/dev/null 2>&1 9>&- || {
			tail -n 30 "$log" >&2
			km_die "postgres did not start on $addr (log: $(km_rel "$log"))"
		}
		km_record_add postgres "$KM_PG_PORT"
		km_log "postgres: started $addr (data $(km_rel "$data"))"
	fi
	km_pg_createdb
}

km_pg_createdb() {
	local found
	found=$(km_psql -d postgres -tAc "select 1 from pg_database where datname = '$KM_PG_DB'") ||
		km_die "cannot connect to postgres at $KM_PG_HOST:$KM_PG_PORT as $KM_PG_USER"
	if [[ $found == 1 ]]; then
		km_log "postgres: database $KM_PG_DB exists"
	else
		km_psql -d postgres -c "create database \"$KM_PG_DB\"" || km_die "could not create database $KM_PG_DB"
		km_log "postgres: created database $KM_PG_DB"
	fi
}

km_postgres_down() {
	km_record_has postgres "$KM_PG_PORT" || return 0
	local data bindir
	data="$(km_store_home postgres)/pg"
	if [[ -f $data/postmaster.pid ]]; then
		bindir=$(km_pg_bindir) || km_die "pg_ctl not found"
		if km_as_user postgres "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1; then
			km_as_user postgres "$bindir/pg_ctl" -D "$data" -m fast -w -t 60 stop >/dev/null ||
				km_die "pg_ctl stop failed for $(km_rel "$data")"
			km_log "postgres: stopped $KM_PG_HOST:$KM_PG_PORT"
		fi
	fi
	km_record_del postgres "$KM_PG_PORT"
}

# ---------------------------------------------------------------- redis cluster

km_rcli() { # host port args...
	local h p
	h=$(km_local_ip "$1")
	p=$2
	shift 2
	timeout 5 redis-cli -h "$h" -p "$p" "$@"
}

km_redis_ping() { [[ $(km_rcli "$1" "$2" ping 2>/dev/null) == PONG ]]; }

km_redis_field() { # host port field -> value from CLUSTER INFO
	km_rcli "$1" "$2" cluster info 2>/dev/null | tr -d '\r' | sed -n "s/^$3://p"
}

# Cluster bus port. Redis's default is port+10000, which would collide when a second stack
# uses ports 10000 above the first one's (7000 -> bus 17000 vs a node on 17000). We use
# port+20000 instead (port-20000 when that would pass 65535).
km_redis_bus_port() {
	if (($1 + 20000 <= 65535)); then echo $(($1 + 20000)); else echo $(($1 - 20000)); fi
}

km_redis_all_ok() {
	local i
	for i in "${!KM_REDIS_PORTS[@]}"; do
		[[ $(km_redis_field "${KM_REDIS_HOSTS[i]}" "${KM_REDIS_PORTS[i]}" cluster_state) == ok ]] || return 1
	done
}

km_redis_up() {
	km_need_cmd redis-cli redis-tools
	local i h p dir started=() used=() ours=() major
	for i in "${!KM_REDIS_PORTS[@]}"; do
		h=${KM_REDIS_HOSTS[i]}
		p=${KM_REDIS_PORTS[i]}
		if km_redis_ping "$h" "$p"; then
			if km_record_has redis "$p"; then ours+=("$p"); else used+=("$p"); fi
			continue
		fi
		km_is_loopback "$h" || km_die "no redis answers at $h:$p and it is not a loopback address"
		km_port_open "$h" "$p" && km_die "$h:$p is taken by something that is not redis"
		km_need_cmd redis-server redis-server
		dir="$KM_STATE/redis/$p"
		mkdir -p "$dir"
		local bus_args=()
		major=$(redis-server --version | sed -n 's/.* v=\([0-9]*\)\..*/\1/p')
		if ((${major:-0} >= 7)); then bus_args=(--cluster-port "$(km_redis_bus_port "$p")"); fi
		redis-server --port "$p" --bind "$(km_local_ip "$h")" \
			--cluster-enabled yes --cluster-config-file "$dir/nodes.conf" "${bus_args[@]}" \
			--cluster-node-timeout 2000 --dir "$dir" --daemonize yes \
			--cluster-require-full-coverage no \
			--save "" --appendonly no \
			--logfile "$KM_LOGS/redis-$p.log" --pidfile "$dir/redis.pid" >/dev/null 9>&- ||
			km_die "redis-server on $h:$p did not start (log: $(km_rel "$KM_LOGS/redis-$p.log"))"
		km_record_add redis "$p"
		started+=("$p")
	done
	for p in "${started[@]}"; do
		for i in "${!KM_REDIS_PORTS[@]}"; do [[ ${KM_REDIS_PORTS[i]} == "$p" ]] && h=${KM_REDIS_HOSTS[i]}; done
		km_wait 10 km_redis_ping "$h" "$p" || {
			tail -n 20 "$KM_LOGS/redis-$p.log" >&2
			km_die "redis on $h:$p does not answer"
		}
	done
	((${#started[@]} == 0)) || km_log "redis cluster: started ${#started[@]} nodes on $(km_port_range "${started[@]}")"
	((${#ours[@]} == 0)) || km_log "redis cluster: ${#ours[@]} nodes running on $(km_port_range "${ours[@]}") (started by this stack)"
	((${#used[@]} == 0)) || km_log "redis cluster: using ${#used[@]} running nodes on $(km_port_range "${used[@]}")"

	# Form the cluster unless it is already formed.
	local h0=${KM_REDIS_HOSTS[0]} p0=${KM_REDIS_PORTS[0]} state
	state=$(km_redis_field "$h0" "$p0" cluster_state)
	if [[ -z $state ]]; then
		km_rcli "$h0" "$p0" cluster info >&2 || true
		km_die "redis on $h0:$p0 is not a cluster node (cluster-enabled no?)"
	fi
	if [[ $state != ok ]]; then
		local fresh=1 addrs=()
		for i in "${!KM_REDIS_PORTS[@]}"; do
			h=${KM_REDIS_HOSTS[i]}
			p=${KM_REDIS_PORTS[i]}
			addrs+=("$(km_local_ip "$h"):$p")
			[[ $(km_redis_field "$h" "$p" cluster_slots_assigned) == 0 &&
				$(km_redis_field "$h" "$p" cluster_known_nodes) == 1 ]] || fresh=0
		done
		if ((fresh)); then
			km_log "redis cluster: creating (3 masters + 3 replicas)"
			redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes \
				>"$KM_LOGS/redis-cluster-create.log" 2>&1 || {
				tail -n 20 "$KM_LOGS/redis-cluster-create.log" >&2
				km_die "redis-cli --cluster create failed (log: $(km_rel "$KM_LOGS/redis-cluster-create.log"))"
			}
		else
			km_log "redis cluster: already formed, waiting for cluster_state:ok"
		fi
	fi
	km_redis_rejoin_empty_nodes
	if ! km_wait 30 km_redis_all_ok; then
		for i in "${!KM_REDIS_PORTS[@]}"; do
			printf '  %s:%s cluster_state:%s\n' "${KM_REDIS_HOSTS[i]}" "${KM_REDIS_PORTS[i]}" \
				"$(km_redis_field "${KM_REDIS_HOSTS[i]}" "${KM_REDIS_PORTS[i]}" cluster_state)" >&2
		done
		km_die "redis cluster did not reach cluster_state:ok within 30 s; if its nodes.conf files are stale, run deploy/local/down.sh --purge and try again"
	fi
	# A replica that has not finished its first sync cannot take over from its master, so
	# the cluster is ready when every replica's link to its master is up.
	if ! km_wait 30 km_redis_replicas_synced; then
		km_warn "redis cluster: some replicas have not synced with their masters within 30 s"
	fi
	local masters replicas
	masters=$(km_rcli "$h0" "$p0" cluster nodes | awk '$3 ~ /master/' | wc -l)
	replicas=$(km_rcli "$h0" "$p0" cluster nodes | awk '$3 ~ /slave/' | wc -l)
	km_log "redis cluster: cluster_state:ok ($masters masters, $replicas replicas in sync)"
}

# A node that came back empty (its nodes.conf lost, e.g. a node killed and restarted fresh)
# beside a formed cluster: join it as a replica of the master with the fewest, and forget
# the entries of nodes that no longer have an address.
km_redis_rejoin_empty_nodes() {
	local i h p anchor="" id
	for i in "${!KM_REDIS_PORTS[@]}"; do
		h=${KM_REDIS_HOSTS[i]}
		p=${KM_REDIS_PORTS[i]}
		if [[ $(km_redis_field "$h" "$p" cluster_known_nodes) != 1 ]]; then
			anchor="$(km_local_ip "$h"):$p"
			break
		fi
	done
	[[ -n $anchor ]] || return 0
	for i in "${!KM_REDIS_PORTS[@]}"; do
		h=${KM_REDIS_HOSTS[i]}
		p=${KM_REDIS_PORTS[i]}
		[[ $(km_redis_field "$h" "$p" cluster_known_nodes) == 1 &&
			$(km_redis_field "$h" "$p" cluster_slots_assigned) == 0 ]] || continue
		for id in $(km_rcli "${anchor%:*}" "${anchor##*:}" cluster nodes | awk '$3 ~ /noaddr/ {print $1}'); do
			redis-cli --cluster call "$anchor" cluster forget "$id" >/dev/null 2>&1 || true
		done
		km_log "redis cluster: $h:$p is empty; joining it as a replica"
		redis-cli --cluster add-node "$(km_local_ip "$h"):$p" "$anchor" --cluster-slave \
			>>"$KM_LOGS/redis-cluster-create.log" 2>&1 ||
			km_warn "redis cluster: could not join $h:$p (log: $(km_rel "$KM_LOGS/redis-cluster-create.log"))"
	done
}

km_redis_replicas_synced() {
	local i role
	for i in "${!KM_REDIS_PORTS[@]}"; do
		role=$(km_redis_replication_field "${KM_REDIS_HOSTS[i]}" "${KM_REDIS_PORTS[i]}" role)
		if [[ $role == slave ]]; then
			[[ $(km_redis_replication_field "${KM_REDIS_HOSTS[i]}" "${KM_REDIS_PORTS[i]}" master_link_status) == up ]] || return 1
		fi
	done
}

km_redis_replication_field() { # host port field
	km_rcli "$1" "$2" info replication 2>/dev/null | tr -d '\r' | sed -n "s/^$3://p"
}

# Is the node answering at host:port one that runs in this stack's folder?
km_redis_ours() {
	[[ $(km_rcli "$1" "$2" config get dir 2>/dev/null | tr -d '\r' | sed -n 2p) == "$KM_STATE/redis/$2" ]]
}

km_redis_down() {
	local i h p pid n=()
	for i in "${!KM_REDIS_PORTS[@]}"; do
		h=${KM_REDIS_HOSTS[i]}
		p=${KM_REDIS_PORTS[i]}
		km_record_has redis "$p" || continue
		if km_redis_ours "$h" "$p"; then
			pid=$(km_rcli "$h" "$p" info server | tr -d '\r' | sed -n 's/^process_id://p')
			[[ -n $pid ]] && km_stop_pid "$pid" 10
			n+=("$p")
		fi
		if km_redis_ours "$h" "$p"; then
			km_warn "redis on $h:$p is still running; left in the record"
		else
			rm -f "$KM_STATE/redis/$p/redis.pid"
			km_record_del redis "$p"
		fi
	done
	((${#n[@]} == 0)) || km_log "redis cluster: stopped ${#n[@]} nodes on $(km_port_range "${n[@]}")"
}

# ---------------------------------------------------------------- rabbitmq

km_rabbit_node() { printf 'keymeter%s@localhost' "$KM_AMQP_PORT"; }

# rabbitmq-server/rabbitmqctl as the rabbitmq user (same HOME, hence the same Erlang
# cookie, as the system's CLI wrappers use), with this stack's settings.
km_rabbit() { # script args...
	local script=$1 bin home dir
	dir="$(km_store_home rabbitmq)/rabbitmq"
	shift
	if [[ -x /usr/lib/rabbitmq/bin/$script ]]; then
		bin=/usr/lib/rabbitmq/bin/$script
	else
		bin=$(command -v "$script") || km_die "$script not found"
	fi
	home=$HOME
	if [[ $(id -u) -eq 0 ]] && id -u rabbitmq >/dev/null 2>&1; then
		home=$(getent passwd rabbitmq | cut -d: -f6)
	fi
	km_as_user rabbitmq env HOME="$home" \
		RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf" \
		RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" \
		RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config" \
		RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
		RABBITMQ_NODENAME="$(km_rabbit_node)" \
		RABBITMQ_NODE_IP_ADDRESS="$(km_local_ip "$KM_AMQP_HOST")" \
		RABBITMQ_NODE_PORT="$KM_AMQP_PORT" \
		RABBITMQ_DIST_PORT="$((KM_AMQP_PORT + 20000))" \
		RABBITMQ_MNESIA_BASE="$dir/mnesia" \
		RABBITMQ_LOG_BASE="$dir/log" \
		RABBITMQ_PID_FILE="$dir/rabbitmq.pid" \
		ERL_EPMD_ADDRESS=127.0.0.1 \
		RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
		"$bin" "$@" 9>&- # an epmd or node started here must not hold the stack's lock
}

km_rabbit_started() { km_rabbit rabbitmqctl -q -n "$(km_rabbit_node)" await_startup --timeout 5 >/dev/null 2>&1; }

km_rabbit_up() {
	local addr="$KM_AMQP_HOST:$KM_AMQP_PORT" node
	node=$(km_rabbit_node)
	if km_port_open "$KM_AMQP_HOST" "$KM_AMQP_PORT"; then
		if km_record_has rabbitmq "$node" "$KM_AMQP_PORT"; then
			km_log "rabbitmq: node $node running on $addr (started by this stack)"
		else
			km_log "rabbitmq: using $addr"
		fi
		return 0
	fi
	km_is_loopback "$KM_AMQP_HOST" || km_die "nothing answers at $addr and it is not a loopback address"
	if ! command -v rabbitmq-server >/dev/null; then
		km_apt_install rabbitmq-server
		if km_port_open "$KM_AMQP_HOST" "$KM_AMQP_PORT"; then
			km_log "rabbitmq: using $addr (the freshly installed system node)"
			return 0
		fi
	fi
	((KM_AMQP_PORT + 20000 <= 65535)) || km_die "AMQP port $KM_AMQP_PORT too high (distribution port = port + 20000)"
	local dir
	dir="$(km_store_home rabbitmq)/rabbitmq"
	mkdir -p "$dir/mnesia" "$dir/log"
	printf '[].\n' >"$dir/enabled_plugins"
	printf '# keymeter local stack: settings come from the environment (deploy/local/lib.sh)\n' >"$dir/rabbitmq-env.conf"
	cat >"$dir/rabbitmq.conf" <<-EOF
		# keymeter local stack
		listeners.tcp.1 = $(km_local_ip "$KM_AMQP_HOST"):$KM_AMQP_PORT
		loopback_users.guest = true
	EOF
	km_chown_for rabbitmq "$dir"
	km_log "rabbitmq: starting node $node on $addr"
	km_rabbit rabbitmq-server -detached >>"$KM_LOGS/rabbitmq-start.log" 2>&1 9>&- || {
		tail -n 20 "$KM_LOGS/rabbitmq-start.log" >&2
		km_die "rabbitmq-server did not start (logs: $(km_rel "$KM_LOGS/rabbitmq-start.log"), $(km_rel "$dir/log"))"
	}
	km_record_add rabbitmq "$node" "$KM_AMQP_PORT"
	if ! km_wait 90 km_rabbit_started; then
		tail -n 20 "$KM_LOGS/rabbitmq-start.log" >&2
		km_die "rabbitmq node $node did not start within 90 s (logs: $(km_rel "$dir/log"))"
	fi
	km_wait 15 km_port_open "$KM_AMQP_HOST" "$KM_AMQP_PORT" || km_die "rabbitmq node $node does not listen on $addr"
	if [[ $KM_AMQP_VHOST != / ]]; then
		km_rabbit rabbitmqctl -q -n "$node" add_vhost "$KM_AMQP_VHOST" >/dev/null 2>&1 || true
		km_rabbit rabbitmqctl -q -n "$node" set_permissions -p "$KM_AMQP_VHOST" "$KM_AMQP_USER" '.*' '.*' '.*' >/dev/null ||
			km_die "could not grant $KM_AMQP_USER access to vhost $KM_AMQP_VHOST"
	fi
	km_log "rabbitmq: started node $node on $KM_AMQP_PORT"
}

km_rabbit_down() {
	local node pid dir
	dir="$(km_store_home rabbitmq)/rabbitmq"
	node=$(km_rabbit_node)
	km_record_has rabbitmq "$node" "$KM_AMQP_PORT" || return 0
	if km_rabbit rabbitmqctl -q -n "$node" stop "$dir/rabbitmq.pid" >>"$KM_LOGS/rabbitmq-stop.log" 2>&1; then
		km_log "rabbitmq: stopped node $node"
	elif pid=$(km_pidfile_pid "$dir/rabbitmq.pid") && kill -0 "$pid" 2>/dev/null &&
		grep -q "$node" "/proc/$pid/cmdline" 2>/dev/null; then
		km_stop_pid "$pid" 30
		km_log "rabbitmq: stopped node $node (pid $pid)"
	fi
	if km_rabbit_started; then
		km_warn "rabbitmq node $node is still running; left in the record"
	else
		km_record_del rabbitmq "$node" "$KM_AMQP_PORT"
	fi
}

# ---------------------------------------------------------------- docker compose

km_docker_wanted() {
	[[ ${KEYMETER_USE_DOCKER:-0} == 1 ]] || return 1
	if docker info >/dev/null 2>&1; then return 0; fi
	km_warn "KEYMETER_USE_DOCKER=1 but no Docker engine answers (docker info failed); using local servers"
	return 1
}

km_compose() {
	if docker compose version >/dev/null 2>&1; then
		docker compose -f "$KM_ROOT/docker-compose.yml" "$@"
	elif command -v docker-compose >/dev/null; then
		docker-compose -f "$KM_ROOT/docker-compose.yml" "$@"
	else
		km_die "neither 'docker compose' nor docker-compose is installed"
	fi
}

# ---------------------------------------------------------------- services

km_service_pid() { # name -> pid of the live process this stack started
	local pid
	pid=$(km_pidfile_pid "$KM_PIDS/$1.pid") && km_pid_is "$pid" "/$1" && printf '%s' "$pid"
}

km_services_down() {
	local name pid pids=() names=()
	for name in "${KM_SERVICES[@]}"; do
		if pid=$(km_service_pid "$name"); then
			kill -TERM "$pid" 2>/dev/null || true
			pids+=("$pid")
			names+=("$name")
		fi
	done
	local i
	for i in "${!pids[@]}"; do
		# SIGTERM: the services drain and flush; give them time.
		km_stop_pid "${pids[i]}" 20
		km_log "${names[i]}: stopped (pid ${pids[i]})"
	done
	for name in "${KM_SERVICES[@]}"; do rm -f "$KM_PIDS/$name.pid"; done
}

# km_admin_curl PATH [CURL_ARGS...]: curl against the admin API with the bootstrap token.
# Needs the stack up and km_secrets loaded.
km_admin_curl() {
	local path=$1
	shift
	curl -fsS -H "Authorization: Bearer $KEYMETER_BOOTSTRAP_ADMIN_TOKEN" "$@" \
		"http://$(km_client_addr "$KEYMETER_ADMIN_LISTEN")$path"
}

# km_admin_plan_id PLAN_NAME: the id of the plan named PLAN_NAME, or nothing.
km_admin_plan_id() {
	km_admin_curl "/v1/plans?limit=100" |
		python3 -c 'import json,sys; print(next((p["id"] for p in json.load(sys.stdin)["items"] if p["name"] == sys.argv[1]), ""))' "$1"
}

# km_admin_new_key PLAN_ID OWNER [NAME]: a new key on the plan for OWNER, with OWNER as its
# prefix and NAME (default OWNER) as its name; prints the raw key.
km_admin_new_key() {
	local plan_id=$1 owner=$2 name=${3:-$2}
	km_admin_curl /v1/keys -H 'content-type: application/json' \
		-d "{\"plan_id\":\"$plan_id\",\"name\":\"$name\",\"owner_id\":\"$owner\",\"prefix\":\"$owner\"}" |
		python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])'
}

# km_admin_key PLAN_NAME LIMITS_JSON FILE: a key on plan PLAN_NAME (made with LIMITS_JSON if
# missing) through the admin API, kept in FILE in the state folder and reused while the
# limiter still knows it. Prints the raw key. Needs the stack up and km_secrets loaded.
km_admin_key() {
	local plan_name=$1 limits=$2 file=$3 plan_id key="" code=""
	# python3-minimal alone has no json module.
	python3 -c 'import json' 2>/dev/null || km_apt_install python3
	# The bootstrap token is stored by key-admin in the background: wait until it works.
	km_wait 15 km_admin_curl "/v1/plans?limit=1" -o /dev/null ||
		km_die "the admin API does not accept the bootstrap token (see $(km_rel "$KM_LOGS/key-admin.log"))"
	plan_id=$(km_admin_plan_id "$plan_name")
	if [[ -z $plan_id ]]; then
		plan_id=$(km_admin_curl /v1/plans -H 'content-type: application/json' \
			-d "{\"name\":\"$plan_name\",\"limits\":$limits}" |
			python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
		[[ -n $plan_id ]] || km_die "could not create plan $plan_name through the admin API"
		km_log "created plan $plan_name ($plan_id)" >&2
	fi
	[[ -f $file ]] && key=$(sed -n 's/^KEY=//p' "$file")
	[[ -n $key ]] && code=$(km_peek "$key")
	if [[ -z $key || $code == 401 ]]; then
		key=$(km_admin_new_key "$plan_id" "$plan_name")
		[[ -n $key ]] || km_die "could not create a $plan_name key through the admin API"
		(umask 077 && printf 'KEY=%s\n' "$key" >"$file")
		km_log "created a $plan_name key (kept in $(km_rel "$file"))" >&2
	fi
	# The relay projects a new key into Redis within a moment.
	km_wait 10 km_peek_ok "$key" ||
		km_die "the limiter does not know the $plan_name key yet (see $(km_rel "$KM_LOGS/limiter.log"))"
	printf '%s\n' "$key"
}

# km_peek KEY: the limiter's status for KEY at cost 0 (spends nothing).
km_peek() {
	curl -sS -o /dev/null -w '%{http_code}' -H "x-api-key: $1" -H 'x-keymeter-cost: 0' \
		"http://$(km_client_addr "$KEYMETER_LIMITER_LISTEN")/v1/authorize"
}

km_peek_ok() { [[ $(km_peek "$1") == 200 ]]; }
