# shellcheck shell=bash
# pg_cluster.sh: a private, throwaway PostgreSQL cluster for tests and demos. Source it, then
#
#   pg_cluster_start DBNAME   initdb + start on a free 127.0.0.1 port, create DBNAME, export
#                             DATABASE_URL=postgres://postgres@127.0.0.1:PORT/DBNAME;
#                             stopped and deleted when the calling shell exits (even on failure
#                             or Ctrl-C)
#   pg_cluster_stop           stop it now (idempotent)
#
# The cluster lives in a short /tmp/tpg.XXXXXX directory (data, log and the unix socket, whose
# path must stay under 107 bytes). As root, initdb and the server run as the `postgres` user,
# since PostgreSQL refuses to run as root. Settings: trust auth, max_connections=300,
# shared_buffers=128MB; fsync and synchronous_commit keep their defaults (printed at start).
#
# Environment: PG_BIN (server binaries; default: the newest /usr/lib/postgresql/*/bin, 15 when
# present), PG_CLUSTER_TIMEOUT (seconds to wait for readiness, default 30), PG_CLUSTER_OPTIONS
# (more server settings, e.g. "-c shared_preload_libraries=pg_stat_statements").

PG_CLUSTER_DIR=""
PG_CLUSTER_PORT=""

_pgc_say() { printf 'pg_cluster: %s\n' "$*" >&2; }

# Runs a command as the cluster's owner, from inside the cluster dir: the postgres user may not
# be allowed into the caller's working directory, and initdb fails there.
_pgc_run() {
	if [[ $EUID -eq 0 ]]; then
		(cd "$PG_CLUSTER_DIR" && su postgres -s /bin/bash -c "$(printf '%q ' "$@")")
	else
		(cd "$PG_CLUSTER_DIR" && "$@")
	fi
}

_pgc_find_bin() {
	if [[ -n ${PG_BIN:-} ]]; then
		[[ -x $PG_BIN/pg_ctl ]] || { _pgc_say "PG_BIN=$PG_BIN has no pg_ctl"; return 1; }
		return 0
	fi
	local dir
	if [[ -x /usr/lib/postgresql/15/bin/pg_ctl ]]; then
		PG_BIN=/usr/lib/postgresql/15/bin
		return 0
	fi
	for dir in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r); do
		if [[ -x $dir/pg_ctl ]]; then
			PG_BIN=$dir
			return 0
		fi
	done
	_pgc_say "PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin:" \
		"run bin/setup (Debian package postgresql) or set PG_BIN"
	return 1
}

_pgc_free_port() {
	ruby -rsocket -e 'server = TCPServer.new("127.0.0.1", 0); puts server.addr[1]; server.close'
}

# Puts a command in front of the EXIT trap, keeping what the caller registered.
_pgc_add_exit_trap() {
	local command=$1 previous
	previous=$(trap -p EXIT)
	if [[ -n $previous ]]; then
		eval "set -- $previous" # trap -- 'COMMAND' EXIT
		previous=$3
	fi
	# shellcheck disable=SC2064
	trap "$command${previous:+; $previous}" EXIT
}

