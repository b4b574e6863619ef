"""Experiment settings as data, on the ground floor: the TOML presets in ``advpnml/configs``, command-line
overrides, and the typed settings every job reads (:class:`AttackSpec`, :class:`DefenseSpec`,
:class:`EvalSettings`). Nothing here imports from the rest of the package; :func:`from_preset` is the one
way in: every command, the demo and the experiments read a preset through the :class:`Preset` it returns.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import reprlib
import sys
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib


@dataclass
class AttackSpec:
    """One column of the table.

    column: its name in the report ("FGSM", "PGD", "Adaptive", "HSJA").
    attack: a key of :data:`advpnml.attacks.ATTACKS`; params: its keyword arguments (eps comes
    from the evaluation unless given). base: run it on the base model. defense: ``"direct"``
    (through the defense), ``"transfer"`` (examples computed on the base model), or ``None``.
    """

    column: str
    attack: str
    params: dict[str, Any] = field(default_factory=dict)
    base: bool = True
    defense: str | None = "direct"

    def __post_init__(self) -> None:
        if self.defense not in (None, "direct", "transfer"):
            raise ValueError(f"attack {self.column!r}: defense must be 'direct', 'transfer' or none, got {self.defense!r}")
        if not self.base and self.defense is None:
            raise ValueError(f"attack {self.column!r} runs on no model (base=false and defense={self.defense!r})")


#: Backward passes through the refinement: ours (identity) and the official code's (clamp in the graph), and the
#: paper's Appendix B attack it called too hard in 2020: differentiate the refinement itself, through the gradient
#: it steps along (Hessian-vector products), with ``sign`` replaced in the backward by a surrogate
#: (:data:`SECOND_ORDER`: straight-through, a scaled tanh, the normalized gradient).
SECOND_ORDER = ("second-order-ste", "second-order-tanh", "second-order-normalized")
BPDA_MODES = ("identity", "clamp", *SECOND_ORDER)
#: How the backward treats the refinement's clip to the input box and, for several steps, its projection onto the
#: lambda-ball: ``straight`` passes the gradient through unchanged (our identity BPDA since the start), ``exact``
#: keeps their own derivative (1 where the refined value is inside, 0 where it was clipped: the refined pixel does not
#: move with the input there, and the attacker knows it). Only ``sign`` needs a surrogate; the clip is differentiable
#: almost everywhere. One refinement step with ``identity`` and ``exact`` is the official code's ``clamp`` backward.
CLIP_BACKWARDS = ("straight", "exact")
#: Which way the refinement steps: ``toward`` each label (eq. 9, the paper's) or ``away`` from it (each label's
#: probability after a step that attacks it: the variant of issue 27 that denies wrong labels a free step toward them).
REFINE_DIRECTIONS = ("toward", "away")


#: The test-time defenses of the registry (:data:`advpnml.defense.DEFENSES`): ours, its two published siblings that
#: refine the input with gradient steps of the same model (Hedge, Wu et al. 2021; the anti-adversary, Alfarra et al.
#: 2022), and test-time transformation ensembling (Pérez et al. 2021), the differentiable control. A user's own
#: defense is named ``own: LABEL`` in the settings.
DEFENSE_NAMES = ("pnml", "hedge", "anti-adversary", "tte")
#: What each defense offers an attack column beyond its own autograd: ``refinement`` (another backward through its
#: refinement: ``params.backward``/``params.clip``), ``steps`` (a shortened refinement to attack through:
#: ``params.refine_steps``), ``hypotheses`` (the pNML's per-label refinements: the joint-hypotheses attack).
DEFENSE_HOOKS: dict[str, tuple[str, ...]] = {
    "pnml": ("refinement", "hypotheses"),
    "hedge": ("refinement", "steps"),
    "anti-adversary": ("refinement", "steps"),
    "tte": (),
}


def column_needs(spec: AttackSpec) -> set[str]:
    """The defense hooks (:data:`DEFENSE_HOOKS`) an attack column needs to run through a defense."""
    needs = set()
    if spec.attack == "joint":
        needs.add("hypotheses")
    if spec.params.get("backward") or spec.params.get("clip"):
        needs.add("refinement")
    if spec.params.get("refine_steps"):
        needs.add("steps")
    return needs


def check_defense_name(name: Any) -> str:
    """``name`` if it is a registry defense or a user's own (``own: ...``); else one line listing the defenses."""
    if not isinstance(name, str) or not (name in DEFENSE_NAMES or name.startswith("own:")):
        raise ValueError(f"unknown defense {name!r}; expected one of {', '.join(DEFENSE_NAMES)} or your own as FILE.py:NAME")
    return name


