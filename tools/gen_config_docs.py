"""Regenerate the configuration reference in docs/configuration.md from policies/config.py.

The section between ``<!-- config-reference:start -->`` and
``<!-- config-reference:end -->`` is replaced by
:func:`policies.config_docs.render_config_reference`; the rest of the file is
left alone.

Run:   python tools/gen_config_docs.py            # rewrite docs/configuration.md
       python tools/gen_config_docs.py --check    # exit 1 if docs/configuration.md is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

START = "<!-- config-reference:start -->"
END = "<!-- config-reference:end -->"
ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "configuration.md"


class MarkerError(ValueError):
    """The file does not have exactly one well-ordered pair of markers."""


def replace_section(text: str, body: str) -> str:
    """``text`` with everything between the markers replaced by ``body``."""
    starts, ends = text.count(START), text.count(END)
    if starts != 1 or ends != 1:
        raise MarkerError(f"expected one {START} and one {END} marker, found {starts} and {ends}")
    head, rest = text.split(START)
    if END not in rest:
        raise MarkerError(f"{END} comes before {START}")
    _, tail = rest.split(END)
    return f"{head}{START}\n\n{body.rstrip()}\n\n{END}{tail}"


def render() -> str:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from policies.config_docs import render_config_reference

    return render_config_reference()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    parser.add_argument(
        "--file", type=Path, default=REFERENCE, help="file with the markers (docs/configuration.md)"
    )
    args = parser.parse_args(argv)

    target: Path = args.file
    try:
        current = target.read_text(encoding="utf-8")
        updated = replace_section(current, render())
    except (OSError, MarkerError) as exc:
        print(f"{target}: {exc}", file=sys.stderr)
        return 2
    if updated == current:
        return 0
    if args.check:
        print(
            f"{target}: the configuration reference is stale; run: python tools/gen_config_docs.py",
            file=sys.stderr,
        )
        return 1
    target.write_text(updated, encoding="utf-8")
    print(f"{target}: configuration reference updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
