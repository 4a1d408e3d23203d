"""The command line: parses arguments, calls one service, renders the result. No HTTP, no file formats here."""

from __future__ import annotations

# main() imports the app when called, so importing modelctl.cli (as the console script does) costs nothing.


def main() -> None:
    from modelctl.cli.app import run

    run()
