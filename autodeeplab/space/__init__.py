"""What is searched: lattice geometry, mixed ops, the search cell, the supernet and its heads."""

from autodeeplab.space.edges import cell_edges
from autodeeplab.space.lattice import DIRECTIONS, Lattice, normalise_beta
from autodeeplab.space.supernet import Supernet, build_supernet

__all__ = ["DIRECTIONS", "Lattice", "Supernet", "build_supernet", "cell_edges", "normalise_beta"]
