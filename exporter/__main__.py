"""`digits-export` and `python -m exporter`: the CLI, or one line saying which extra to install when the
export packages are missing (the base install is inference only)."""

from infer.extras import run_app


def main() -> None:
    run_app("exporter.cli", "digits-export", "export", "exporting")


if __name__ == "__main__":
    main()
