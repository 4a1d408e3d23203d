"""Rewrite the computed figures (``size``, ``vram``) of every card in cards/ from modelctl's own estimator.

.venv/bin/python scripts/update_cards.py          # rewrite the cards that changed
.venv/bin/python scripts/update_cards.py --check  # exit 1 when a card disagrees with the estimator
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from modelctl.errors import ModelctlError
from modelctl.fit.synthetic import update_text

CARDS = Path(__file__).resolve().parent.parent / "cards"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="only report cards whose figures are stale")
    parser.add_argument("cards", nargs="*", type=Path, help="card files (default: every card under cards/)")
    args = parser.parse_args(argv)
    paths = args.cards or sorted(CARDS.rglob("*.md"))
    stale = 0
    for path in paths:
        text = path.read_text(encoding="utf-8")
        try:
            new = update_text(text, source=str(path))
        except ModelctlError as exc:
            print(f"update_cards: error: {exc}", file=sys.stderr)
            return 2
        if new == text:
            continue
        stale += 1
        if args.check:
            print(f"{path}: size/vram differ from the estimator (run scripts/update_cards.py)", file=sys.stderr)
        else:
            path.write_text(new, encoding="utf-8")
            print(f"updated {path}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
