"""``python -m autodeeplab.analysis RUN_DIR``: write the analysis figures of a search run as PNG.

Files go to ``RUN_DIR/analysis`` (or ``--out``); an existing file is never replaced unless
``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure

from autodeeplab.analysis.cellgraph import plot_cell
from autodeeplab.analysis.graphs import plot_comparison, plot_lattice
from autodeeplab.analysis.plots import (
    plot_alpha,
    plot_alpha_evolution,
    plot_beta,
    plot_entropy,
    plot_genotype_changes,
)
from autodeeplab.analysis.run import SearchRun, load_run

#: File stem -> figure of one run after an epoch.
FIGURES: dict[str, Callable[[SearchRun, int], Figure]] = {
    "alpha": plot_alpha,
    "alpha_evolution": lambda run, epoch: plot_alpha_evolution(run),
    "entropy": lambda run, epoch: plot_entropy(run),
    "beta": plot_beta,
    "lattice": plot_lattice,
    "cell": plot_cell,
    "genotype_changes": lambda run, epoch: plot_genotype_changes(run),
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m autodeeplab.analysis",
        description="Write the analysis figures of a search run directory as PNG files.",
    )
    parser.add_argument("run_dir", type=Path, help="the search run directory")
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: RUN_DIR/analysis)"
    )
    parser.add_argument(
        "--compare", type=Path, default=None, metavar="OTHER_RUN_DIR", help="also draw compare.png"
    )
    parser.add_argument(
        "--epoch",
        type=int,
        default=-1,
        help="epoch of the per-epoch figures: an epoch number, or a negative position from the "
        "end (-1, the default, is the last recorded epoch; -2 the one before)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    matplotlib.use("Agg")  # files only, never a window
    out = args.out if args.out is not None else args.run_dir / "analysis"
    names = list(FIGURES) + (["compare"] if args.compare is not None else [])
    targets = {name: out / f"{name}.png" for name in names}
    existing = [str(path) for path in targets.values() if path.exists()]
    if existing and not args.overwrite:
        print(
            "error: refusing to replace existing files (pass --overwrite to redraw them all, "
            "or --out for another folder): " + ", ".join(existing),
            file=sys.stderr,
        )
        return 2
    try:
        run = load_run(args.run_dir)
        other = load_run(args.compare) if args.compare is not None else None
        figures = {name: draw(run, args.epoch) for name, draw in FIGURES.items()}
        if other is not None:
            figures["compare"] = plot_comparison(run, other, args.epoch)
        out.mkdir(parents=True, exist_ok=True)
        for name, figure in figures.items():
            figure.savefig(targets[name], dpi=120)
            print(targets[name])
        stale = out / "compare.png"
        if other is None and args.overwrite and stale.exists():
            print(
                f"note: {stale} is from an earlier command and was not redrawn "
                "(pass --compare OTHER_RUN_DIR to redraw it)",
                file=sys.stderr,
            )
    except (OSError, ValueError) as err:  # GenotypeError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
