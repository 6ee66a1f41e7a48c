"""`lightshow ctl ...` and `lightshow web ...`: the commands that talk to a running show."""
from __future__ import annotations

import argparse
import json
import sys
import time

CTL_ACTIONS = ("status", "start", "stop", "next", "blackout", "relay-test", "log")


def _socket(args) -> str:
    from pi.config.load import load_config
    from pi.config.panel import socket_path

    return args.socket or socket_path(load_config(args.config))


def cmd_ctl(args: argparse.Namespace) -> int:
    from pi.daemon.control_socket import ControlError, request

    path = _socket(args)
    try:
        if args.action == "status":
            st = request(path, "status")["status"]
        elif args.action == "log":
            print("\n".join(request(path, "log")["lines"]))
            return 0
        else:
            request(path, args.action)
            print(f"{args.action}: sent")
            return 0
    except ControlError as exc:
        if args.action == "status" and args.json:
            print(json.dumps({"state": "not running", "error": str(exc)}))
        print(f"lightshow ctl: {exc}", file=sys.stderr)
        return 3  # LSB "program is not running" for status, and a failure for the rest
    if args.json:
        print(json.dumps(st))
        return 0
    lamps = "".join("●" if x else "·" for x in st.get("lamps", []))
    pos = st.get("position_s")
    print(f"state:   {st['state']}" + (f" ({st['detail']})" if st.get("detail") else ""))
    print(f"song:    {st.get('song') or '-'}" + (f" at {pos:.0f} s" if pos is not None else ""))
    print(f"next:    {st.get('next_song') or '-'}")
    print(f"model:   {st.get('model')}")
    print(f"lamps:   {lamps}")
    print("counts:  " + ", ".join(f"{v} {k}" for k, v in st.get("counters", {}).items()))
    sched = st.get("schedule")
    if sched:
        print(f"schedule: next start {sched.get('next_start') or '-'}, next stop "
              f"{sched.get('next_stop') or '-'}")
    wear = st.get("wear") or []
    if wear:
        rated = wear[0]["rated"]
        print(f"wear:    switchings per relay, rated {rated or 'not set'} "
              f"(outputs.rpigpio.rated_switchings)")
    for w in wear:
        share = f", {100 * w['life_used']:.1f}% of its life" if w["life_used"] is not None else ""
        flag = "  <- replace soon" if w["replace_soon"] else ""
        print(f"         ch{w['channel']} ({w['relay']}): {w['switchings']}{share}{flag}")
    for line in st.get("errors", []):
        print(f"recent:  {line}")
    return 0


def cmd_web(args: argparse.Namespace) -> int:
    from pi.config.load import load_config

    config = load_config(args.config)
    if args.action == "set-password":
        from pi.web.auth import PasswordError, read_new_password, write_password_file

        try:
            password = read_new_password(stdin=args.password_stdin)
        except PasswordError as exc:
            print(f"lightshow web set-password: {exc}", file=sys.stderr)
            return 2
        path = write_password_file(config.web.password_file, password)
        print(f"password set: its salted scrypt hash is in {path}; restart the panel "
              f"(sudo systemctl restart lightshow-web) if it runs")
        return 0
    from pi.web.app import serve

    return serve(config, config_path=args.config, listen=args.listen)


def add_commands(sub, common, config_opt) -> None:
    c = sub.add_parser("ctl", parents=[common], help="control the running show: "
                       + ", ".join(CTL_ACTIONS))
    c.add_argument("action", choices=CTL_ACTIONS)
    config_opt(c)
    c.add_argument("--socket", help="control socket (default: control.socket from the config)")
    c.add_argument("--json", action="store_true", help="status as JSON")
    c.set_defaults(func=cmd_ctl)

    w = sub.add_parser("web", parents=[common], help="the web panel (or: web set-password)")
    w.add_argument("action", nargs="?", choices=("serve", "set-password"), default="serve")
    config_opt(w)
    w.add_argument("--listen", help='"host:port" (overrides web.listen)')
    w.add_argument("--password-stdin", action="store_true",
                   help="set-password: read the password from one line of standard input")
    w.set_defaults(func=cmd_web)


def wait_for_socket(path: str, timeout: float) -> bool:
    """For scripts and tests: True once the control socket answers (polls every 50 ms)."""
    from pi.daemon.control_socket import ControlError, request

    until = time.monotonic() + timeout
    while time.monotonic() < until:
        try:
            request(path, "status", timeout=1.0)
            return True
        except ControlError:
            time.sleep(0.05)
    return False
