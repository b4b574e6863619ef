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
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"config {name_or_path} is not valid TOML: {err}") from None
    evaluation = config.get("evaluation", {})
    if evaluation.get("strong") and "autoattack" not in evaluation:
        evaluation["autoattack"] = [copy.deepcopy(REFERENCE_AUTOATTACK)]
    return config


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
    attacks = {a["column"].lower(): a for table in ("attacks", "strong", "autoattack") for a in evaluation.get(table, [])}
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


SUITES = ("paper", "strong", "autoattack")

#: The reference AutoAttack column every preset with a strong suite gets (``--suite autoattack``): the
#: authors' code at its fixed "standard" budgets, on the base model and through the defense. A preset
#: may declare its own ``[[evaluation.autoattack]]`` instead; ``--set AutoAttack.version=plus`` changes it.
REFERENCE_AUTOATTACK = {"column": "AutoAttack", "attack": "autoattack", "params": {"version": "standard"}, "base": True,
                        "defense": "direct"}


def suite_entries(config: dict[str, Any], suite: str = "paper") -> list[dict[str, Any]]:
    """The raw attack tables of ``suite``; each suite holds the ones before it (paper < strong < autoattack)."""
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; expected one of: {', '.join(SUITES)}")
    evaluation = config.get("evaluation", {})
    if suite != "paper" and not evaluation.get("strong"):
        raise ValueError(f"suite {suite!r} needs the config's [[evaluation.strong]] attacks; the built-in image presets define them")
    tables = {"paper": ("attacks",), "strong": ("attacks", "strong"), "autoattack": ("attacks", "strong", "autoattack")}[suite]
    return [entry for table in tables for entry in evaluation.get(table, [])]


def attack_specs(config: dict[str, Any], only: list[str] | None = None, suite: str = "paper") -> list[AttackSpec]:
    """The evaluation's attack columns, optionally only the named ones (case-insensitive, in the order named).

    ``suite="paper"``: the preset's ``[[evaluation.attacks]]`` (the paper's columns, the margin adaptive
    attack and APGD-T); ``"strong"``: those plus ``[[evaluation.strong]]`` (APGD-CE transferred and
    adaptive, the joint-hypotheses attack, Square); ``"autoattack"``: those plus the reference
    AutoAttack (:data:`REFERENCE_AUTOATTACK`). The order matters under a cascade: attacks run in it.
    """
    specs = []
    for entry in suite_entries(config, suite):
        defense = entry.get("defense", "direct")
        specs.append(AttackSpec(entry["column"], entry["attack"], dict(entry.get("params", {})), bool(entry.get("base", True)),
                                None if defense in (None, "none", False) else defense))
    if only:
        by_name = {s.column.lower(): s for s in specs}
        unknown = [name for name in only if name.strip().lower() not in by_name]
        if unknown:
            raise ValueError(f"unknown attack column(s) {unknown}; suite {suite!r} of this config has: "
                             f"{', '.join(s.column for s in specs)}")
        specs = list({name.strip().lower(): by_name[name.strip().lower()] for name in only}.values())
    return specs
