#!/usr/bin/env bash
# Remove the lightshow services (the show and its web panel) and /opt/lightshow: `sudo make uninstall`. Safe to run again.
# Keeps /etc/lightshow (your config), /var/lib/lightshow (your music) and the lightshow user.
#
#   --dry-run         print what would be done, change nothing
#   DESTDIR=/tmp/root remove from a staged root and skip systemctl (tests)
#   PREFIX, CONFDIR, UNITDIR, STATEDIR as for install.sh
set -euo pipefail

SCRIPT=uninstall.sh
HELP_LINES=2,8
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# rm -rf on a computed path: refuse anything that is not a dedicated absolute folder.
case "$PREFIX" in
    /|/usr|/usr/*|/etc|/var|/home|/opt|"") echo "uninstall.sh: refusing PREFIX='$PREFIX'" >&2
                                           exit 2 ;;
    /?*) ;;
    *) echo "uninstall.sh: expected an absolute PREFIX, found '$PREFIX'" >&2; exit 2 ;;
esac

UNITS=(lightshow-web.service lightshow.service)
# Stopping runs the service's own shutdown, which switches every relay off.
if [[ -z "$DESTDIR" ]] && command -v systemctl >/dev/null; then
    for unit in "${UNITS[@]}"; do
        say "stopping and disabling $unit"
        run systemctl disable --now "$unit" 2>/dev/null || true
    done
fi
removed=0
for unit in "${UNITS[@]}"; do
    if [[ -e "$DESTDIR$UNITDIR/$unit" ]]; then
        say "removing $UNITDIR/$unit"
        run rm -f "$DESTDIR$UNITDIR/$unit"
        removed=1
    fi
done
if (( removed )); then
    sys systemctl daemon-reload
    sys systemctl reset-failed "${UNITS[@]}" 2>/dev/null || true
fi
if [[ -e "$DESTDIR$PREFIX" ]]; then
    say "removing $PREFIX"
    run rm -rf "$DESTDIR$PREFIX"
fi

say "done. Kept: $CONFDIR (config), $STATEDIR (music), user lightshow. To remove them too:"
echo "    sudo rm -r $CONFDIR $STATEDIR && sudo userdel lightshow"
