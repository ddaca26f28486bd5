"""`ldmkit …` subcommands: parse, call the library, report. Thin on purpose.

Each module here adds its subcommands with ``add_parsers(sub)``. A user's mistake (bad option,
missing file, wrong size: an `ldmkit.errors.LdmkitError`) ends with one line on stderr and exit code 2,
never a traceback; ``LDMKIT_DEBUG=1`` shows the traceback instead. Any other exception, a ``ValueError``
included, is a bug: it keeps its traceback and exits with 1. docs/errors.md lists the messages. A warning
(a prompt cut to the model's length, an unreadable image skipped) is one line too, ``ldmkit CMD: warning: …``.
Output a locale cannot encode is written as backslash escapes, not an error; a reader of stdout that goes
away (``ldmkit … | head``) ends the command quietly with exit code 141, as SIGPIPE would.
"""

from __future__ import annotations

import argparse
import codecs
import os
import sys
import warnings

from ldmkit.cli import attention, convert, data, edit, eval, finetune, generate, prompt_edit, serve, train
from ldmkit.cli.common import OneLineParser, recover_text
from ldmkit.errors import LdmkitError

EXIT_USAGE = 2
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a tool that SIGPIPE ended
COMMAND_MODULES = (train, finetune, generate, attention, edit, prompt_edit, serve, data, convert, eval)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="ldmkit", description="Latent diffusion: train, sample, measure.")
    sub = parser.add_subparsers(dest="command", required=True)  # subcommands' parsers are OneLineParsers too
    for module in COMMAND_MODULES:
        module.add_parsers(sub)
    return parser


def _tolerant_output() -> None:
    """stdout and stderr writing what their encoding cannot hold (a '→' under a Latin-1 or C locale) as
    backslash escapes instead of raising; UTF-8 streams are left as they are."""
    for stream in (sys.stdout, sys.stderr):
        encoding = getattr(stream, "encoding", None)
        if encoding and codecs.lookup(encoding).name != "utf-8" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def command_name(args: argparse.Namespace) -> str:
    """The command as typed, with its subcommand where it has one ("eval generate", "data pack"), as argparse
    names it in its own errors."""
    sub = getattr(args, f"{args.command}_command", None)
    return f"{args.command} {sub}" if sub else args.command


def main(argv: list[str] | None = None) -> int:
    _tolerant_output()
    try:
        return _main(argv)
    except BrokenPipeError:  # stdout's reader went away (Python docs, "Note on SIGPIPE")
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # what is still buffered goes nowhere, not to a second error at exit
        return EXIT_BROKEN_PIPE


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    recover_text(args)  # UTF-8 prompts under a locale that is not UTF-8
    try:
        with warnings.catch_warnings():
            if not os.environ.get("LDMKIT_DEBUG"):  # one plain line, like the errors, not Python's file:line form
                warnings.showwarning = lambda message, *rest, **kw: print(
                    f"ldmkit {command_name(args)}: warning: {' '.join(str(message).split())}", file=sys.stderr)
            args.func(args)
            sys.stdout.flush()  # a closed pipe shows here, not at exit
    except LdmkitError as e:
        if os.environ.get("LDMKIT_DEBUG"):
            raise
        message = " ".join(str(e).split())  # one line, whatever the message holds
        print(f"ldmkit {command_name(args)}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"ldmkit {command_name(args)}: interrupted", file=sys.stderr)
        return 130
    return 0
