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


def merge_configs(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """``child`` over ``base``: tables merge key by key, everything else (lists of attacks included) is replaced."""
    merged = copy.deepcopy(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_configs(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _config_key(name_or_path: str | os.PathLike) -> str:
    path = Path(name_or_path)
    return str(path.resolve()) if path.suffix == ".toml" or path.exists() else str(name_or_path)


def load_config(name_or_path: str | os.PathLike, _chain: tuple[str, ...] = ()) -> dict[str, Any]:
    """A built-in preset by name (``mnist``, ``cifar10``, ``imagenet``, ``mnist5k``) or a TOML file path.

    ``extends = "NAME"`` (a preset, or a file beside this one) starts from that config and changes it.
    """
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
    parent = config.pop("extends", None)
    if parent is not None:
        chain = (*_chain, _config_key(name_or_path))
        if path.suffix == ".toml" and not Path(parent).is_absolute() and (path.parent / parent).is_file():
            parent = str(path.parent / parent)
        if _config_key(parent) in chain:
            raise ValueError(f"config {name_or_path} extends {parent!r}, which extends it back ({' -> '.join(chain)})")
        config = merge_configs(load_config(parent, _chain=chain), config)
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
    tables = [evaluation.get(t, []) for t in ("attacks", "strong", "autoattack")]
    tables += [section.get("attacks", []) for section in config.get("protocols", {}).values()]
    attacks = {}
    for table in tables:
        for entry in table:
            attacks.setdefault(entry["column"].lower(), []).append(entry)
    for assignment in assignments:
        if "=" not in assignment:
            raise ValueError(f"override {assignment!r} must look like KEY=VALUE (e.g. PGD.restarts=2 or defense.refine_eps=0.2)")
        key, value = assignment.split("=", 1)
        parts = key.strip().split(".")
        if parts[0].lower() in attacks and len(parts) == 2:
            for target in attacks[parts[0].lower()]:  # the column under every protocol that has it
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


#: How the paper's columns are run. ``strict`` (ours, the default): the attacks as the preset's
#: ``[[evaluation.attacks]]`` define them and the identity BPDA. ``paper``: the official code's choices
#: (uriyapes/pnml_adv), which the preset spells out in ``[protocols.paper]``: its own attack list
#: (``[[protocols.paper.attacks]]``) and ``bpda = "clamp"``.
PROTOCOLS = ("strict", "paper")


def protocol_section(config: dict[str, Any], protocol: str) -> dict[str, Any]:
    """The preset's ``[protocols.<protocol>]`` table (empty for ``strict``); a one-line error if it has none."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of: {', '.join(PROTOCOLS)}")
    if protocol == "strict":
        return {}
    section = config.get("protocols", {}).get(protocol)
    if not section or not section.get("attacks"):
        raise ValueError(f"protocol {protocol!r} needs the config's [[protocols.{protocol}.attacks]]; "
                         "the mnist and cifar10 presets define it")
    return section


def protocol_bpda(config: dict[str, Any], protocol: str = "strict") -> str:
    """The defense's backward under ``protocol``: ``identity`` (ours) or ``clamp`` (the official code)."""
    return protocol_section(config, protocol).get("bpda", "identity")


def suite_entries(config: dict[str, Any], suite: str = "paper", protocol: str = "strict") -> list[dict[str, Any]]:
    """The raw attack tables of ``suite``; each suite holds the ones before it (paper < strong < autoattack).

    Under ``protocol="paper"`` the paper's columns come from ``[[protocols.paper.attacks]]``.
    """
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; expected one of: {', '.join(SUITES)}")
    evaluation = config.get("evaluation", {})
    if suite != "paper" and not evaluation.get("strong"):
        raise ValueError(f"suite {suite!r} needs the config's [[evaluation.strong]] attacks; the built-in image presets define them")
    paper_columns = protocol_section(config, protocol).get("attacks") or evaluation.get("attacks", [])
    tables = {"paper": (), "strong": ("strong",), "autoattack": ("strong", "autoattack")}[suite]
    return list(paper_columns) + [entry for table in tables for entry in evaluation.get(table, [])]


def attack_specs(config: dict[str, Any], only: list[str] | None = None, suite: str = "paper",
                 protocol: str = "strict") -> list[AttackSpec]:
    """The evaluation's attack columns, optionally only the named ones (case-insensitive, in the order named).

    ``suite="paper"``: the preset's ``[[evaluation.attacks]]`` (the paper's columns, the margin adaptive
    attack and APGD-T); ``"strong"``: those plus ``[[evaluation.strong]]`` (APGD-CE transferred and
    adaptive, the joint-hypotheses attack, Square); ``"autoattack"``: those plus the reference
    AutoAttack (:data:`REFERENCE_AUTOATTACK`). The order matters under a cascade: attacks run in it.
    ``protocol="paper"`` swaps the paper's columns for the official code's (:data:`PROTOCOLS`).
    """
    specs = []
    for entry in suite_entries(config, suite, protocol):
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
