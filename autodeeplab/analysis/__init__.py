"""Analysis of a search run directory (README: The run directory): load it, compute entropies
and genotype changes, and draw matplotlib figures of alpha, beta, the network path and the cell.

``python -m autodeeplab.analysis RUN_DIR`` writes every figure as PNG; the notebook
``notebooks/analyze_search.ipynb`` shows them with explanations.
"""

from autodeeplab.analysis.cellgraph import CellLayout, cell_layout, draw_cell, plot_cell
from autodeeplab.analysis.figures import AnalysisFigure
from autodeeplab.analysis.graphs import draw_lattice, draw_path, plot_comparison, plot_lattice
from autodeeplab.analysis.plots import (
    plot_alpha,
    plot_alpha_evolution,
    plot_beta,
    plot_entropy,
    plot_genotype_changes,
)
from autodeeplab.analysis.run import SearchRun, load_run, run_dir_from_env, smoke_search
from autodeeplab.analysis.stats import (
    GenotypeDiff,
    alpha_entropy,
    alpha_weights,
    beta_entropy,
    beta_probabilities,
    describe_changes,
    diff_genotypes,
    entropy,
    genotype_changes,
    mean_beta_entropy,
    stabilisation_epoch,
)

__all__ = [
    "AnalysisFigure",
    "CellLayout",
    "GenotypeDiff",
    "SearchRun",
    "alpha_entropy",
    "alpha_weights",
    "beta_entropy",
    "beta_probabilities",
    "cell_layout",
    "describe_changes",
    "diff_genotypes",
    "draw_cell",
    "draw_lattice",
    "draw_path",
    "entropy",
    "genotype_changes",
    "load_run",
    "mean_beta_entropy",
    "plot_alpha",
    "plot_alpha_evolution",
    "plot_beta",
    "plot_cell",
    "plot_comparison",
    "plot_entropy",
    "plot_genotype_changes",
    "plot_lattice",
    "run_dir_from_env",
    "smoke_search",
    "stabilisation_epoch",
]