@dataclass(frozen=True)
class DefenseSpec:
    """The defense's settings: lambda (``refine_eps``, eq. 9; the command line's ``--lam``), the refinement
    steps (Fig. 4), the top-k hypotheses (Fig. 7) and the backward of the refinement (``identity``, ours, or
    ``clamp``, the official code's). :meth:`advpnml.defense.AdversarialPnml.from_spec` builds it."""

    refine_eps: float
    refine_steps: int = 1
    top_k: int | None = None
    bpda: str = "identity"
    direction: str = "toward"

    def __post_init__(self) -> None:  # checked here, before any model is loaded or trained
        if not _type_ok(self.refine_eps, _NUMBER) or not 0 <= self.refine_eps < float("inf"):
            raise ValueError(f"lambda (refine_eps, --lam) must be a finite number >= 0, got {self.refine_eps!r}")
        if not _type_ok(self.refine_steps, _COUNT):
            raise ValueError(f"refine_steps must be a positive whole number, got {self.refine_steps!r}")
        if self.top_k is not None and not _type_ok(self.top_k, _COUNT):
            raise ValueError(f"top_k must be a positive whole number, got {self.top_k!r}")
        if self.bpda not in BPDA_MODES:
            raise ValueError(f"bpda must be one of {', '.join(BPDA_MODES)}, got {self.bpda!r}")
        if self.direction not in REFINE_DIRECTIONS:
            raise ValueError(f"the refinement's direction must be one of {', '.join(REFINE_DIRECTIONS)}, got {self.direction!r}")


@dataclass
class EvalSettings:
    """What an evaluation run is; its hash decides whether a results file can be resumed.

    ``refine_eps`` None: the base model only. ``cascade``: AutoAttack's protocol. Each attack runs, per
    model row, only on the samples that the natural prediction and every earlier column left correct; a
    skipped sample's prediction is recorded as ``SKIPPED`` (:mod:`advpnml.evaluation.records`). The per-sample worst
    case is the same quantity as without it, at a fraction of the cost (strong attacks first, expensive
    ones on the few survivors); a column's accuracy then reads "robust after this attack and all before
    it". Reference attacks (:data:`advpnml.attacks.REFERENCE_ATTACKS`) always see every sample, so ours
    and theirs can be compared sample by sample.
    """

    dataset: str
    split: str
    n: int | None
    eps: float
    refine_eps: float | None
    attacks: list[AttackSpec]
    refine_steps: int = 1
    top_k: int | None = None
    batch_size: int = 100
    seed: int = 0
    model: str = ""
    cascade: bool = False
    bpda: str = "identity"
    refine_direction: str = "toward"
    defense_name: str = "pnml"
    defense_params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:  # checked before any model is loaded
        check_defense_name(self.defense_name)
        if not _type_ok(self.eps, _NUMBER) or not 0 <= self.eps < float("inf"):
            raise ValueError(f"eps (--eps) must be a finite number >= 0, got {self.eps!r}")
        if not _type_ok(self.batch_size, _COUNT):
            raise ValueError(f"batch_size (--batch-size) must be a positive whole number, got {self.batch_size!r}")
        self.defense  # noqa: B018 (validates lambda, refine_steps, top_k and bpda)

    @property
    def defense(self) -> DefenseSpec | None:
        """The defense this run evaluates beside the base model (None: base model only)."""
        if self.refine_eps is None:
            return None
        return DefenseSpec(self.refine_eps, self.refine_steps, self.top_k, self.bpda, self.refine_direction)

    def digest(self) -> str:
        """sha256 of the settings (16 hex digits): a records file resumes only under the same digest."""
        values = asdict(self)
        # Runs written before these options existed keep their digest at the defaults, so they resume.
        for key, default in _LATER_DEFAULTS.items():
            if values[key] == default:
                del values[key]
        return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]

    @classmethod
    def from_stored(cls, stored: dict[str, Any]) -> EvalSettings:
        """The settings a records header holds (:func:`dataclasses.asdict` of a run's), options added since at the
        values that run had: what a finished run measured, read back to report it as it ran."""
        values = {**_LATER_DEFAULTS, **stored}
        return cls(**{**values, "attacks": [AttackSpec(**a) for a in values.get("attacks", [])]})

    def changes_from(self, stored: Any) -> list[str]:
        """What differs between these settings and ``stored`` (a records header's ``settings``), in words:
        ``eps (0.1 -> 0.2)``, ``the attack columns' order (FGSM, PGD -> PGD, FGSM)``, ``attack 'PGD' params.steps
        (2 -> 3)``. The checkpoint path (``model``) is listed too; :func:`only_the_path_changed` tells it apart."""
        if not isinstance(stored, dict):
            return [f"the settings (unreadable in the file: {reprlib.repr(stored)})"]
        old = {**_LATER_DEFAULTS, **json.loads(json.dumps(stored, default=str))}
        new = json.loads(json.dumps(asdict(self), default=str))
        changes = []
        for key in dict.fromkeys([*new, *old]):
            if key == "attacks":
                changes += _attack_changes(old.get(key), new[key])
            elif old.get(key) != new.get(key):
                label = "the checkpoint path (model)" if key == "model" else key
                changes.append(f"{label} ({old.get(key, 'absent')!r} -> {new.get(key, 'absent')!r})")
        return changes


