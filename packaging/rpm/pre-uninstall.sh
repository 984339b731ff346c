# glint %preun: on erase (not upgrade), disable and stop both units.
if [ $1 -eq 0 ]; then
    systemctl --no-reload disable --now glint.service glint.socket >/dev/null 2>&1 || :
fi
