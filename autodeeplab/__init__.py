"""autodeeplab: differentiable hierarchical architecture search for semantic segmentation."""

from autodeeplab.decode import decode
from autodeeplab.genotype import Genotype, GenotypeError
from autodeeplab.models import build_model, load_model
from autodeeplab.ops import OPS, PRIMITIVES
from autodeeplab.space import Lattice, Supernet, build_supernet, cell_edges

__version__ = "0.1.0"

__all__ = [
    "OPS",
    "PRIMITIVES",
    "Genotype",
    "GenotypeError",
    "Lattice",
    "Supernet",
    "build_model",
    "build_supernet",
    "cell_edges",
    "decode",
    "load_model",
]
