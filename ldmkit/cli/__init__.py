"""`ldmkit …` subcommands: parse, call the library, report. Thin on purpose.

Each module here adds its subcommands with ``add_parsers(sub)``. A user's mistake (bad option,
missing file, wrong size: an `ldmkit.errors.LdmkitError`) ends with one line on stderr and exit code 2,
never a traceback; ``LDMKIT_DEBUG=1`` shows the traceback instead. Any other exception, a ``ValueError``
included, is a bug: it keeps its traceback and exits with 1. docs/errors.md lists the messages. A warning
(a prompt cut to the model's length, an unreadable image skipped) is one line too, ``ldmkit CMD: warning: …``.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from ldmkit.cli import attention, convert, data, edit, eval, finetune, generate, prompt_edit, serve, train
from ldmkit.cli.common import OneLineParser
from ldmkit.errors import LdmkitError

EXIT_USAGE = 2
COMMAND_MODULES = (train, finetune, generate, attention, edit, prompt_edit, serve, data, convert, eval)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="ldmkit", description="Latent diffusion: train, sample, measure.")
    sub = parser.add_subparsers(dest="command", required=True)  # subcommands' parsers are OneLineParsers too
    for module in COMMAND_MODULES:
        module.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            if not os.environ.get("LDMKIT_DEBUG"):  # one plain line, like the errors, not Python's file:line form
                warnings.showwarning = lambda message, *rest, **kw: print(
                    f"ldmkit {args.command}: warning: {' '.join(str(message).split())}", file=sys.stderr)
            args.func(args)
    except LdmkitError as e:
        if os.environ.get("LDMKIT_DEBUG"):
            raise
        message = " ".join(str(e).split())  # one line, whatever the message holds
        print(f"ldmkit {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"ldmkit {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0
