"""`digits-train` and `python -m trainer` (also `torchrun ... -m trainer`): the CLI, or one line saying which
extra to install when the training packages are missing (the base install is inference only)."""

import sys


def main() -> None:
    try:
        from trainer.cli import app
    except ModuleNotFoundError as exc:
        print(f"digits-train: error: {exc.name} is not installed; training needs pip install 'digits[train]'",
              file=sys.stderr)
        sys.exit(2)
    app(prog_name="digits-train")


if __name__ == "__main__":
    main()
