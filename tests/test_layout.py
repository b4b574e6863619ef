"""The folder tree is the architecture: packages by concern, every import downward or sideways (never up), no cycle,
the README's layout section names every package and module, and the public names import from where it says."""

from __future__ import annotations

import ast
import importlib
import json
import re
from pathlib import Path

import pytest

import advpnml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "advpnml"

#: Each top-level part of the package and its floor: a part imports only from its own floor or below.
LAYERS = [
    {"version", "config", "configs", "validation", "modes", "plotting"},  # ground floor: settings and helpers
    {"data", "models", "defense", "attacks", "accel", "distributed"},  # the lower half: what is evaluated and how
    {"runtime"},  # what every job shares
    {"evaluation", "training", "bench"},  # the engines
    {"jobs", "experiments"},  # the jobs
    {"api", "demo", "cli", "__main__", "__init__"},  # the entry points
]
FLOOR = {part: level for level, parts in enumerate(LAYERS) for part in parts}


def _part(module: str) -> str:
    """``advpnml.evaluation.engine`` -> ``evaluation``; the package itself -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports() -> dict[str, set[str]]:
    """Every module of the package and the advpnml modules it imports (lazy imports inside functions included)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        package = module if rel.name == "__init__" else module.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.split(".")[0] == "advpnml":
                    targets.add(target)
            elif isinstance(node, ast.Import):
                targets.update(a.name for a in node.names if a.name.split(".")[0] == "advpnml")
        found[module] = targets
    return found


def test_every_top_level_part_has_a_floor():
    parts = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()}
    parts |= {"configs"}
    assert parts == set(FLOOR), f"give each part of src/advpnml a floor in LAYERS: {sorted(parts ^ set(FLOOR))}"


def test_no_import_goes_up_a_floor():
    upward = [
        f"{module} imports {target}"
        for module, targets in _imports().items()
        for target in targets
        if FLOOR[_part(target)] > FLOOR[_part(module)]
    ]
    assert not upward, upward


def test_the_parts_import_each_other_without_a_cycle():
    graph: dict[str, set[str]] = {}
    for module, targets in _imports().items():
        graph.setdefault(_part(module), set()).update(_part(t) for t in targets if _part(t) != _part(module))
    visiting, done = set(), set()

    def visit(node: str, path: list[str]) -> None:
        if node in done:
            return
        assert node not in visiting, f"import cycle: {' -> '.join([*path, node])}"
        visiting.add(node)
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, [*path, node])
        visiting.discard(node)
        done.add(node)

    for node in sorted(graph):
        visit(node, [])


def test_the_readme_layout_names_every_part_and_the_public_names_import():
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout") : readme.index("## Results")]
    missing = [part for part in FLOOR if part not in ("__init__", "__main__") and not re.search(rf"\b{part}(\.py|/)", layout)]
    assert not missing, f"the README's layout section does not name: {missing}"
    for name in advpnml.__all__:
        assert getattr(advpnml, name) is not None
    dotted = set(re.findall(r"`(advpnml(?:\.\w+)+)`", readme))
    for ref in sorted(dotted):
        _resolve(ref)


def _resolve(dotted: str) -> object:
    """The object ``advpnml.a.b.c`` names: the longest importable module, then attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise AssertionError(f"{dotted} does not resolve")


@pytest.mark.parametrize("path", sorted((ROOT / "results").rglob("records*.jsonl")), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_records_file_in_results_still_resumes(path):
    from advpnml.config import AttackSpec, EvalSettings
    from advpnml.evaluation.records import scan_records

    header = json.loads(path.read_text().splitlines()[0])
    stored = dict(header["settings"])
    stored["attacks"] = [AttackSpec(**a) for a in stored["attacks"]]
    settings = EvalSettings(**stored)
    assert settings.digest() == header["digest"], "the settings it was written with hash as they did"
    scan = scan_records(path, settings, header.get("identity"))
    assert scan.done and not scan.corrupt


def test_the_top_level_holds_at_most_twelve_modules():
    """A reader meets the few modules at the top first; everything else lives in a package named for its concern."""
    modules = sorted(p.stem for p in PACKAGE.glob("*.py") if not p.stem.startswith("__"))
    assert len(modules) <= 12, modules
