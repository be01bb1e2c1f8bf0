#!/bin/sh
# simulators/swtpm.sh: start or stop a throwaway swtpm (TPM 2.0 simulator).
#
#   simulators/swtpm.sh start DIR [PORT]   # loopback TCP on PORT (default 2321) and PORT+1 (control)
#   simulators/swtpm.sh start-unix DIR     # unix sockets DIR/swtpm.sock and DIR/swtpm.sock.ctrl
#   simulators/swtpm.sh stop DIR           # stop the swtpm whose PID file is DIR/swtpm.pid
#
# State lives in DIR/state (created 0700), the PID in DIR/swtpm.pid, the log
# in DIR/swtpm.log. On start it prints the pskvault backend URI and, for TCP,
# the TPM2TOOLS_TCTI value. Only the process named by the PID file is ever
# signalled. The Go tests use internal/swtpmsim, which does the same.
set -eu

usage() { echo "usage: $0 start DIR [PORT] | start-unix DIR | stop DIR" >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd=$1 dir=$2

command -v swtpm >/dev/null 2>&1 || { echo "swtpm.sh: error: swtpm is not installed (apt-get install swtpm swtpm-tools)" >&2; exit 1; }

start() {
	mkdir -p "$dir/state"
	chmod 700 "$dir" "$dir/state"
	pidfile=$dir/swtpm.pid
	if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
		echo "swtpm.sh: error: swtpm already running with PID $(cat "$pidfile")" >&2
		exit 1
	fi
	rm -f "$pidfile"
	swtpm socket --tpm2 --tpmstate "dir=$dir/state" \
		--server "$1" --ctrl "$2" \
		--flags not-need-init,startup-clear \
		--log "file=$dir/swtpm.log,level=1" \
		--pid "file=$pidfile" --daemon
	i=0
	while [ ! -s "$pidfile" ]; do
		i=$((i + 1))
		[ $i -lt 100 ] || { echo "swtpm.sh: error: swtpm did not start; see $dir/swtpm.log" >&2; exit 1; }
		sleep 0.05
	done
}

case $cmd in
start)
	port=${3:-2321}
	start "type=tcp,port=$port,bindaddr=127.0.0.1" "type=tcp,port=$((port + 1)),bindaddr=127.0.0.1"
	echo "uri=tpm:swtpm=127.0.0.1:$port"
	echo "TPM2TOOLS_TCTI=swtpm:host=127.0.0.1,port=$port"
	echo "pid=$(cat "$dir/swtpm.pid")"
	;;
start-unix)
	start "type=unixio,path=$dir/swtpm.sock" "type=unixio,path=$dir/swtpm.sock.ctrl"
	echo "uri=tpm:swtpm-unix=$dir/swtpm.sock"
	echo "pid=$(cat "$dir/swtpm.pid")"
	;;
stop)
	pidfile=$dir/swtpm.pid
	[ -f "$pidfile" ] || { echo "swtpm.sh: no PID file at $pidfile; nothing to stop" >&2; exit 0; }
	pid=$(cat "$pidfile")
	case $pid in '' | *[!0-9]*) echo "swtpm.sh: error: bad PID file $pidfile" >&2; exit 1 ;; esac
	if kill "$pid" 2>/dev/null; then
		i=0
		while kill -0 "$pid" 2>/dev/null; do
			i=$((i + 1))
			[ $i -lt 100 ] || { kill -9 "$pid" 2>/dev/null || true; break; }
			sleep 0.05
		done
	fi
	rm -f "$pidfile"
	;;
*) usage ;;
esac
