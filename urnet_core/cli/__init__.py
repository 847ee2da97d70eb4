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


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions keep their line breaks (long single lines are wrapped, indented ones kept as
    they are); a flag's default is shown when it has a real one."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        import textwrap

        out = []
        for line in text.splitlines():
            if len(line) > width and not line.startswith(" "):
                out.extend(textwrap.wrap(line, width, initial_indent=indent, subsequent_indent=indent))
            else:
                out.append(indent + line)
        return "\n".join(out)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "%(default)" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return text + " (default: %(default)s)"


#: Help for flags that a command registers without any (by destination name).
DEFAULT_HELP = {
    "seed": "random seed (same seed, same result)",
    "device": "cpu, cuda, cuda:N, or auto (a GPU when there is one)",
    "batch_size": "images per batch",
    "splits": "which splits of the manifest to process",
    "out": "output folder",
    "split": "split of the table the arrays cover",
}


def version() -> str:
    """The installed package's version (the source tree's when it is not installed)."""
    import importlib.metadata

    try:
        return importlib.metadata.version("urnet_core")
    except importlib.metadata.PackageNotFoundError:
        from urnet_core import __version__

        return __version__


def _describe(parser: argparse.ArgumentParser, module) -> None:
    """Every sub-command has a description (its module docstring when it sets none), every flag
    a help text, and the help shows defaults."""
    for sub in [parser] + [a for action in parser._actions if isinstance(action, argparse._SubParsersAction)
                           for a in action.choices.values()]:
        sub.formatter_class = HelpFormatter
        if not sub.description and module.__doc__:
            sub.description = module.__doc__.strip()
        for action in sub._actions:
            if action.help is None and action.dest != "help":
                action.help = DEFAULT_HELP.get(action.dest, action.dest.replace("_", " "))


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="urnet", formatter_class=HelpFormatter,
        description="URNet study: learning image classifiers from noisy web data (reference implementation of "
                    "Li et al., arXiv:1811.00700). The pipeline's commands in order: data -> train (baseline) -> "
                    "features -> weights -> train (reweighted); `urnet study` runs the whole study with its "
                    "notebooks and writes the HTML reports. `urnet COMMAND -h` for each command's flags.")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log debug messages, third-party INFO logs (faiss, papermill, the kernel) and full "
                             "tracebacks")
    parser.add_argument("--version", action="version", version=f"urnet {version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"urnet_core.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"urnet_core.cli.{name}":
                continue  # command not built in this version
            raise
        module.register(subparsers)
        _describe(subparsers.choices[name], module)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # third-party INFO chatter (faiss's loader, papermill's cell log): -v shows it
        for name in ("faiss", "faiss.loader", "papermill", "traitlets", "nbconvert", "matplotlib", "PIL"):
            logging.getLogger(name).setLevel(logging.WARNING)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from urnet_core.study.errors import NotebookFailedError
    from urnet_core.utils.signals import SIGTERM_EXIT, Terminated, sigterm_as_interrupt

    try:
        with sigterm_as_interrupt():  # a scheduler's stop cleans up like Ctrl-C
            return int(args.func(args) or 0)
    except NotebookFailedError as exc:
        # The notebook's own error, its cell and its executed copy: the kernel's traceback is
        # in that copy (and logged with -v); the runner's frames would say nothing more.
        if args.verbose:
            raise
        print(f"urnet {args.command}: error: {exc} (-v for the traceback)", file=sys.stderr)
        return 1
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
    except Terminated:
        if args.verbose:
            import traceback

            traceback.print_exc()
        print(f"urnet {args.command}: terminated (SIGTERM); {RESUME_HINT}", file=sys.stderr)
        return SIGTERM_EXIT
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
