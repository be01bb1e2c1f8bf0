#!/bin/sh
# Before removal (not before an upgrade): stop and disable the daemon, its
# sockets, the sweep timer and the agent. deb passes "remove"/"purge" (or
# "upgrade"); rpm passes the number of versions left (0 on erase, 1 on
# upgrade). The state in /var/lib/pskvault and the pskvault user stay: they
# hold the keys, and removing a package must not destroy them.
set -e
case "$1" in
remove | purge | 0) ;;
*) exit 0 ;;
esac
if [ -d /run/systemd/system ]; then
	systemctl disable --now pskvault-sweep.timer pskvault-agent.service \
		pskvault.service pskvault-admin.socket pskvault-data.socket >/dev/null 2>&1 || true
fi
exit 0
