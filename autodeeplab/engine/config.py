"""Composed Hydra configs -> typed dataclass configs, with unknown keys refused by name."""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

T = TypeVar("T")


def to_config(cfg: DictConfig | dict, schema: type[T]) -> T:
    """A composed config -> an instance of the dataclass ``schema``, rejecting keys the schema
    does not have (Hydra's ``+key=value`` can add keys to a structured config)."""
    container = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    _check_keys(container, schema, "")
    merged = OmegaConf.merge(OmegaConf.structured(schema), container)
    return OmegaConf.to_object(merged)


def _check_keys(values: Any, schema: type, prefix: str) -> None:
    if not isinstance(values, dict):
        raise ValueError(f"config key {prefix.rstrip('.') or '<root>'} must be a mapping")
    known = {f.name: f for f in fields(schema)}
    for key, value in values.items():
        if key not in known:
            raise ValueError(
                f"unknown config key '{prefix}{key}'; known keys here: {sorted(known)}"
            )
        target = known[key].default_factory() if callable(known[key].default_factory) else None
        if is_dataclass(target) and value is not None:
            _check_keys(value, type(target), f"{prefix}{key}.")
