"""``python -m training {train,evaluate,compare,corpus,bench} ...``: the workshop's commands."""
import importlib
import sys

COMMANDS = {"train": "training.train", "evaluate": "training.evaluate",
            "compare": "training.compare", "corpus": "training.corpus.demo",
            "bench": "training.bench"}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m training {{{','.join(COMMANDS)}}} [options]", file=sys.stderr)
        return 2
    from pi.daemon import stopping

    # SIGTERM, SIGHUP, SIGQUIT unwind like Ctrl-C (Python's default would kill the process
    # without `finally`, leaving a half-written .NAME.tmp-* bundle folder in models/).
    previous = stopping.install()
    try:
        return importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])
    except stopping.Stopped as exc:
        print(f"{argv[0]}: stopped by signal {exc.signum}", file=sys.stderr)
        return 128 + exc.signum  # an interrupted run is not a success, whatever the signal
    except KeyboardInterrupt:
        print(f"{argv[0]}: interrupted", file=sys.stderr)
        return 130
    finally:
        stopping.restore(previous)


if __name__ == "__main__":
    sys.exit(main())
