# shellcheck shell=bash
# pgbouncer.sh: a private PgBouncer in transaction mode in front of the cluster pg_cluster.sh
# started. Source both, start the cluster, then
#
#   pgbouncer_start   write a config in a /tmp/tpgb.XXXXXX directory, start pgbouncer on a free
#                     127.0.0.1 port (as the postgres user when root: pgbouncer refuses root),
#                     export PGBOUNCER_URL (DATABASE_URL's database, through the pooler);
#                     stopped and deleted when the calling shell exits
#   pgbouncer_stop    stop it now (idempotent)
#
# Settings: pool_mode = transaction, default_pool_size = 20 server connections per database,
# max_client_conn = 1000, trust auth, and ignore_startup_parameters = extra_float_digits (sqlx
# sends it at connect; PgBouncer refuses unknown startup parameters otherwise).

PGBOUNCER_DIR=""

_pgb_say() { printf 'pgbouncer: %s\n' "$*" >&2; }

pgbouncer_start() {
	[[ -n ${PG_CLUSTER_PORT:-} ]] || { _pgb_say "start the cluster first (pg_cluster_start)"; return 1; }
	command -v pgbouncer >/dev/null || { _pgb_say "pgbouncer is not installed: run bin/setup (Debian package pgbouncer)"; return 1; }
	PGBOUNCER_DIR=$(mktemp -d /tmp/tpgb.XXXXXX) || return 1
	_pgc_add_exit_trap pgbouncer_stop
	chmod 755 "$PGBOUNCER_DIR"
	local port database=${DATABASE_URL##*/}
	port=$(_pgc_free_port) || return 1
	cat >"$PGBOUNCER_DIR/pgbouncer.ini" <<-INI
		[databases]
		* = host=127.0.0.1 port=$PG_CLUSTER_PORT
		[pgbouncer]
		listen_addr = 127.0.0.1
		listen_port = $port
		unix_socket_dir =
		auth_type = trust
		auth_file = $PGBOUNCER_DIR/users.txt
		pool_mode = transaction
		default_pool_size = 20
		max_client_conn = 1000
		ignore_startup_parameters = extra_float_digits
		logfile = $PGBOUNCER_DIR/pgbouncer.log
		pidfile = $PGBOUNCER_DIR/pgbouncer.pid
	INI
	printf '"postgres" ""\n"tasker_app" ""\n' >"$PGBOUNCER_DIR/users.txt"
	local run=(pgbouncer -d "$PGBOUNCER_DIR/pgbouncer.ini")
	if [[ $EUID -eq 0 ]]; then
		chown -R postgres: "$PGBOUNCER_DIR"
		run=(su postgres -s /bin/bash -c "$(printf '%q ' "${run[@]}")")
	fi
	if ! "${run[@]}"; then
		_pgb_say "pgbouncer did not start:"
		tail -n 20 "$PGBOUNCER_DIR/pgbouncer.log" >&2 2>/dev/null || true
		return 1
	fi
	local deadline=$((SECONDS + 10))
	until "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -t 1; do
		if ((SECONDS >= deadline)); then
			_pgb_say "pgbouncer does not answer on 127.0.0.1:$port"
			return 1
		fi
		sleep 0.1
	done
	export PGBOUNCER_URL="postgres://postgres@127.0.0.1:$port/$database"
	_pgb_say "pgbouncer $(pgbouncer --version | head -1 | cut -d' ' -f2) in transaction mode on 127.0.0.1:$port -> 127.0.0.1:$PG_CLUSTER_PORT"
}

pgbouncer_stop() {
	[[ -n $PGBOUNCER_DIR ]] || return 0
	if [[ -f $PGBOUNCER_DIR/pgbouncer.pid ]]; then
		kill "$(cat "$PGBOUNCER_DIR/pgbouncer.pid")" 2>/dev/null || true
		sleep 0.2
	fi
	rm -rf "$PGBOUNCER_DIR"
	PGBOUNCER_DIR=""
}
