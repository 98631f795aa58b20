"""Typed configuration of the retrain stage (``conf/retrain/``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from autodeeplab.data.config import DataConfig, check_data_ranges
from autodeeplab.engine.config import RangeCheck


@dataclass
class ModelConfig:
    """The decoded network (``model=<s|m|l|tiny>``) [P §5.2, Table 2]."""

    filter_multiplier: int = 20  # F: S = 20, M = 32, L = 48
    drop_path_keep_prob: float = 1.0  # Scheduled Drop Path; 1.0 = off
    stem_channels: list[int] = field(default_factory=lambda: [64, 64, 128])  # the three convs
    aspp_channels: int = 256  # width of each ASPP branch (DeepLabv3+)
    decoder_channels: int = 256  # width of the decoder's two 3x3 convs


@dataclass
class TrainConfig:
    """The retrain recipe (``train.*``) [P §5.2]: SGD with poly learning rate."""

    iterations: int = 90_000  # weight updates in all
    batch_size: int = 8  # images per update (per process under torchrun)
    lr: float = 0.05  # poly schedule from lr to 0: lr * (1 - step / iterations) ** power
    power: float = 0.9  # exponent of the poly schedule (see lr)
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 4e-5  # L2 on every weight
    grad_clip: float | None = None  # max gradient norm (None: no clipping)
    color_jitter: float = 0.0  # brightness/contrast/saturation jitter strength (0: off)
    val_every: int = 5000  # validate every N iterations (and at the end)
    # PyTorch's deterministic algorithms for the whole retrain: on a GPU, two retrains with the
    # same settings (resumed or not) then end with the same weights bit for bit; without it
    # some GPU kernels sum in a varying order. A CPU retrain repeats bit for bit either way.
    # Costs GPU speed.
    deterministic: bool = False


@dataclass
class LossConfig:
    """``loss=<name>``: a weighted sum of named terms (ce, ohem, dice, focal).

    The group ``conf/retrain/loss/<name>.yaml`` gives all the terms (``loss=focal`` is the
    focal loss alone); ``loss.terms.dice=0.5`` adds or re-weights one, ``~loss.terms.ce``
    drops one."""

    # The Python API's default; on the command line the loss group gives the terms (and
    # removing the group, ``~loss``, leaves none, which is refused).
    terms: dict[str, float] = field(default_factory=lambda: {"ce": 1.0})
    ohem_thresh: float = 0.7  # OHEM: keep pixels whose probability of the truth is below this
    ohem_min_kept: int = 100_000  # ... but at least this many (hardest) pixels per batch
    focal_gamma: float = 2.0  # focal loss: (1 - p_truth) ** gamma weights each pixel's CE


@dataclass
class RetrainConfig:
    """``conf/retrain/retrain.yaml``."""

    # A registered name ("paper"), never read as a path, or a genotype.json path (a file named
    # like a registered genotype: ./paper)
    genotype: str = "paper"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    seed: int = 0  # seeds the weights, the batch order, the augmentation and Drop Path
    resume: bool = False  # continue from run_dir/checkpoints/last.pt
    device: str = "auto"  # "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
    threads: int | None = None  # torch CPU threads (None: torch's default)
    progress: bool = True  # progress bars
    tensorboard: bool = True  # write TensorBoard event files into the run directory


def check_retrain_config(cfg: RetrainConfig) -> None:
    """Raises ``ValueError`` naming every setting of ``cfg`` outside its range (``key=value:
    expected ...``), so that a bad value stops a retrain before it writes anything or trains."""
    check = RangeCheck()
    model, train, loss = cfg.model, cfg.train, cfg.loss
    for key in ("filter_multiplier", "aspp_channels", "decoder_channels"):
        check.positive(f"model.{key}", getattr(model, key))
    keep = model.drop_path_keep_prob
    check.need(0 < keep <= 1, "model.drop_path_keep_prob", keep, "a probability in (0, 1]")
    check.channels("model.stem_channels", model.stem_channels, 3)
    for key in ("iterations", "batch_size", "lr", "val_every"):
        check.positive(f"train.{key}", getattr(train, key))
    for key in ("power", "momentum", "weight_decay"):
        check.non_negative(f"train.{key}", getattr(train, key))
    jitter = train.color_jitter
    check.need(0 <= jitter <= 1, "train.color_jitter", jitter, "a strength in [0, 1]")
    check.positive("train.grad_clip", train.grad_clip, optional=True)
    check.need(0 < loss.ohem_thresh <= 1, "loss.ohem_thresh", loss.ohem_thresh, "in (0, 1]")
    check.need(loss.ohem_min_kept >= 0, "loss.ohem_min_kept", loss.ohem_min_kept, "0 or more")
    check.non_negative("loss.focal_gamma", loss.focal_gamma)
    check_data_ranges(check, cfg.data)
    check.positive("threads", cfg.threads, optional=True)
    check.need(cfg.seed >= 0, "seed", cfg.seed, "an integer >= 0")
    check.raise_any()