#: Settings added after runs were recorded, at the values those runs had.
_LATER_DEFAULTS: dict[str, Any] = {
    "cascade": False,
    "bpda": "identity",
    "refine_direction": "toward",
    "defense_name": "pnml",
    "defense_params": {},
}


def only_the_path_changed(changes: list[str]) -> bool:
    """True when the one difference is the checkpoint's path (the same file by another path, say): the records
    header's content hashes (:mod:`advpnml.evaluation.identity`) decide then, not the name."""
    return len(changes) == 1 and changes[0].startswith("the checkpoint path (model)")


def _attack_changes(old: Any, new: list[dict[str, Any]]) -> list[str]:
    """The attack columns' differences: added, removed, reordered, or one column's attack and parameters."""
    if not isinstance(old, list) or not all(isinstance(a, dict) and "column" in a for a in old):
        return [f"the attack columns (unreadable in the file: {reprlib.repr(old)})"]
    before, after = {a["column"]: a for a in old}, {a["column"]: a for a in new}
    changes = []
    removed, added = [c for c in before if c not in after], [c for c in after if c not in before]
    if removed:
        changes.append(f"attack columns removed: {', '.join(removed)}")
    if added:
        changes.append(f"attack columns added: {', '.join(added)}")
    kept_old, kept_new = [c for c in before if c in after], [c for c in after if c in before]
    if kept_old != kept_new:
        changes.append(f"the attack columns' order ({', '.join(kept_old)} -> {', '.join(kept_new)})")
    for column in kept_new:
        a, b = _flatten(before[column]), _flatten(after[column])
        for key in dict.fromkeys([*a, *b]):
            if a.get(key) != b.get(key):
                changes.append(f"attack {column!r} {key} ({a.get(key, 'absent')!r} -> {b.get(key, 'absent')!r})")
    return changes


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"params": {"steps": 2}}`` as ``{"params.steps": 2}``, so a difference names its full key."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        elif key != "column":
            flat[f"{prefix}{key}"] = value
    return flat


