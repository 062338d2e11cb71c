"""Side-by-side table of a bench/ab_gp_noise.sh run: one row per case and kernel (the launcher's own
split, and the fastest explicit split), one column per build variant, each cell the CUDA-graph median
in ms and its ratio to the first variant's, and the largest error against float64 of the variant.

    python bench/ab_summary.py out/results/gp_noise_tuning.csv base poly1 fma_phases
"""

from __future__ import annotations

import argparse
import csv
import re
from collections import defaultdict
from pathlib import Path

_LABEL = re.compile(r"^(?P<kernel>\S+) split (?P<split>\w+) \[(?P<tag>[^\]]+)\]$")
_ERROR = re.compile(r"max error ([0-9.e+-]+)")


def load(path: Path, tags: list[str]) -> dict:
    """{(shape, kernel): {tag: {split: (median_ms, max_error or None)}}} of the rows tagged with `tags`."""
    table: dict = defaultdict(lambda: defaultdict(dict))
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            m = _LABEL.match(row["backend"])
            if not m or m["tag"] not in tags:
                continue
            err = _ERROR.search(row.get("note") or "")
            table[(row["shape"], m["kernel"])][m["tag"]][m["split"]] = (
                float(row["median_ms"]),
                float(err.group(1)) if err else None,
            )
    return table


def summary(table: dict, tags: list[str]) -> list[str]:
    """Markdown lines: per case and kernel, the automatic split's and the best split's medians."""
    lines = ["| case | kernel | split | " + " | ".join(tags) + " |", "|---|---|---|" + "---|" * len(tags)]
    for (shape, kernel), by_tag in table.items():
        for which in ("auto", "best"):
            cells, ref = [], None
            for tag in tags:
                splits = by_tag.get(tag, {})
                if which == "auto":
                    pick = ("auto", splits["auto"]) if "auto" in splits else None
                else:
                    explicit = [(s, v) for s, v in splits.items() if s != "auto"]
                    pick = min(explicit, key=lambda sv: sv[1][0]) if explicit else None
                if pick is None:
                    cells.append("-")
                    continue
                split, (ms, err) = pick
                ref = ms if ref is None and tag == tags[0] else ref
                ratio = f" ({ms / ref:.3f}x)" if ref else ""
                where = f" s{split}" if which == "best" else ""
                cells.append(f"{ms:.4g}{ratio}{where}" + (f" err {err:.1e}" if err is not None else ""))
            lines.append(f"| {shape} | {kernel} | {which} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", type=Path, help="gp_noise_tuning.csv written by bench/tune_gp_noise.py")
    parser.add_argument("tags", nargs="+", help="the variants' labels; ratios are to the first")
    args = parser.parse_args()
    if not args.csv.is_file():
        raise SystemExit(f"ab_summary: no results file {args.csv}")
    table = load(args.csv, args.tags)
    if not table:
        raise SystemExit(f"ab_summary: no rows tagged {args.tags} in {args.csv}")
    print("\n".join(summary(table, args.tags)))


if __name__ == "__main__":
    main()
