"""Typed configuration of the retrain stage (``conf/retrain/``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from autodeeplab.data.config import DataConfig


@dataclass
class ModelConfig:
    """The decoded network (``model=<s|m|l|tiny>``) [P §5.2, Table 2]."""

    filter_multiplier: int = 20  # F: S = 20, M = 32, L = 48
    drop_path_keep_prob: float = 1.0  # Scheduled Drop Path; 1.0 = off
    stem_channels: list[int] = field(default_factory=lambda: [64, 64, 128])
    aspp_channels: int = 256
    decoder_channels: int = 256


@dataclass
class TrainConfig:
    """The retrain recipe (``train.*``) [P §5.2]: SGD with poly learning rate."""

    iterations: int = 90_000  # weight updates in all
    batch_size: int = 8
    lr: float = 0.05  # poly schedule from lr to 0, power 0.9
    power: float = 0.9
    momentum: float = 0.9
    weight_decay: float = 4e-5
    grad_clip: float | None = None  # max gradient norm (None: no clipping)
    color_jitter: float = 0.0  # brightness/contrast/saturation jitter strength (0: off)
    val_every: int = 5000  # validate every N iterations (and at the end)


@dataclass
class LossConfig:
    """``loss=<name>``: a weighted sum of named terms (ce, ohem, dice, focal)."""

    terms: dict[str, float] = field(default_factory=lambda: {"ce": 1.0})
    ohem_thresh: float = 0.7  # OHEM: keep pixels whose probability of the truth is below this
    ohem_min_kept: int = 100_000  # ... but at least this many (hardest) pixels per batch
    focal_gamma: float = 2.0


@dataclass
class RetrainConfig:
    """``conf/retrain/retrain.yaml``."""

    genotype: str = "paper"  # a genotype.json path or a registered name ("paper")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    seed: int = 0
    resume: bool = False  # continue from run_dir/checkpoints/last.pt
    device: str = "auto"
    threads: int | None = None
    progress: bool = True
    tensorboard: bool = True
