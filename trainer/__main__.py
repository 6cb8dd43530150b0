"""`digits-train` and `python -m trainer` (also `torchrun ... -m trainer`): the CLI, or one line saying which
extra to install when the training packages are missing (the base install is inference only)."""

from infer.extras import run_app


def main() -> None:
    run_app("trainer.cli", "digits-train", "train", "training")


if __name__ == "__main__":
    main()
