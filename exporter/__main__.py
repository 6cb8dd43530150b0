"""`digits-export` and `python -m exporter`: the CLI, or one line saying which extra to install when the
export packages are missing (the base install is inference only)."""

import sys


def main() -> None:
    try:
        from exporter.cli import app
    except ModuleNotFoundError as exc:
        print(f"digits-export: error: {exc.name} is not installed; exporting needs pip install 'digits[export]'",
              file=sys.stderr)
        sys.exit(2)
    app(prog_name="digits-export")


if __name__ == "__main__":
    main()
