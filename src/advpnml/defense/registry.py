"""Test-time defenses by name, as timm builds models by name: ``create_defense("hedge", model, params)``.

Every defense is an ``nn.Module`` around the base model (inputs in [0, 1], logits or log-probabilities out), so every
attack runs against it unchanged. :data:`advpnml.config.DEFENSE_HOOKS` says what else each offers the adaptive
attacks; a user's own defense (``FILE.py:NAME``, ``NAME(model)`` returning the defended module) offers what its
methods do (:func:`defense_hooks`).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn as nn

from ..config import DEFENSE_NAMES, DefenseSpec
from ..models.user import load_user_callable
from ..modes import frozen_parameters
from .anti_adversary import AntiAdversary
from .hedge import Hedge
from .pnml import AdversarialPnml
from .refinement import GradientRefinement
from .tte import TransformEnsemble

#: The registry: name -> class. ``pnml`` is built from its :class:`~advpnml.config.DefenseSpec` (``[defense]``).
DEFENSES: dict[str, type[nn.Module]] = {
    "pnml": AdversarialPnml,
    "hedge": Hedge,
    "anti-adversary": AntiAdversary,
    "tte": TransformEnsemble,
}
assert tuple(DEFENSES) == DEFENSE_NAMES


def defense_parameters(name: str) -> dict[str, Any]:
    """The keyword parameters of defense ``name`` with their defaults (the values its paper used)."""
    skip = {"self", "model", "options", "check_inputs", "seed", "bounds"}
    signature = inspect.signature(DEFENSES[name].__init__)
    return {k: p.default for k, p in signature.parameters.items() if k not in skip and p.kind is p.POSITIONAL_OR_KEYWORD}


def create_defense(
    name: str,
    model: nn.Module,
    params: dict[str, Any] | None = None,
    spec: DefenseSpec | None = None,
    bounds: tuple[float, float] | None = (0.0, 1.0),
) -> nn.Module:
    """Defense ``name`` around ``model``: ``pnml`` from ``spec`` (lambda, steps, top-k, backward), the others from
    ``params`` (their keyword arguments; the defaults are their papers'). An unknown name or parameter, or a value
    out of range, is one line."""
    if name not in DEFENSES:
        raise ValueError(f"unknown defense {name!r}; expected one of {', '.join(DEFENSES)} or your own as FILE.py:NAME")
    if name == "pnml":
        return AdversarialPnml.from_spec(model, spec or DefenseSpec(0.0), bounds).eval()
    params = dict(params or {})
    known = defense_parameters(name)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ValueError(f"defense {name!r} has no parameter {', '.join(map(repr, unknown))}; it takes: {', '.join(known)}")
    if name == "hedge":
        params["bounds"] = bounds
    try:
        return DEFENSES[name](model, **params).eval()
    except TypeError as err:  # a value of the wrong kind that the checks let through
        raise ValueError(f"defense {name!r}: {err}") from None


def build_user_defense(spec: str, model: nn.Module) -> nn.Module:
    """The defended module ``NAME(model)`` returns, NAME from ``FILE.py:NAME`` (or ``package.module:NAME``); one line
    for each way that fails. Its label (``NAME (FILE.py)``) is in ``advpnml_architecture``."""
    factory, origin, label = load_user_callable(spec, "--defense")
    try:
        defense = factory(model)
    except SystemExit as err:
        raise ValueError(f"{origin}:{spec.rpartition(':')[2]}(model) called sys.exit({err.code!r})") from None
    except Exception as err:
        raise ValueError(
            f"{origin}:{spec.rpartition(':')[2]}(model) raised {type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''} (NAME is called with the base model)"
        ) from None
    if not isinstance(defense, nn.Module):
        raise ValueError(f"{origin}:{spec.rpartition(':')[2]}(model) returned a {type(defense).__name__}, not a torch.nn.Module")
    object.__setattr__(defense, "advpnml_architecture", label)
    return defense.eval()


def defense_hooks(defense: nn.Module) -> tuple[str, ...]:
    """What ``defense`` offers the adaptive columns beyond its autograd (:data:`advpnml.config.DEFENSE_HOOKS`)."""
    hooks = []
    if callable(getattr(defense, "with_backward", None)):
        hooks.append("refinement")
    if isinstance(defense, GradientRefinement):
        hooks.append("steps")
    if isinstance(defense, AdversarialPnml):
        hooks.append("hypotheses")
    return tuple(hooks)


def defense_label(defense: nn.Module) -> str:
    """A user's defense's name in the settings: ``own: NAME (FILE.py)`` or ``own: ClassName``."""
    return "own: " + str(getattr(defense, "advpnml_architecture", type(defense).__name__))


def defense_settings(defense: nn.Module) -> dict[str, Any]:
    """The parameters that decide what ``defense`` computes, for the settings and the report (empty when unknown)."""
    settings = getattr(defense, "settings", None)
    return dict(settings()) if callable(settings) else {}


def check_defense(defense: nn.Module, x: torch.Tensor, classes: int) -> None:
    """One forward of ``x`` (a sample or two) through ``defense``: it must be a module returning one floating row of
    ``classes`` scores per input; else one line, before any attack."""
    if not isinstance(defense, nn.Module):
        raise ValueError(f"the defense must be a torch.nn.Module around the model, got {type(defense).__name__}")
    try:
        with frozen_parameters(defense), torch.no_grad():
            out = defense.eval()(x)
    except (RuntimeError, ValueError) as err:
        raise ValueError(
            f"the defense fails on one input of shape {tuple(x.shape[1:])}: {str(err).splitlines()[0][:160]}"
        ) from None
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if not isinstance(out, torch.Tensor) or not out.is_floating_point() or out.dim() != 2 or out.shape[0] != len(x):
        raise ValueError(
            f"the defense must return floating scores of shape (N, classes); for {len(x)} input(s) it returned {shape}"
        )
    if out.shape[1] != classes:
        raise ValueError(f"the defense returns {out.shape[1]} scores per input but the model has {classes} classes")