def list_configs(hidden: bool = False) -> list[str]:
    """Names of the built-in presets; ``hidden``: with the bases others extend (``_suite``), not run on their own."""
    names = (p.name[:-5] for p in resources.files("advpnml.configs").iterdir() if p.name.endswith(".toml"))
    return sorted(name for name in names if hidden or not name.startswith("_"))


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
    """A built-in preset by name (``mnist``, ``cifar10``, ``imagenet``, ``mnist5k``) or a TOML file path, as a dict.

    ``extends = "NAME"`` (a preset, or a file beside this one) starts from that config and changes it:
    tables merge key by key, lists (an attack suite among them) are replaced. ``[params.COLUMN]`` then
    sets parameters of the inherited attack COLUMN in the ``[evaluation]`` suites (ours),
    ``[protocols.NAME.params.COLUMN]`` under that protocol only: the image presets share one suite
    (``_suite.toml``) and each sets its budgets and step sizes. Jobs read presets through :func:`from_preset`.
    """
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ValueError(f"config file not found: {path}")
        text = path.read_text()
    else:
        name = str(name_or_path)
        if name not in list_configs(hidden=True):
            raise ValueError(f"unknown config {name!r}; expected a .toml path or one of: {', '.join(list_configs())}")
        text = resources.files("advpnml.configs").joinpath(f"{name}.toml").read_text()
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"config {name_or_path} is not valid TOML: {err}") from None
    parent = config.pop("extends", None)
    if parent is not None and not isinstance(parent, str):
        raise ValueError(f"config {name_or_path}: extends must be a preset name or a .toml path (a string), got {parent!r}")
    if parent is not None:
        chain = (*_chain, _config_key(name_or_path))
        if path.suffix == ".toml" and not Path(parent).is_absolute() and (path.parent / parent).is_file():
            parent = str(path.parent / parent)
        if _config_key(parent) in chain:
            raise ValueError(f"config {name_or_path} extends {parent!r}, which extends it back ({' -> '.join(chain)})")
        config = merge_configs(load_config(parent, _chain=chain), config)
    for where in ("evaluation", *config.get("protocols", {})):
        holder = config if where == "evaluation" else config["protocols"][where]
        for column, params in holder.pop("params", {}).items():
            for key, value in params.items():
                _set_column(config, f"{name_or_path}: [params.{column}]", column, key, value, where)
    evaluation = config.get("evaluation", {})
    if evaluation.get("strong") and "autoattack" not in evaluation:
        evaluation["autoattack"] = [copy.deepcopy(REFERENCE_AUTOATTACK)]
    if not _chain:  # the finished preset (a base alone may lack what its children add)
        check_config(config, str(name_or_path))
    return config


_NUMBER, _COUNT, _TEXT, _FLAG, _LIST, _TABLE = (
    "a number",
    "a positive whole number",
    "a string",
    "true or false",
    "a list",
    "a table",
)

#: What each section may hold and of which type; ``[model]`` (architecture keyword arguments) and ``[training]``
#: (checked by :class:`advpnml.training.trainer.TrainConfig`) are checked where they are used.
_SCHEMA: dict[str, dict[str, str]] = {
    "": {
        "dataset": _TEXT,
        "model": _TABLE,
        "defense": _TABLE,
        "training": _TABLE,
        "evaluation": _TABLE,
        "protocols": _TABLE,
        "paper": _TABLE,
        "sweeps": _TABLE,
    },
    "defense": {
        "name": _TEXT,
        "refine_eps": _NUMBER,
        "refine_steps": _COUNT,
        "top_k": _COUNT,
        "direction": _TEXT,
        **{name: _TABLE for name in DEFENSE_NAMES if name != "pnml"},
    },
    "evaluation": {"eps": _NUMBER, "batch_size": _COUNT, "n": _COUNT, "attacks": _LIST, "strong": _LIST, "autoattack": _LIST},
    "attack": {
        "column": _TEXT,
        "attack": _TEXT,
        "params": _TABLE,
        "base": _FLAG,
        "defense": _TEXT,
        "note": _TEXT,
        "table1": _TEXT,
    },
    "protocol": {"bpda": _TEXT, "bpda_note": _TEXT, "attacks": _LIST},
    "paper": {"dataset": _TEXT, "base": _TABLE, "defense": _TABLE},
    "sweeps": {"eps": _LIST, "lam": _LIST, "steps": _LIST, "k": _LIST, "hsja_eps": _LIST},
}


def _type_ok(value: Any, kind: str) -> bool:
    if kind == _NUMBER:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == _COUNT:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 1
    return isinstance(value, {_TEXT: str, _FLAG: bool, _LIST: list, _TABLE: dict}[kind])


def _check_table(table: dict[str, Any], schema: str, where: str) -> None:
    known = _SCHEMA[schema]
    for key, value in table.items():
        if key not in known:
            raise ValueError(f"{where}: unknown key {key!r}; expected one of: {', '.join(known)}")
        if not _type_ok(value, known[key]):
            raise ValueError(f"{where}: {key} must be {known[key]}, got {value!r}")