pg_cluster_start() {
	local dbname=${1:?usage: pg_cluster_start DBNAME}
	local timeout=${PG_CLUSTER_TIMEOUT:-30}
	if [[ -n $PG_CLUSTER_DIR ]]; then
		_pgc_say "already running on port $PG_CLUSTER_PORT ($PG_CLUSTER_DIR)"
		return 1
	fi
	_pgc_find_bin || return 1
	if [[ $EUID -eq 0 ]] && ! id postgres >/dev/null 2>&1; then
		_pgc_say "running as root needs the postgres user: run bin/setup (Debian package postgresql)"
		return 1
	fi

	PG_CLUSTER_DIR=$(mktemp -d /tmp/tpg.XXXXXX) || return 1
	# Registered before anything can fail, so a half-started cluster is cleaned up too.
	_pgc_add_exit_trap pg_cluster_stop
	[[ -n $(trap -p INT) ]] || trap 'exit 130' INT
	[[ -n $(trap -p TERM) ]] || trap 'exit 143' TERM
	chmod 755 "$PG_CLUSTER_DIR"
	[[ $EUID -ne 0 ]] || chown postgres: "$PG_CLUSTER_DIR"

	local out
	if ! out=$(_pgc_run "$PG_BIN/initdb" -D "$PG_CLUSTER_DIR/data" -U postgres -A trust \
		--no-locale -E UTF8 --no-instructions 2>&1); then
		_pgc_say "initdb failed:"
		printf '%s\n' "$out" >&2
		return 1
	fi

	local attempt deadline=$((SECONDS + timeout))
	for attempt in 1 2 3; do
		PG_CLUSTER_PORT=$(_pgc_free_port) || { _pgc_say "could not find a free port (is ruby installed?)"; return 1; }
		if _pgc_run "$PG_BIN/pg_ctl" -D "$PG_CLUSTER_DIR/data" -l "$PG_CLUSTER_DIR/log" -w -t "$timeout" \
			-o "-c listen_addresses=127.0.0.1 -p $PG_CLUSTER_PORT -k $PG_CLUSTER_DIR" \
			-o "-c max_connections=300 -c shared_buffers=128MB ${PG_CLUSTER_OPTIONS:-}" start >/dev/null 2>&1; then
			break
		fi
		# Another process may take the port between the probe and the server's bind: try again.
		if ((attempt < 3)) && grep -q 'could not bind\|could not create any TCP/IP sockets' "$PG_CLUSTER_DIR/log" 2>/dev/null &&
			[[ ! -f $PG_CLUSTER_DIR/data/postmaster.pid ]]; then
			: >"$PG_CLUSTER_DIR/log"
			continue
		fi
		_pgc_say "the server did not start; its log ($PG_CLUSTER_DIR/log):"
		tail -n 30 "$PG_CLUSTER_DIR/log" >&2 2>/dev/null || true
		return 1
	done
	until "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_CLUSTER_PORT" -t 1; do
		if ((SECONDS >= deadline)); then
			_pgc_say "the server does not answer on 127.0.0.1:$PG_CLUSTER_PORT after ${timeout}s"
			return 1
		fi
		sleep 0.1
	done

	if ! out=$("$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_CLUSTER_PORT" -U postgres "$dbname" 2>&1); then
		_pgc_say "createdb $dbname failed: $out"
		return 1
	fi
	export DATABASE_URL="postgres://postgres@127.0.0.1:$PG_CLUSTER_PORT/$dbname"

	local about
	about=$("$PG_BIN/psql" -X -A -t -q -h 127.0.0.1 -p "$PG_CLUSTER_PORT" -U postgres -d "$dbname" -c "
		SELECT format('PostgreSQL %s on 127.0.0.1:%s, database %s (fsync=%s, synchronous_commit=%s)',
			split_part(current_setting('server_version'), ' ', 1), current_setting('port'),
			current_database(), current_setting('fsync'), current_setting('synchronous_commit'))") || return 1
	_pgc_say "$about"
}

pg_cluster_stop() {
	[[ -n $PG_CLUSTER_DIR ]] || return 0
	if [[ -f $PG_CLUSTER_DIR/data/postmaster.pid ]]; then
		_pgc_run "$PG_BIN/pg_ctl" -D "$PG_CLUSTER_DIR/data" -m fast -w -t 30 stop >/dev/null 2>&1 ||
			_pgc_say "pg_ctl stop failed; the server in $PG_CLUSTER_DIR may still run"
	fi
	rm -rf "$PG_CLUSTER_DIR"
	PG_CLUSTER_DIR=""
	PG_CLUSTER_PORT=""
	return 0 # runs first in the EXIT trap, where a failure would skip the caller's handlers
}
