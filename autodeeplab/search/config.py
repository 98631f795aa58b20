"""Typed configuration of the search stage (Hydra structured configs over ``conf/``).

Every field is documented here; ``conf/`` files only set values. Because the schema is a
dataclass, an unknown key, a wrong type or a missing required value stops a run with a message
that names the key.

The defaults below are the paper's setting (12 layers, 40 epochs, ...), for a config built in
Python. The command line starts from ``conf/search.yaml`` instead, whose groups pick a CPU-sized
search (``space/default.yaml``: 6 layers; ``search/default.yaml``: 10 epochs); ``--help`` prints
the composed values, and ``space=paper search=paper`` gives the paper's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import DictConfig

from autodeeplab.data.config import DataConfig, check_data_ranges
from autodeeplab.engine.config import RangeCheck, to_config


@dataclass
class SpaceConfig:
    """The search space (``space=<name>``) [P §3, §4.1]."""

    layers: int = 12  # L, cells along the network
    levels: int = 4  # resolutions: output stride 4 * 2**level (the retrain builds at most 4)
    filter_multiplier: int = 8  # F: a block at level s has F * 2**s channels
    blocks: int = 5  # B, blocks per cell
    # The stem's three 3x3 convs (two of stride 2): its output, at output stride 4, is the
    # lattice's level-0 input [P §4.1]
    stem_channels: list[int] = field(default_factory=lambda: [64, 64, 128])
    aspp_channels: int = 64  # width of each search-head ASPP branch
    # K of PC-DARTS partial channel connections: each edge's mixed op sees only the first C / K
    # channels of its input, the rest pass through, then a channel shuffle. 1 (default) is the
    # exact Auto-DeepLab supernet (eq. 6). K > 1 CHANGES THE ALGORITHM: a cheaper supernet
    # (K-fold smaller mixed-op activations, K**2-fold fewer pointwise and atrous FLOPs and
    # weights) whose alpha and beta are learnt on partial channels; decoding and retraining are
    # unchanged. K must divide F (the level-0 cell width). PC-DARTS's edge normalisation is not
    # included.
    partial_channels: int = 1


@dataclass
class OptimConfig:
    """Optimisers (``optim=<name>``); defaults are the paper's [P §5.1] where it gives them
    (``grad_clip`` and ``arch_betas`` it does not)."""

    # Weights: SGD, cosine from lr towards lr_min, stepped once per epoch over search.epochs
    # (DARTS's convention: the last epoch runs just above lr_min, 0.00104 at the paper's 40).
    lr: float = 0.025
    lr_min: float = 0.001
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 3e-4  # L2 on the weights
    # Max norm of the weight gradients (None: no clipping). Not in the paper: DARTS's practice,
    # which keeps the search stable; null gives the paper's optimiser exactly.
    grad_clip: float | None = 5.0
    arch_lr: float = 3e-3  # alpha and beta: Adam
    arch_weight_decay: float = 1e-3  # L2 on alpha and beta (Adam's, coupled as in DARTS)
    # Adam's betas: the paper does not give them; these are PyTorch's defaults (DARTS: 0.5, 0.999)
    arch_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])


@dataclass
class LoopConfig:
    """The bilevel schedule (``search.*``) [P §4.2, §5.1]."""

    epochs: int = 40  # passes over split A
    # Architecture steps run in epochs after this one, one per weight step (a batch of split
    # B). They run the supernet in training mode, as DARTS does: its BatchNorm running
    # statistics, which only the validation uses, follow B's batches as well as A's.
    arch_start_epoch: int = 20
    batch_size: int = 2  # images per weight step and per architecture step (per process)
    # Images per batch of the per-epoch validation. Images of different sizes (VOC, ADE20K,
    # folder) are padded to a batch's largest, which the supernet sees: 1 avoids that.
    eval_batch_size: int = 4
    max_steps: int | None = None  # cap on weight steps per epoch (None: a full pass over A)
    # Activation checkpointing per lattice node: the same search (BatchNorm statistics included)
    # in less memory, for about one more forward pass per step.
    checkpoint: bool = False
    # "fp32", or "bf16": bfloat16 autocast for the supernet (meant for GPUs; alpha, beta, their
    # softmax and the logits stay float32). Changes the arithmetic, not the algorithm.
    precision: str = "fp32"
    # Record each step's forward and backward pass as a CUDA graph on its first batch and
    # replay it for the next ones (autodeeplab/search/graphs.py; CUDA only): the same search
    # without the cost of launching the step's tens of thousands of small kernels one by one,
    # several times faster on a GPU. The graphs' memory stays reserved for the whole search.
    cuda_graphs: bool = False
    # PyTorch's deterministic algorithms for the whole search: on a GPU, two searches with the
    # same settings (graphed or not, resumed or not) then end with the same alpha, beta and
    # weights bit for bit. Without it some GPU kernels sum in a varying order, and Adam
    # magnifies the differences (up to 0.02 in alpha after a few epochs). A CPU search repeats
    # bit for bit either way. Costs GPU speed (see the README's Performance).
    deterministic: bool = False


@dataclass
class SearchConfig:
    """``conf/search.yaml``."""

    data: DataConfig = field(default_factory=DataConfig)
    space: SpaceConfig = field(default_factory=SpaceConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    search: LoopConfig = field(default_factory=LoopConfig)
    seed: int = 0  # seeds the weights, alpha/beta, the A/B split and the augmentation
    resume: bool = False  # continue from run_dir/checkpoints/last.pt
    device: str = "auto"  # "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
    threads: int | None = None  # torch CPU threads (None: torch's default)
    progress: bool = True  # progress bars
    tensorboard: bool = True  # write TensorBoard event files into the run directory


def check_search_config(cfg: SearchConfig) -> None:
    """Raises ``ValueError`` naming every setting of ``cfg`` outside its range (``key=value:
    expected ...``), so that a bad value stops a search before it writes anything or trains."""
    check = RangeCheck()
    space, optim, loop = cfg.space, cfg.optim, cfg.search
    for key in ("layers", "levels", "filter_multiplier", "blocks", "aspp_channels"):
        check.positive(f"space.{key}", getattr(space, key))
    check.channels("space.stem_channels", space.stem_channels, 3)
    k = space.partial_channels
    check.need(
        k >= 1 and space.filter_multiplier % k == 0,
        "space.partial_channels",
        k,
        f"a positive divisor of space.filter_multiplier={space.filter_multiplier}",
    )
    for key in ("lr", "arch_lr"):
        check.positive(f"optim.{key}", getattr(optim, key))
    for key in ("lr_min", "momentum", "weight_decay", "arch_weight_decay"):
        check.non_negative(f"optim.{key}", getattr(optim, key))
    check.positive("optim.grad_clip", optim.grad_clip, optional=True)
    betas = list(optim.arch_betas)
    check.need(
        len(betas) == 2 and all(0 <= b < 1 for b in betas),
        "optim.arch_betas",
        betas,
        "two numbers in [0, 1)",
    )
    check.positive("search.epochs", loop.epochs)
    check.non_negative("search.arch_start_epoch", loop.arch_start_epoch)
    for key in ("batch_size", "eval_batch_size"):
        check.positive(f"search.{key}", getattr(loop, key))
    check.positive("search.max_steps", loop.max_steps, optional=True)
    check_data_ranges(check, cfg.data)
    check.positive("threads", cfg.threads, optional=True)
    check.need(cfg.seed >= 0, "seed", cfg.seed, "an integer >= 0")
    check.raise_any()


def to_search_config(cfg: DictConfig | dict) -> SearchConfig:
    """A composed config -> :class:`SearchConfig` (see :func:`to_config`)."""
    return to_config(cfg, SearchConfig)
