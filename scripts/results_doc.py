"""Keeps the generated tables embedded in a Markdown report equal to their sources.

A report marks each generated block with a pair of HTML comments:

    <!-- include: docs/results/tables/table1.md -->
    ...the file's text...
    <!-- /include -->

    <!-- summary: docs/results/tables/table1.csv docs/results/tables/vs_rag/table1.csv -->
    ...scripts/results_summary.py's table for those CSV files...
    <!-- /summary -->

Paths are relative to the repository root. Usage:

    python scripts/results_doc.py docs/results.md           # check: exit 1 naming stale blocks
    python scripts/results_doc.py docs/results.md --write   # refresh the blocks in place
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from results_summary import summary  # noqa: E402

BLOCK = re.compile(r"<!-- (include|summary): ([^>]+?) -->\n(.*?)<!-- /\1 -->", re.S)


def generated(kind: str, arguments: str, root: Path) -> str:
    paths = arguments.split()
    missing = [p for p in paths if not (root / p).is_file()]
    if missing:
        raise FileNotFoundError(f"{kind} block names missing file(s): {', '.join(missing)}")
    if kind == "include":
        if len(paths) != 1:
            raise ValueError(f"include takes one file, got {arguments!r}")
        return (root / paths[0]).read_text(encoding="utf-8").strip() + "\n"
    return summary([str(root / p) for p in paths]).strip() + "\n"


def refresh(text: str, root: Path = ROOT) -> tuple[str, list[str]]:
    """The text with every block regenerated, and the blocks whose content changed."""
    stale = []

    def replace(match: re.Match) -> str:
        kind, arguments, body = match.groups()
        content = generated(kind, arguments, root)
        if body != content:
            stale.append(f"{kind}: {arguments}")
        return f"<!-- {kind}: {arguments} -->\n{content}<!-- /{kind} -->"

    return BLOCK.sub(replace, text), stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--write", action="store_true", help="rewrite stale blocks in place")
    args = parser.parse_args(argv)
    text = args.report.read_text(encoding="utf-8")
    new, stale = refresh(text)
    blocks = len(BLOCK.findall(text))
    if args.write:
        if stale:
            args.report.write_text(new, encoding="utf-8")
        print(f"{args.report}: {blocks} block(s), {len(stale)} refreshed")
        return 0
    for block in stale:
        print(f"{args.report}: stale {block}")
    print(f"{args.report}: {blocks} block(s), {len(stale)} stale")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
