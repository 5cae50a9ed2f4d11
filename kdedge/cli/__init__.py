"""The `kdedge` command: each command module parses its options, loads the recipe or run, and calls
one stage. Adding a command is one module here, imported below."""

from __future__ import annotations

import sys

import typer

# imported to register their commands, in the order `kdedge --help` lists them
from kdedge.cli import training  # noqa: F401  (isort: skip)
from kdedge.cli import export  # noqa: F401  (isort: skip)
from kdedge.cli import bench  # noqa: F401  (isort: skip)
from kdedge.cli import info  # noqa: F401  (isort: skip)
from kdedge.cli.app import EXIT_INTERRUPTED, app

__all__ = ["app", "main"]


def main() -> None:
    try:
        # standalone_mode=False: usage errors come back to us and print as one line, like all errors
        code = app(standalone_mode=False)
    except typer.Abort:
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:
        # click's UsageError family (vendored by newer typer): duck-typed to avoid private imports
        if not (hasattr(exc, "format_message") and isinstance(getattr(exc, "exit_code", None), int)):
            raise
        # pydantic's prefix on a Literal choice ("Value error, 'x' is not one of ...") says nothing to a user
        message = " ".join(exc.format_message().split()).replace("Value error, ", "")
        ctx = getattr(exc, "ctx", None)
        where = getattr(ctx, "command_path", None) or "kdedge"  # the subcommand's help has the option
        if message:  # empty when the help was shown because no arguments were given
            print(f"kdedge: error: {message} (see {where} --help)", file=sys.stderr)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