def check_config(config: dict[str, Any], source: str = "config") -> None:
    """Refuse a preset with an unknown key or a value of the wrong type, naming the key and what is allowed
    (a typo such as ``refine_epss`` would otherwise change the experiment silently)."""
    _check_table(config, "", source)
    for name in ("defense", "evaluation", "paper", "sweeps"):
        _check_table(config.get(name, {}), name, f"{source} [{name}]")
    tables = [(f"evaluation.{t}", config.get("evaluation", {}).get(t, [])) for t in ("attacks", "strong", "autoattack")]
    for protocol, section in config.get("protocols", {}).items():
        _check_table(section, "protocol", f"{source} [protocols.{protocol}]")
        tables.append((f"protocols.{protocol}.attacks", section.get("attacks", [])))
    for name, entries in tables:
        for entry in entries:
            _check_table(entry, "attack", f"{source} [[{name}]] {entry.get('column', '?')!r}")
            if "column" not in entry or "attack" not in entry:
                raise ValueError(f"{source} [[{name}]]: every attack needs a column and an attack, got {entry}")


def parse_value(text: str) -> Any:
    """A command-line value as TOML (numbers, booleans, lists), else the plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _column_entries(config: dict[str, Any], where: str = "all") -> dict[str, list[dict[str, Any]]]:
    """Attack table entries by lower-case column name: ``all`` (the evaluation's and every protocol's),
    ``evaluation`` (ours only) or a protocol's name (that protocol's only)."""
    evaluation = config.get("evaluation", {})
    sections = config.get("protocols", {})
    tables = [evaluation.get(t, []) for t in ("attacks", "strong", "autoattack")] if where in ("all", "evaluation") else []
    tables += [section.get("attacks", []) for name, section in sections.items() if where in ("all", name)]
    entries: dict[str, list[dict[str, Any]]] = {}
    for table in tables:
        for entry in table:
            entries.setdefault(entry["column"].lower(), []).append(entry)
    return entries


def _set_column(config: dict[str, Any], origin: str, column: str, key: str, value: Any, where: str = "all") -> None:
    """Set ``key`` of attack ``column`` (``base``/``defense``, else a parameter) in the tables ``where`` names."""
    targets = _column_entries(config, where).get(column.lower())
    if not targets:
        raise ValueError(f"{origin}: no attack column {column!r} to change")
    for target in targets:
        if key in ("base", "defense"):
            target[key] = value
        else:
            target.setdefault("params", {})[key] = value


def apply_overrides(config: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """``KEY.PATH=VALUE`` assignments; an attack's parameters are addressed by its column, e.g. ``PGD.restarts=2``."""
    config = copy.deepcopy(config)
    columns = _column_entries(config)
    for assignment in assignments:
        if "=" not in assignment:
            raise ValueError(f"override {assignment!r} must look like KEY=VALUE (e.g. PGD.restarts=2 or defense.refine_eps=0.2)")
        key, value = assignment.split("=", 1)
        parts = key.strip().split(".")
        if parts[0].lower() in columns and len(parts) == 2:
            _set_column(config, assignment, parts[0], parts[1], parse_value(value))  # under every protocol that has it
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
REFERENCE_AUTOATTACK = {
    "column": "AutoAttack",
    "attack": "autoattack",
    "params": {"version": "standard"},
    "base": True,
    "defense": "direct",
}


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
        raise ValueError(
            f"protocol {protocol!r} needs the config's [[protocols.{protocol}.attacks]]; the mnist and cifar10 presets define it"
        )
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
        raise ValueError(
            f"suite {suite!r} needs the config's [[evaluation.strong]] attacks; the built-in image presets define them"
        )
    paper_columns = protocol_section(config, protocol).get("attacks") or evaluation.get("attacks", [])
    tables = {"paper": (), "strong": ("strong",), "autoattack": ("strong", "autoattack")}[suite]
    entries = list(paper_columns) + [entry for table in tables for entry in evaluation.get(table, [])]
    return sorted(entries, key=cascade_order)  # stable: the preset's order among equals


#: The order a cascade runs a suite in, as AutoAttack orders its own (cheap and strong first, the black box last): attacks
#: on the base model (transferred: one prediction through the defense each) first, then APGD-T through the defense,
#: then the other first-order attacks through it, then the second-order ones (2-3x a first-order attack's cost), then
#: the score-based black box (Square), then the decision-based one (HopSkipJump: 26,000 queries through the defense),
#: and last the reference AutoAttack, which sees every sample whatever the order. Within a rank the cheaper attack runs
#: first (steps x restarts x targets). The per-sample worst case does not depend on the order; the cost does.
#: APGD-T runs before the untargeted attacks through the defense (AutoAttack runs APGD-CE first: on a plain model it is
#: cheap and breaks most) because after the transferred attacks it is what breaks: on the official CNN (MNIST, eps
#: 0.3, 100 images, results/vs_autoattack) the five untargeted columns before it broke 2 samples in 168 s, APGD-T the
#: other 8 in 304 s, and its likeliest target alone broke 5 of those 10 (both others' included) in 40 s; on the demo
#: model's strong table no attack through the defense after APGD-T broke any more.
COST_RANKS = ("transfer", "adaptive APGD-T", "adaptive", "second-order", "score-based", "decision-based", "reference")


