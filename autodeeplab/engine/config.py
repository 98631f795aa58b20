"""Composed Hydra configs -> typed dataclass configs, with unknown keys refused by name and
values out of range refused by key (:class:`RangeCheck`)."""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from dataclasses import fields, is_dataclass
from typing import Any, TypeVar

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

T = TypeVar("T")


def store_schema(name: str, schema: type) -> None:
    """Registers the dataclass ``schema`` as Hydra's config ``name`` (a stage's primary config
    lists it first in its defaults). Its free-form mappings (``data.options``, ``loss.terms``)
    are stored empty, so that the config group that fills one (``loss=focal``) gives all of
    its entries instead of adding to the dataclass default (which would keep ``ce`` in every
    loss), and open, so that they take new keys from the command line,
    ``data.options.num_samples=100``, as a plain structured config would refuse; every other
    level stays closed, so misspelt keys are still refused by name."""
    node = OmegaConf.structured(schema)
    _open_mappings(node)
    ConfigStore.instance().store(name=name, node=node)


def _open_mappings(node: DictConfig) -> None:
    for key in node:
        child = node._get_node(key)
        if not isinstance(child, DictConfig):
            continue
        if _is_mapping_field(node, key):
            node[key] = {}
            OmegaConf.set_struct(node._get_node(key), False)
        else:
            _open_mappings(child)


def _is_mapping_field(node: DictConfig, key: str) -> bool:
    """Whether ``node.key`` is a free-form mapping field, not a nested schema."""
    return OmegaConf.get_type(node, key) is dict


def to_config(cfg: DictConfig | dict, schema: type[T]) -> T:
    """A composed config -> an instance of the dataclass ``schema``, rejecting keys the schema
    does not have (Hydra's ``+key=value`` can add keys to a structured config)."""
    container = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    _check_keys(container, schema, "")
    base = OmegaConf.structured(schema)
    _clear_given_mappings(base, container)
    merged = OmegaConf.merge(base, container)
    return OmegaConf.to_object(merged)


def _clear_given_mappings(node: DictConfig, values: Any) -> None:
    """Empties the mapping fields of ``node`` that ``values`` gives, so that the given mapping
    replaces the default rather than being merged into it (a config whose ``loss.terms`` is
    ``{focal: 1}`` is the focal loss alone, not cross-entropy plus focal)."""
    if not isinstance(values, dict):
        return
    for key, value in values.items():
        if key not in node or not isinstance(node._get_node(key), DictConfig):
            continue
        if _is_mapping_field(node, key):
            if isinstance(value, dict):
                node[key] = {}
        else:
            _clear_given_mappings(node._get_node(key), value)


def _check_keys(values: Any, schema: type, prefix: str) -> None:
    if not isinstance(values, dict):
        raise ValueError(f"config key {prefix.rstrip('.') or '<root>'} must be a mapping")
    known = {f.name: f for f in fields(schema)}
    for key, value in values.items():
        if key not in known:
            raise ValueError(_unknown_key(prefix, str(key), known))
        nested = _nested_schema(known[key])
        if nested is not None and value is not None:
            _check_keys(value, nested, f"{prefix}{key}.")


def _unknown_key(prefix: str, key: str, known: dict[str, Any]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    guess = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
    return f"unknown config key '{prefix}{key}'{guess}; known keys here: {sorted(known)}"


def _nested_schema(field: Any) -> type | None:
    """The dataclass a schema field holds (its default's type), or None."""
    target = field.default_factory() if callable(field.default_factory) else None
    return type(target) if is_dataclass(target) else None


def unknown_key_message(key: str, schema: type) -> str | None:
    """Why the dotted ``key`` (``search.epochs``) names no setting of the dataclass ``schema``,
    naming the closest known key; None where it does (or leads into a field that is not a
    dataclass, such as a mapping of loss terms, whose keys are free)."""
    node: type | None = schema
    prefix = ""
    for part in key.split("."):
        if node is None:
            return None
        known = {f.name: f for f in fields(node)}
        if part not in known:
            return _unknown_key(prefix, part, known)
        node = _nested_schema(known[part])
        prefix += part + "."
    return None


class RangeCheck:
    """Collects settings outside their range as ``key=value: expected ...`` and raises them
    together (:meth:`raise_any`), so that a stage refuses bad values before it writes anything
    or trains, naming each one."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def need(self, ok: bool, key: str, value: object, expected: str) -> None:
        if not ok:
            self.problems.append(f"{key}={value!r}: expected {expected}")

    def positive(self, key: str, value: float | None, *, optional: bool = False) -> None:
        """``value > 0`` (and finite); ``None`` too where ``optional``."""
        if optional and value is None:
            return
        expected = "a positive number" + (" or null" if optional else "")
        self.need(value is not None and 0 < value < math.inf, key, value, expected)

    def non_negative(self, key: str, value: float) -> None:
        self.need(0 <= value < math.inf, key, value, "a number >= 0")

    def channels(self, key: str, value: Sequence[int], count: int) -> None:
        """``count`` positive channel counts."""
        value = list(value)
        ok = len(value) == count and all(c > 0 for c in value)
        self.need(ok, key, value, f"{count} positive channel counts")

    def raise_any(self) -> None:
        if self.problems:
            raise ValueError("; ".join(self.problems))
