"""Experiment settings as data: the TOML presets in ``advpnml/configs`` and command-line overrides."""
from __future__ import annotations

import copy
import os
from importlib import resources
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from .evaluation import AttackSpec


def list_configs() -> list[str]:
    """Names of the built-in presets."""
    return sorted(p.name[:-5] for p in resources.files("advpnml.configs").iterdir() if p.name.endswith(".toml"))


def load_config(name_or_path: str | os.PathLike) -> dict[str, Any]:
    """A built-in preset by name (``mnist``, ``cifar10``, ``imagenet``, ``mnist5k``) or a TOML file path."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ValueError(f"config file not found: {path}")
        text = path.read_text()
    else:
        name = str(name_or_path)
        if name not in list_configs():
            raise ValueError(f"unknown config {name!r}; expected a .toml path or one of: {', '.join(list_configs())}")
        text = resources.files("advpnml.configs").joinpath(f"{name}.toml").read_text()
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"config {name_or_path} is not valid TOML: {err}") from None


def parse_value(text: str) -> Any:
    """A command-line value as TOML (numbers, booleans, lists), else the plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(config: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """``KEY.PATH=VALUE`` assignments; an attack's parameters are addressed by its column, e.g. ``PGD.restarts=2``."""
    config = copy.deepcopy(config)
    evaluation = config.get("evaluation", {})
    attacks = {a["column"].lower(): a for a in evaluation.get("attacks", []) + evaluation.get("strong", [])}
    for assignment in assignments:
        if "=" not in assignment:
            raise ValueError(f"override {assignment!r} must look like KEY=VALUE (e.g. PGD.restarts=2 or defense.refine_eps=0.2)")
        key, value = assignment.split("=", 1)
        parts = key.strip().split(".")
        if parts[0].lower() in attacks and len(parts) == 2:
            target = attacks[parts[0].lower()]
            if parts[1] in ("base", "defense"):
                target[parts[1]] = parse_value(value)
            else:
                target.setdefault("params", {})[parts[1]] = parse_value(value)
            continue
        node = config
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {assignment!r}: {part!r} is not a section")
        node[parts[-1]] = parse_value(value)
    return config


SUITES = ("paper", "strong")


def attack_specs(config: dict[str, Any], only: list[str] | None = None, suite: str = "paper") -> list[AttackSpec]:
    """The evaluation's attack columns, optionally restricted to the named ones (case-insensitive).

    ``suite="paper"``: the preset's ``[[evaluation.attacks]]`` (the paper's columns and the margin
    adaptive attack); ``"strong"``: those plus ``[[evaluation.strong]]`` (APGD-CE / APGD-T transferred
    and adaptive, the joint-hypotheses attack, Square).
    """
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; expected one of: {', '.join(SUITES)}")
    evaluation = config.get("evaluation", {})
    entries = evaluation.get("attacks", []) + (evaluation.get("strong", []) if suite == "strong" else [])
    if suite == "strong" and not evaluation.get("strong"):
        raise ValueError("this config has no [[evaluation.strong]] attacks; the built-in presets define them")
    specs = []
    for entry in entries:
        defense = entry.get("defense", "direct")
        specs.append(AttackSpec(entry["column"], entry["attack"], dict(entry.get("params", {})), bool(entry.get("base", True)),
                                None if defense in (None, "none", False) else defense))
    if only:
        wanted = {name.lower() for name in only}
        known = {s.column.lower() for s in specs}
        unknown = wanted - known
        if unknown:
            raise ValueError(f"unknown attack column(s) {sorted(unknown)}; this config has: {', '.join(s.column for s in specs)}")
        specs = [s for s in specs if s.column.lower() in wanted]
    return specs
