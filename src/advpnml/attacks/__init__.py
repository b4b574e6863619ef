"""Attacks, each called as ``attack(model, x, y) -> x_adv`` on inputs in [0, 1].

Running any of them on :class:`advpnml.AdversarialPnml` attacks the defense end to end
(the paper's adaptive attack: identity backward through the refinement).
"""

from __future__ import annotations

from typing import Any

from .apgd import APGD, APGDT
from .autoattack import ReferenceAutoAttack
from .base import Attack, eval_mode, project
from .fgsm import FGSM
from .hsja import HopSkipJump
from .joint import JointHypotheses
from .losses import LOSSES, attack_objective, cross_entropy, dlr, dlr_targeted, margin
from .pgd import PGD
from .square import Square
from .transfer import Transfer

ATTACKS: dict[str, type[Attack]] = {
    "fgsm": FGSM,
    "pgd": PGD,
    "apgd": APGD,
    "apgd-t": APGDT,
    "square": Square,
    "hsja": HopSkipJump,
    "joint": JointHypotheses,
    "autoattack": ReferenceAutoAttack,
}

#: Attacks that are a whole evaluation protocol of their own (the reference AutoAttack runs its
#: attacks in a cascade inside): they always see every sample, never only what ours left robust.
REFERENCE_ATTACKS = ("autoattack",)

#: Attacks that see only the model's outputs (decisions or scores), never its gradients.
BLACK_BOX = ("hsja", "square")


def create_attack(name: str, **params: Any) -> Attack:
    """Build attack ``name`` (a key of :data:`ATTACKS`) from keyword parameters, e.g. from a config file."""
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; expected one of: {', '.join(ATTACKS)}")
    try:
        return ATTACKS[name](**params)
    except TypeError as err:
        raise ValueError(f"bad parameters for attack {name!r}: {err}") from None


__all__ = [
    "APGD",
    "APGDT",
    "ATTACKS",
    "BLACK_BOX",
    "REFERENCE_ATTACKS",
    "ReferenceAutoAttack",
    "Attack",
    "FGSM",
    "HopSkipJump",
    "JointHypotheses",
    "LOSSES",
    "PGD",
    "Square",
    "Transfer",
    "attack_objective",
    "create_attack",
    "cross_entropy",
    "dlr",
    "dlr_targeted",
    "eval_mode",
    "margin",
    "project",
]
