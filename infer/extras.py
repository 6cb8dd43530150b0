"""Optional extras: the base install is digits-infer on ONNX Runtime; training, export and the torch backend
need packages of their own. Missing ones are named in one line with the extra that brings them."""

from __future__ import annotations

import importlib
import sys


class MissingExtra(Exception):
    """A feature needs a package that is not installed: says which extra to install."""


def run_app(module: str, prog: str, extra: str, doing: str) -> None:
    """Run the typer `app` of `module` as `prog`, or exit 2 naming the missing package and `digits[extra]`."""
    try:
        app = importlib.import_module(module).app
    except ModuleNotFoundError as exc:
        print(f"{prog}: error: {exc.name} is not installed; {doing} needs pip install 'digits[{extra}]'",
              file=sys.stderr)
        sys.exit(2)
    app(prog_name=prog)
