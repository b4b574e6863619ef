"""Gradient-masking checks printed with every report (Carlini et al. 2019's checklist, AutoAttack's flags).

A defense that hides gradients looks robust to gradient attacks without being robust. Each check
is a pass / warn line with the numbers behind it:

- accuracy falls as eps grows and, at the domain's half-width (where every input can be moved onto the same image),
  is no higher than the largest class's share (white-box, margin loss);
- doubling the white-box budget (steps and restarts) does not lower accuracy much (else the
  attack had not converged and the reported number is too high);
- white-box is not weaker than black-box, transfer or single-step attacks (from the evaluation);
- few inputs have an exactly zero input gradient;
- outputs are logits (base) and log-probabilities (defense) where the losses assume so;
- inputs outside the domain are rejected rather than silently attacked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..attacks import BLACK_BOX, PGD, REFERENCE_ATTACKS
from ..config import DefenseSpec
from ..defense import AdversarialPnml
from .records import EvalResult


@dataclass
class Check:
    """One line of the checklist. status: ``pass``, ``warn`` or ``info``."""

    row: str
    name: str
    status: str
    detail: str

    def line(self) -> str:
        """The check as one printed line: ``[STATUS] row name: detail``."""
        return f"[{self.status.upper():4}] {self.row:<7} {self.name}: {self.detail}"


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def _white_box(eps: float, steps: int, restarts: int, bounds, seed: int = 0) -> PGD:
    return PGD(eps, steps, 2.5 * eps / steps, restarts=restarts, loss="margin", early_stop=True, bounds=bounds, seed=seed)


def eps_curve(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, bounds, steps: int = 20
) -> list[tuple[float, float]]:
    """White-box accuracy at 0.25, 0.5, 1, 2 and 4 times ``eps`` and, in a bounded domain, at its half-width: there
    every input can be moved onto the same image (the box's centre), so no more than the largest class's share of the
    samples can stay correct, whatever the model. Radii beyond the half-width are left out."""
    cap = (bounds[1] - bounds[0]) / 2 if bounds is not None else float("inf")
    radii = sorted({min(m * eps, cap) for m in (0.25, 0.5, 1, 2, 4)} | ({cap} if bounds is not None else set()))
    return [(r, _accuracy(model, _white_box(r, steps, 1, bounds)(model, x, y), y)) for r in radii]


def reachable_ceiling(y: torch.Tensor) -> float:
    """The most accuracy any classifier can keep when every input is moved onto one image: the largest class's share."""
    return torch.bincount(y.cpu()).max().item() / len(y) if len(y) else 0.0


def zero_gradient_fraction(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of inputs whose cross-entropy input gradient is exactly zero everywhere."""
    xr = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = model(xr)
        (grad,) = torch.autograd.grad(F.cross_entropy(out, y, reduction="sum"), xr)
    return (grad.flatten(1).abs().amax(1) == 0).float().mean().item()


def masking_checks(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    defense: DefenseSpec | nn.Module | None = None,
    result: EvalResult | None = None,
    bounds=(0.0, 1.0),
    steps: int = 20,
    log: Callable[[str], None] | None = None,
) -> list[Check]:
    """Run the checklist on the base model and (with ``defense``: a pNML spec or any defense module around ``model``)
    the defense, on the samples ``x, y``."""
    rows: dict[str, nn.Module] = {"base": model.eval()}
    if defense is not None:
        rows["defense"] = (
            defense.eval() if isinstance(defense, nn.Module) else AdversarialPnml.from_spec(model, defense, bounds).eval()
        )
    checks: list[Check] = []
    tol = max(1.0 / len(y), 0.02)
    for row, m in rows.items():
        curve = eps_curve(m, x, y, eps, bounds, steps)
        rising = [(a, b) for (a, acc_a), (b, acc_b) in zip(curve, curve[1:]) if acc_b > acc_a + tol]
        text = ", ".join(f"{100 * acc:.0f}% at {r:.3g}" for r, acc in curve)
        if rising:
            checks.append(Check(row, "accuracy vs eps", "warn", f"accuracy rises with eps ({text})"))
        elif bounds is not None:
            ceiling = reachable_ceiling(y)
            radius, left = curve[-1]
            if left > ceiling + tol:
                checks.append(
                    Check(
                        row,
                        "accuracy vs eps",
                        "warn",
                        f"{100 * left:.0f}% left at eps {radius:.3g}, where every input can "
                        f"be moved onto the same image so at most {100 * ceiling:.0f}% (the largest class) can stay correct "
                        f"({text}): the attack fails where it cannot fail; gradients may be masked",
                    )
                )
            else:
                checks.append(
                    Check(
                        row,
                        "accuracy vs eps",
                        "pass",
                        f"{100 * left:.0f}% at eps {radius:.3g}, where at most "
                        f"{100 * ceiling:.0f}% (the largest class) can stay correct ({text})",
                    )
                )
        elif curve[-1][1] > 0.05:
            checks.append(
                Check(
                    row,
                    "accuracy vs eps",
                    "warn",
                    f"{100 * curve[-1][1]:.0f}% left at eps {curve[-1][0]:.3g} ({text}): "
                    "an attack at 4x eps should reach ~0 on unbounded inputs; gradients may be masked",
                )
            )
        else:
            checks.append(Check(row, "accuracy vs eps", "pass", f"falls to ~0 ({text})"))
        single = _accuracy(m, _white_box(eps, steps, 1, bounds)(m, x, y), y)
        double = _accuracy(m, _white_box(eps, 2 * steps, 2, bounds, seed=1)(m, x, y), y)
        status = "warn" if double < single - tol else "pass"
        checks.append(
            Check(
                row,
                "doubling steps and restarts",
                status,
                f"{100 * single:.1f}% with {steps} steps x 1 -> {100 * double:.1f}% with {2 * steps} x 2"
                + ("; the attack had not converged: raise its budget" if status == "warn" else ""),
            )
        )
        zero = zero_gradient_fraction(m, x, y)
        checks.append(
            Check(
                row,
                "zero input gradients",
                "warn" if zero > 0.01 else "pass",
                f"{100 * zero:.1f}% of inputs have an all-zero gradient",
            )
        )
        with torch.no_grad():
            out = m(x)
        if row == "base" or not isinstance(m, AdversarialPnml):
            looks_like_probs = bool(
                ((out >= 0) & (out <= 1)).all() and torch.allclose(out.sum(1), torch.ones_like(out[:, 0]), atol=1e-4)
            )
            checks.append(
                Check(
                    row,
                    "output type",
                    "warn" if looks_like_probs else "pass",
                    "outputs look like probabilities; cross-entropy on them masks gradients"
                    if looks_like_probs
                    else "logits (not normalized)",
                )
            )
        else:
            ok = torch.allclose(out.logsumexp(1), torch.zeros_like(out[:, 0]), atol=1e-4)
            checks.append(
                Check(
                    row,
                    "output type",
                    "pass" if ok else "warn",
                    "log-probabilities (log q sums to 1)" if ok else "log q does not normalize",
                )
            )
        if result is not None:
            checks.extend(_attack_order_checks(result, row))
            checks.extend(_reference_checks(result, row))
    if bounds is not None:
        outside = x + (bounds[1] - bounds[0]) * 2
        refused = []
        for name, fn in (
            ("defense", lambda: _defense_row(rows, model, bounds)(outside)),
            ("attack", lambda: _white_box(eps, 1, 1, bounds)(model, outside, y)),
        ):
            try:
                fn()
            except ValueError:
                refused.append(name)
        checks.append(
            Check(
                "both",
                "inputs outside the domain",
                "pass" if len(refused) == 2 else "warn",
                f"rejected by: {', '.join(refused) or 'nothing'}",
            )
        )
    if log is not None:
        for check in checks:
            log(check.line())
    return checks


def _defense_row(rows: dict[str, nn.Module], model: nn.Module, bounds) -> nn.Module:
    """The defense row, or (base only) a pNML of lambda 0: whether a defense refuses inputs outside the domain."""
    return rows.get("defense") or AdversarialPnml.from_spec(model, DefenseSpec(0.0), bounds)


def _attack_order_checks(result: EvalResult, row: str) -> list[Check]:
    """White-box must not be weaker than black-box, transfer or single-step attacks on the same samples.

    Not under a cascade: there a later attack only sees what earlier ones left, so the groups cannot be compared."""
    if result.settings.cascade:
        return []
    specs = [
        s for s in result.settings.attacks if result.correct(row, s.column) is not None and s.attack not in REFERENCE_ATTACKS
    ]

    def kind(spec) -> str:
        if spec.attack in BLACK_BOX:
            return "black-box"
        if row == "defense" and spec.defense == "transfer":
            return "transfer"
        if spec.attack == "fgsm":
            return "single-step"
        return "white-box"

    groups: dict[str, list[str]] = {}
    for spec in specs:
        groups.setdefault(kind(spec), []).append(spec.column)
    if "white-box" not in groups:
        return []
    white = result.robust_over(row, groups["white-box"])
    n = len(result.records)
    out = []
    for other in ("black-box", "transfer", "single-step"):
        if other not in groups:
            continue
        missed = int((~result.robust_over(row, groups[other]) & white).sum())
        white_acc, other_acc = white.float().mean().item(), result.robust_over(row, groups[other]).float().mean().item()
        status = "warn" if white_acc > other_acc + max(1.0 / n, 0.01) else ("info" if missed else "pass")
        out.append(
            Check(
                row,
                f"white-box vs {other}",
                status,
                f"white-box {100 * white_acc:.1f}% ({', '.join(groups['white-box'])}) vs {other} {100 * other_acc:.1f}% "
                f"({', '.join(groups[other])}); {missed} samples fooled only by {other}",
            )
        )
    return out


#: AutoAttack's flags that cast doubt on a number. "dynamic" is expected of the defense (its forward
#: computes input gradients: that is why the adaptive attacks through it are run at all): INFO there.
_FLAG_STATUS = {
    "randomized": "warn",
    "probabilities": "warn",
    "square-after-gradients": "warn",
    "zero-gradients": "warn",
    "classes": "warn",
    "dynamic": "warn",
    "other": "info",
}


def _reference_checks(result: EvalResult, row: str) -> list[Check]:
    """Our attacks against the reference AutoAttack on the same samples, and the reference's own flags."""
    comparison = result.reference_comparison().get(row)
    if comparison is None:
        return []
    n = comparison["samples"]
    if not comparison["our_columns"]:
        return [
            Check(row, "our attacks vs the reference AutoAttack", "info", "no attack of ours ran on this row: nothing to compare")
        ]
    weaker = comparison["ours"] > comparison["reference"] + max(1.0 / n, 0.01)
    detail = (
        f"ours {100 * comparison['ours']:.1f}% ({', '.join(comparison['our_columns'])}) vs reference "
        f"{100 * comparison['reference']:.1f}%; {comparison['only_reference_breaks']} samples only the reference breaks, "
        f"{comparison['only_ours_break']} only ours; both together {100 * comparison['both']:.1f}%"
    )
    checks = [
        Check(
            row,
            "our attacks vs the reference AutoAttack",
            "warn" if weaker else "pass",
            detail + ("; ours are weaker: report the per-sample worst case over both" if weaker else ""),
        )
    ]
    batches: dict[str, dict[str, set[int]]] = {}
    messages: dict[str, dict[str, None]] = {}  # per flag, its distinct messages in order (they carry per-batch numbers)
    for r in result.records:
        for key, raised in r.get("flags", {}).items():
            if key.split("/", 1)[0] != row:
                continue
            for flag, message in raised.items():
                batches.setdefault(key.split("/", 1)[1], {}).setdefault(flag, set()).add(r["index"] // result.settings.batch_size)
                messages.setdefault(flag, {})[message] = None
    total = -(-n // result.settings.batch_size)
    for column, raised in batches.items():
        for flag, where in sorted(raised.items()):
            expected = flag == "dynamic" and row == "defense"  # a plain model flagged dynamic is a real surprise
            note = " (expected of the defense: its forward computes input gradients)" if expected else ""
            status = "info" if expected else _FLAG_STATUS.get(flag, "info")
            checks.append(
                Check(
                    row,
                    f"{column} flag: {flag}",
                    status,
                    f"in {len(where)} of {total} batches{note}: {' | '.join(messages[flag])}",
                )
            )
    return checks


def checks_to_dicts(checks: list[Check]) -> list[dict[str, str]]:
    """The checks as plain dicts (for ``results.json``)."""
    return [asdict(c) for c in checks]
