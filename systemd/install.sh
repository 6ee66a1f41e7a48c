#!/usr/bin/env bash
# Install (or upgrade) lightshow as a systemd service on Raspberry Pi OS: `sudo make install`.
# Safe to run again: it upgrades the code and venv, and never overwrites /etc/lightshow/config.toml.
#
#   --dry-run         print what would be done, change nothing
#   DESTDIR=/tmp/root stage the files under another root and skip every system change
#                     (users, apt, pip, systemctl): for tests and packaging
#   PREFIX, CONFDIR, UNITDIR, STATEDIR override /opt/lightshow, /etc/lightshow,
#                     /etc/systemd/system, /var/lib/lightshow
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODEL_FILE="${LIGHTSHOW_MODEL_FILE:-/proc/device-tree/model}"
SERVICE_USER=lightshow
SCRIPT=install.sh
HELP_LINES=2,10
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
for dir in "$PREFIX" "$CONFDIR" "$UNITDIR" "$STATEDIR"; do
    if [[ "$dir" != /?* ]]; then
        echo "install.sh: expected absolute paths, found '$dir'" >&2; exit 2
    fi
done

OPT="$DESTDIR$PREFIX"
VENV="$PREFIX/.venv"
MODEL=""
[[ -r "$MODEL_FILE" ]] && MODEL="$(tr -d '\0' < "$MODEL_FILE")"

# --- user and groups: membership in gpio/audio is what opens /dev/gpio* and /dev/snd/* ---
say "user $SERVICE_USER in groups gpio, audio"
for group in gpio audio; do
    getent group "$group" >/dev/null || sys groupadd --system "$group"
done
if id -u "$SERVICE_USER" >/dev/null 2>&1; then
    sys usermod --append --groups gpio,audio "$SERVICE_USER"
else
    sys useradd --system --user-group --groups gpio,audio --home-dir "$STATEDIR" \
        --no-create-home --shell /usr/sbin/nologin "$SERVICE_USER"
fi

# --- system libraries: PortAudio and libsndfile back sounddevice and soundfile ---
apt_need() {  # install the Debian packages that are missing, refreshing the lists first
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' \
            || missing+=("$pkg")
    done
    (( ${#missing[@]} )) || return 0
    sys apt-get update -qq
    sys apt-get install -y --no-install-recommends "${missing[@]}"
}
if command -v apt-get >/dev/null; then
    say "system packages"
    apt_need python3-venv libportaudio2 libsndfile1
fi

# --- the project: a clean copy, keeping the venv so upgrades do not rebuild it ---
say "project -> $OPT"
if [[ "$(realpath -m "$SRC")" == "$(realpath -m "$OPT")" ]]; then
    say "running from $OPT itself: nothing to copy"
else
    run mkdir -p "$OPT"
    run find "$OPT" -mindepth 1 -maxdepth 1 ! -name .venv -exec rm -rf {} +
    if (( DRY_RUN )); then
        echo "+ tar -C $SRC -c . | tar -C $OPT -x   (without .git, .venv, caches, build output)"
    else
        tar -C "$SRC" --exclude=./.git --exclude=./.venv --exclude=./out --exclude=./.cache \
            --exclude=./build --exclude='*.egg-info' --exclude=__pycache__ \
            --exclude=.pytest_cache --exclude=.hypothesis -cf - . | tar -C "$OPT" -xf -
    fi
fi

# --- the venv: only the runtime extras (numpy, sounddevice, soundfile, soxr; the panel's
# Starlette and uvicorn), never TensorFlow.
# A plain install, as any user's `pip install` is: the package and the shipped models (in
# the venv's share/lightshow/models) are the venv's own, and the copy in $PREFIX is only its
# source. The second step reinstalls the project itself on an upgrade (same version number)
# without fetching its dependencies again. System site packages stay visible so Debian's
# GPIO packages can stand in if pip cannot build one.
say "venv $VENV"
[[ -x "$DESTDIR$VENV/bin/python" ]] || sys python3 -m venv --system-site-packages "$VENV"
sys "$VENV/bin/pip" install --quiet "${PREFIX}[pi,web]"
sys "$VENV/bin/pip" install --quiet --no-deps --force-reinstall "$PREFIX"

# --- the GPIO library: RPi.GPIO cannot drive a Pi 5 (RP1 chip); rpi-lgpio provides the same
# RPi.GPIO module on top of /dev/gpiochip and works on every model.
gpio_lib() {  # pip package, Debian package
    if (( DRY_RUN )) || [[ -n "$DESTDIR" ]]; then sys "$VENV/bin/pip" install --quiet "$1"
    elif ! "$VENV/bin/pip" install --quiet "$1"; then
        say "pip could not install $1; using Debian's $2 instead"
        apt_need "$2"
    fi
}
case "$MODEL" in
    "Raspberry Pi 5"*|"Raspberry Pi Compute Module 5"*)
        say "GPIO for $MODEL: rpi-lgpio"
        sys "$VENV/bin/pip" uninstall --quiet --yes RPi.GPIO  # left over from a Pi 4 card
        gpio_lib rpi-lgpio python3-rpi-lgpio ;;
    "Raspberry Pi"*)
        if [[ -z "$DESTDIR" ]] && (( ! DRY_RUN )) && "$VENV/bin/pip" show --quiet rpi-lgpio 2>/dev/null
        then say "GPIO for $MODEL: rpi-lgpio already installed"
        else say "GPIO for $MODEL: RPi.GPIO"; gpio_lib RPi.GPIO python3-rpi.gpio; fi ;;
    *)
        say "not a Raspberry Pi (${MODEL:-no $MODEL_FILE}): no GPIO library;" \
            "set [outputs] enabled = [\"terminal\"] in $CONFDIR/config.toml" ;;
esac

# --- config: the user's file is theirs; only a missing one is created. The folder is
# root:lightshow 0775 so that the panel (user lightshow) can replace config.toml atomically.
run mkdir -p "$DESTDIR$CONFDIR"
run chmod 0775 "$DESTDIR$CONFDIR"
sys chgrp "$SERVICE_USER" "$CONFDIR"
if [[ -e "$DESTDIR$CONFDIR/config.toml" ]]; then
    say "config $CONFDIR/config.toml exists: kept as is (defaults: $PREFIX/systemd/config.toml)"
else
    say "config $CONFDIR/config.toml (the documented defaults)"
    run install -D -m 0644 "$SRC/systemd/config.toml" "$DESTDIR$CONFDIR/config.toml"
fi

say "music folder $STATEDIR/music"
run mkdir -p "$DESTDIR$STATEDIR/music"
sys chown -R "$SERVICE_USER:$SERVICE_USER" "$STATEDIR"

# --- the units: the show and its web panel ---
UNITS=(lightshow.service lightshow-web.service)
for unit in "${UNITS[@]}"; do
    say "unit $UNITDIR/$unit"
    run install -D -m 0644 "$SRC/systemd/$unit" "$DESTDIR$UNITDIR/$unit"
done
sys systemctl daemon-reload
sys systemctl enable "${UNITS[@]}"
sys systemctl try-restart "${UNITS[@]}"  # an upgrade takes effect if they were running

say "done. Check the config, set the panel's password, then start:"
echo "    $VENV/bin/lightshow check-config --config $CONFDIR/config.toml"
echo "    sudo $VENV/bin/lightshow web set-password --config $CONFDIR/config.toml"
echo "    sudo systemctl start lightshow lightshow-web && journalctl -u lightshow -f"
echo "    then open http://$(hostname 2>/dev/null || echo '<pi>'):8080/ on a phone"