def cascade_order(entry: dict[str, Any]) -> tuple[int, int]:
    """An attack table's place in a cascade: its rank in :data:`COST_RANKS` (from its ``attack``, ``defense`` and
    ``params.backward``), then its work in gradient steps (steps x restarts x targets; FGSM 1)."""
    attack, params = str(entry.get("attack")), entry.get("params", {})
    kind = {"square": "score-based", "hsja": "decision-based", "autoattack": "reference"}.get(attack)
    if kind is None:
        if str(params.get("backward", "")).startswith("second-order"):
            kind = "second-order"
        elif entry.get("defense", "direct") != "direct":
            kind = "transfer"
        else:
            kind = "adaptive APGD-T" if attack == "apgd-t" else "adaptive"
    steps = 1 if attack == "fgsm" else int(params.get("steps", 100))
    work = steps * int(params.get("restarts", 1)) * int(params.get("n_targets", 9 if attack == "apgd-t" else 1))
    return COST_RANKS.index(kind), work


def attack_specs(
    config: dict[str, Any], only: list[str] | None = None, suite: str = "paper", protocol: str = "strict"
) -> list[AttackSpec]:
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
        specs.append(
            AttackSpec(
                entry["column"],
                entry["attack"],
                dict(entry.get("params", {})),
                bool(entry.get("base", True)),
                None if defense in (None, "none", False) else defense,
            )
        )
    if only:
        by_name = {s.column.lower(): s for s in specs}
        unknown = [name for name in only if name.strip().lower() not in by_name]
        if unknown:
            raise ValueError(
                f"unknown attack column(s) {unknown}; suite {suite!r} of this config has: {', '.join(s.column for s in specs)}"
            )
        specs = list({name.strip().lower(): by_name[name.strip().lower()] for name in only}.values())
    return specs


