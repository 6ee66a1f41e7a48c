"""``python -m training {train,evaluate,corpus,bench} ...``: the workshop's commands."""
import importlib
import sys

COMMANDS = {"train": "training.train", "evaluate": "training.evaluate",
            "corpus": "training.corpus", "bench": "training.bench"}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m training {{{','.join(COMMANDS)}}} [options]", file=sys.stderr)
        return 2
    return importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
