"""The command line: parses arguments, calls one service, renders the result. No HTTP, no file formats here."""

from __future__ import annotations


def main() -> None:
    from modelctl.cli.app import run

    run()