@dataclass(frozen=True)
class Preset:
    """A preset after ``extends``, ``[params]`` and the command line's ``--set``: the one reader of its sections.

    ``data`` is the merged TOML as a dict; everything a job needs from it is a method here, so a key is
    read in one place with one default.
    """

    name: str
    data: dict[str, Any]

    def section(self, name: str) -> dict[str, Any]:
        """A copy of the top-level table ``name`` (empty when the preset has none)."""
        return copy.deepcopy(self.data.get(name, {}))

    @property
    def dataset(self) -> str | None:
        """The dataset the preset evaluates (None: the command line or the checkpoint names it)."""
        return self.data.get("dataset")

    @property
    def eps(self) -> float:
        """The evaluation's attack radius."""
        if "eps" not in self.data.get("evaluation", {}):
            raise ValueError(
                f"config {self.name!r} has no [evaluation] eps; pass --eps (the attack radius"
                + ("; without a preset every budget follows from it)" if self.name == "generic" else ")")
            )
        return float(self.data["evaluation"]["eps"])

    @property
    def n(self) -> int | None:
        """How many test samples the preset evaluates (None: the whole split)."""
        return self.data.get("evaluation", {}).get("n")

    @property
    def batch_size(self) -> int:
        """Samples per evaluation batch (default 100)."""
        return int(self.data.get("evaluation", {}).get("batch_size", 100))

    def defense(
        self, refine_eps: float | None = None, protocol: str = "strict", refine_steps: int | None = None, top_k: int | None = None
    ) -> DefenseSpec:
        """The ``[defense]`` table as a spec; a value given here (the command line's ``--lam`` for ``refine_eps``) wins."""
        table = self.data.get("defense", {})
        lam = table.get("refine_eps") if refine_eps is None else refine_eps
        if lam is None:
            raise ValueError(f"config {self.name!r} has no [defense] refine_eps; pass --lam")
        return DefenseSpec(
            float(lam),
            int(refine_steps or table.get("refine_steps", 1)),
            top_k or table.get("top_k"),
            protocol_bpda(self.data, protocol),
            table.get("direction", "toward"),
        )

    @property
    def default_suite(self) -> str:
        """The suite ``advpnml evaluate`` and :func:`advpnml.evaluate` run unless told: ``strong``, or for a config
        without ``[[evaluation.strong]]`` (a suite of the user's own) its own ``[[evaluation.attacks]]``."""
        return "strong" if self.data.get("evaluation", {}).get("strong") else "paper"

    def attacks(self, only: list[str] | None = None, suite: str = "paper", protocol: str = "strict") -> list[AttackSpec]:
        """The attack columns of ``suite`` under ``protocol`` (see :func:`attack_specs`)."""
        return attack_specs(self.data, only, suite, protocol)

    def columns_under(self, names: list[str], suite: str, protocol: str) -> list[str]:
        """Of ``names`` (one ``--attacks`` list for every protocol), those ``protocol`` has; a name no protocol
        has is a one-line error."""
        known = {s.column.lower() for p in PROTOCOLS for s in self.attacks(None, suite, p)}
        unknown = [c for c in names if c.strip().lower() not in known]
        if unknown:
            raise ValueError(f"unknown attack column(s) {unknown} under either protocol")
        mine = {s.column.lower() for s in self.attacks(None, suite, protocol)}
        return [c for c in names if c.strip().lower() in mine]

    def paper_numbers(self, dataset: str, eps: float) -> dict[str, dict[str, float]] | None:
        """The paper's Table 1 rows, only beside the dataset and radius they were measured at."""
        paper = self.section("paper")
        same = dataset == paper.pop("dataset", self.dataset) and eps == self.data.get("evaluation", {}).get("eps")
        return paper or None if same else None

    def sweep_values(self, param: str) -> list[Any] | None:
        """The ``[sweeps]`` default values of ``param`` (``hsja-eps`` is ``hsja_eps`` in TOML)."""
        return self.data.get("sweeps", {}).get(param.replace("-", "_"))

    def eval_settings(
        self,
        dataset: str,
        split: str,
        n: int,
        *,
        eps: float | None = None,
        refine_eps: float | None = None,
        defended: bool = True,
        only: list[str] | None = None,
        suite: str | None = "paper",
        protocol: str = "strict",
        batch_size: int | None = None,
        seed: int = 0,
        model: str = "",
        cascade: bool = False,
        defense: str | None = None,
        defense_hooks: tuple[str, ...] | None = None,
    ) -> EvalSettings:
        """The settings of one evaluation run: the preset's values unless the caller gives its own (``suite=None``:
        :attr:`default_suite`). ``defense``: a registry name (:data:`DEFENSE_NAMES`; None: the preset's ``[defense]
        name``, else ``pnml``) or ``own: LABEL`` with its ``defense_hooks``; the columns it cannot run are left out,
        and one named in ``only`` is a one-line error."""
        suite = self.default_suite if suite is None else suite
        name, params = self.defense_choice(defense)
        # A base-only run keeps the preset's refine_steps and top_k too: they are part of its digest.
        lam = refine_eps if defended else 0.0
        if name != "pnml" and lam is None and "refine_eps" not in self.data.get("defense", {}):
            lam = 0.0  # another defense: lambda is not its parameter
        spec = self.defense(lam, protocol)
        attacks = self.attacks(only, suite, protocol)
        if defended:
            hooks = set(DEFENSE_HOOKS.get(name, ()) if defense_hooks is None else defense_hooks)
            missing = [(s.column, column_needs(s) - hooks) for s in attacks if s.defense is not None and column_needs(s) - hooks]
            if only and missing:
                column, lacks = missing[0]
                raise ValueError(
                    f"attack column {column!r} needs the defense's {', '.join(sorted(lacks))} hook, which defense "
                    f"{name!r} does not have; leave it out of --attacks"
                )
            attacks = [s for s in attacks if s.defense is None or not column_needs(s) - hooks]
            steps = params.get("steps")
            if not only and isinstance(steps, int):  # a "shortened" refinement no shorter than the defense's own is a repeat
                attacks = [
                    s for s in attacks if int(s.params.get("refine_steps") or 0) < steps or not s.params.get("refine_steps")
                ]
        return EvalSettings(
            dataset=dataset,
            split=split,
            n=n,
            eps=self.eps if eps is None else eps,
            refine_eps=spec.refine_eps if defended else None,
            attacks=attacks,
            refine_steps=spec.refine_steps,
            top_k=spec.top_k,
            batch_size=self.batch_size if batch_size is None else batch_size,
            seed=seed,
            model=model,
            cascade=cascade,
            bpda=spec.bpda,
            refine_direction=spec.direction,
            defense_name=name,
            defense_params=params,
        )

    def defense_choice(self, name: str | None = None) -> tuple[str, dict[str, Any]]:
        """The defense's name (``name``, else the preset's ``[defense] name``, else ``pnml``) and its parameters (the
        preset's ``[defense.NAME]`` table; none for ``pnml``, whose settings are ``[defense]`` itself)."""
        table = self.data.get("defense", {})
        chosen = check_defense_name(table.get("name", "pnml") if name is None else name)
        params = table.get(chosen, {}) if chosen in DEFENSE_NAMES and chosen != "pnml" else {}
        if not isinstance(params, dict):
            raise ValueError(f"[defense.{chosen}] must be a table of the defense's parameters, got {params!r}")
        return chosen, copy.deepcopy(params)


