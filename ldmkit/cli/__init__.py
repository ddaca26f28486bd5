"""`ldmkit …` subcommands: parse, call the library, report. Thin on purpose.

Each module here adds its subcommands with ``add_parsers(sub)``. A user's mistake (bad option,
missing file, wrong size) ends with one line on stderr and exit code 2, never a traceback;
``LDMKIT_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys

from ldmkit.cli import attention, convert, data, edit, eval, generate, serve, train
from ldmkit.cli.common import UsageError
from ldmkit.config import ConfigError

EXIT_USAGE = 2
COMMAND_MODULES = (train, generate, attention, edit, serve, data, convert, eval)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ldmkit", description="Latent diffusion: train, sample, measure.")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ldmkit.data import DataError
    from ldmkit.storage import CheckpointError

    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (UsageError, ConfigError, CheckpointError, DataError, FloatingPointError, ValueError) as e:
        if os.environ.get("LDMKIT_DEBUG"):
            raise
        print(f"ldmkit {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"ldmkit {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0
