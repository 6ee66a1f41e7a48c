# Shared by install.sh and uninstall.sh (sourced, not run): options, logging, and the two
# gates every change goes through, so that --dry-run and DESTDIR can be trusted to touch
# nothing they should not. Expects SCRIPT (the caller's name) and HELP_LINES (sed range).

# Where things go; each can be overridden from the environment (see install.sh).
DESTDIR="${DESTDIR:-}"
PREFIX="${PREFIX:-/opt/lightshow}"
CONFDIR="${CONFDIR:-/etc/lightshow}"
UNITDIR="${UNITDIR:-/etc/systemd/system}"
STATEDIR="${STATEDIR:-/var/lib/lightshow}"

DRY_RUN=0
for arg in "$@"; do
    case "$arg" in
        -n|--dry-run) DRY_RUN=1 ;;
        -h|--help) sed -n "${HELP_LINES}s/^# \{0,1\}//p" "$0"; exit 0 ;;
        *) echo "$SCRIPT: unknown argument '$arg'; expected --dry-run or --help" >&2; exit 2 ;;
    esac
done

say() { printf '==> %s\n' "$*"; }
# run: files; sys: the running system (users, apt, pip, systemctl).
run() {
    if (( DRY_RUN )); then printf '+'; printf ' %q' "$@"; printf '\n'; else "$@"; fi
}
sys() {
    if [[ -n "$DESTDIR" ]]; then printf 'skipped (DESTDIR):'; printf ' %q' "$@"; printf '\n'
    else run "$@"; fi
}

if [[ -z "$DESTDIR" ]] && (( ! DRY_RUN )) && [[ $EUID -ne 0 ]]; then
    echo "$SCRIPT: expected to run as root, found uid $EUID; use: sudo make ${SCRIPT%.sh}" >&2
    exit 1
fi