#: Without a preset (``advpnml.evaluate(model, data, eps=..., lam=...)``, or ``--data FILE`` without ``--config``)
#: the suite's budgets follow from eps by this rule: PGD (transferred), the adaptive attacks through the defense
#: (cross-entropy, margin and second-order margin) and the joint-hypotheses attack take ``GENERIC_STEPS`` steps of
#: ``2.5 * eps / GENERIC_STEPS`` (Madry et al.'s rule: the path can cross the eps-ball 2.5 times) from one random
#: start; FGSM one step of eps; HopSkipJump the paper's 26,000 queries. AutoAttack's attacks keep their
#: parameter-free defaults, as in every preset: APGD-CE and APGD-T 100 steps (9 targets; their second-order
#: variants the same), Square 5,000 queries.
GENERIC_STEPS = 100
GENERIC_HSJA_QUERIES = 26000
_GENERIC_PGD_COLUMNS = (
    "PGD",
    "Adaptive",
    "Adaptive-margin",
    "Adaptive-margin exact-clip",
    "Adaptive-margin 2nd-order",
    "Joint hypotheses",
)


def generic_preset(eps: float | None, lam: float | None = None, overrides: list[str] | None = None) -> Preset:
    """The image presets' attack suite (``_suite.toml``) at radius ``eps`` and lambda ``lam``, budgets by the rule
    above; ``overrides`` as ``--set`` takes them (``PGD.restarts=5``)."""
    data = load_config("_suite")
    if lam is not None:
        data["defense"] = {"refine_eps": lam}
    if eps is None:  # a job that attacks nothing (predict); one that does is refused by Preset.eps, asking for --eps
        return Preset("generic", apply_overrides(data, overrides or []))
    if not _type_ok(eps, _NUMBER) or not 0 < eps < float("inf"):
        raise ValueError(f"eps (--eps) must be a finite number > 0, got {eps!r}")
    data["evaluation"]["eps"] = float(eps)
    # Hedge's ball is the attack's (Croce et al.'s wu_2021 passes the attack eps), its step half of it (4/255 of 8/255)
    data.setdefault("defense", {})["hedge"] = {"radius": float(eps), "step_size": float(eps) / 2}
    for column in _GENERIC_PGD_COLUMNS:
        values = {"steps": GENERIC_STEPS, "step_size": 2.5 * eps / GENERIC_STEPS} | (
            {"restarts": 1} if column != "Joint hypotheses" else {}
        )
        for key, value in values.items():
            _set_column(data, "the generic rule", column, key, value, "evaluation")
    _set_column(data, "the generic rule", "HSJA", "max_queries", GENERIC_HSJA_QUERIES, "evaluation")
    data = apply_overrides(data, overrides or [])
    check_config(data, "the generic suite" + (f" with --set {' '.join(overrides)}" if overrides else ""))
    return Preset("generic", data)


def from_preset(name_or_path: str | os.PathLike, overrides: list[str] | None = None) -> Preset:
    """The preset ``name_or_path`` (a built-in name or a .toml file) with ``KEY=VALUE`` overrides applied, checked."""
    data = apply_overrides(load_config(name_or_path), overrides or [])
    if overrides:
        check_config(data, f"{name_or_path} with --set {' '.join(overrides)}")
    return Preset(str(name_or_path), data)
