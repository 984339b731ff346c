# glint %post: the system user, then enable both units and start the socket (as
# %systemd_post would, plus the socket start Debian packages do).
systemd-sysusers glint.conf || :
chgrp glint /etc/glint/glint.toml 2>/dev/null || :
if [ $1 -eq 1 ]; then
    systemctl --no-reload preset glint.socket glint.service >/dev/null 2>&1 || :
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    systemctl start glint.socket >/dev/null 2>&1 || :
fi
