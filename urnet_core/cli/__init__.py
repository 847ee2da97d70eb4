"""The ``urnet`` command line.

Sub-commands live in ``urnet_core.cli.<name>``; each module defines
``register(subparsers)`` which adds its parser and sets ``func`` to a callable taking the
parsed arguments and returning an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Order is the order shown in ``urnet --help``: the pipeline's order.
COMMAND_MODULES = ("data", "train", "features", "weights", "study", "bench")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="urnet", description="URNet study: learning from noisy web data.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"urnet_core.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"urnet_core.cli.{name}":
                continue  # command not built in this version
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # third-party INFO chatter (faiss's loader, papermill's cell log): -v shows it
        for name in ("faiss", "faiss.loader", "papermill", "traitlets"):
            logging.getLogger(name).setLevel(logging.WARNING)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except FileNotFoundError as exc:
        # A missing input is bad input: one clear line (-v/--verbose shows the traceback).
        if args.verbose:
            raise
        print(f"urnet {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        # The environment failed (disk full, no permission, I/O error): one line saying how to go on.
        if args.verbose:
            raise
        print(f"urnet {args.command}: error: {exc}; {RESUME_HINT} (-v for the traceback)",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if args.verbose:
            raise
        print(f"urnet {args.command}: interrupted; {RESUME_HINT}", file=sys.stderr)
        return 130
    except (ValueError, TypeError, KeyError) as exc:
        # Bad input is reported as one clear line, not a trace from deep inside.
        if args.verbose:
            raise
        print(f"urnet {args.command}: error: {exc}", file=sys.stderr)
        return 1


#: What an interrupted or failed command tells the user (every command keeps finished work).
RESUME_HINT = ("rerun the same command to resume (finished work is kept; unfinished output is "
               "discarded, never left half-written)")


if __name__ == "__main__":
    sys.exit(main())
