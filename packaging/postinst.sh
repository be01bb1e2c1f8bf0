#!/bin/sh
# After install or upgrade: create the pskvault user and groups
# (sysusers.d) and the state and run directories (tmpfiles.d) now, not at
# the next boot, and let systemd see the new units. Nothing is enabled or
# started: the vault must be initialised first (see /etc/pskvault/pskvault.toml).
set -e
if [ -d /run/systemd/system ]; then
	systemd-sysusers pskvault.conf || true
	systemd-tmpfiles --create pskvault.conf || true
	systemctl daemon-reload || true
elif command -v systemd-sysusers >/dev/null 2>&1; then
	# No running systemd (a container, a chroot): still create the users.
	systemd-sysusers --root=/ pskvault.conf || true
fi
exit 0
