"""`python -m diffdistill` runs the Kedro CLI of this project."""

from pathlib import Path

from kedro.framework.cli.cli import KedroCLI


def main() -> None:
    KedroCLI(Path.cwd()).main()


if __name__ == "__main__":
    main()
