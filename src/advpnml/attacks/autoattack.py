"""The reference AutoAttack (Croce & Hein 2020; PyPI ``pyautoattack``) as one of our attacks.

Our APGD-CE, APGD-T and Square are our own implementations; a reviewer trusts a number more when
the authors' own code cannot break more samples. This wrapper runs the reference implementation
(version ``"standard"``: APGD-CE, APGD-T with 9 targets, FAB-T, Square with 5,000 queries, each on
the points the previous ones left robust) under our call convention ``attack(model, x, y) -> x_adv``,
so the evaluation engine records its per-sample outcome as a column beside ours. Run on
:class:`advpnml.AdversarialPnml` it attacks the defense end to end (identity backward).

The reference reseeds the global RNG; the call runs inside ``torch.random.fork_rng`` so the
caller's RNG is untouched. Its sanity flags (randomized or dynamic defense, probabilities for
logits, Square lowering the accuracy left by the gradient attacks) are kept in :attr:`flags`.
"""

from __future__ import annotations

import logging

import torch
import torch.nn as nn

from .base import Attack, project

INSTALL_HINT = "the reference AutoAttack needs the optional extra: pip install 'advpnml[autoattack]' (PyPI pyautoattack)"
VERSIONS = ("standard", "plus", "rand")

#: AutoAttack's warnings, by the phrase that identifies each (checks.py of the reference).
FLAG_KEYS = {
    "randomized defense": "randomized",
    "probability distribution": "probabilities",
    "dynamic defense": "dynamic",
    "Square Attack has decreased": "square-after-gradients",
    "zero gradient": "zero-gradients",
    "target classes": "classes",
    "not possible to use": "classes",
}


def reference_autoattack():
    """The ``pyautoattack.AutoAttack`` class; a one-line ImportError naming the extra when it is absent."""
    try:
        from pyautoattack import AutoAttack
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    return AutoAttack


def flag_key(message: str) -> str:
    """A short name for one of AutoAttack's warnings (``"other"`` for one we do not know)."""
    return next((key for phrase, key in FLAG_KEYS.items() if phrase in message), "other")


def _reset_dynamic_check() -> None:
    """The reference counts gradient calls for its dynamic-defense check in a module-level dict that it
    never resets: once it has traced the defense, every later model would be flagged. Zero it per call."""
    from pyautoattack import checks

    for name in checks.funcs:
        checks.funcs[name] = 0


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


class ReferenceAutoAttack(Attack):
    """The reference AutoAttack, l_inf, on the whole batch it is given.

    Args:
        eps: l_inf radius. version: ``"standard"`` (the RobustBench protocol), ``"plus"`` or ``"rand"``.
        attacks: run only these of the version's attacks (e.g. ``["apgd-ce", "apgd-t"]``), each at that
            version's budget: for machines where the full version does not fit. ``None``: all of them.
        seed: the reference's seed (it seeds its random starts with it).

    After a call, :attr:`flags` holds ``{key: message}`` for each warning the reference raised.
    """

    name = "autoattack"

    def __init__(
        self, eps: float, version: str = "standard", attacks: list[str] | None = None, bounds=(0.0, 1.0), seed: int = 0
    ) -> None:
        super().__init__(eps, bounds, seed)
        if version not in VERSIONS:
            raise ValueError(f"AutoAttack version must be one of {', '.join(VERSIONS)}, got {version!r}")
        known = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")
        if attacks is not None and (not attacks or any(a not in known for a in attacks)):
            raise ValueError(f"AutoAttack attacks must be a non-empty list of {', '.join(known)}, got {attacks!r}")
        self.attacks = None if attacks is None else list(attacks)
        if self.bounds != (0.0, 1.0):
            raise ValueError(f"the reference AutoAttack works on inputs in [0, 1] only, got bounds {self.bounds}")
        self.version = version
        reference_autoattack()  # fail at construction, before any model or data is loaded
        self.flags: dict[str, str] = {}

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The reference AutoAttack on ``x`` at this radius and seed, its warnings kept in :attr:`flags`."""
        auto_attack = reference_autoattack()
        _reset_dynamic_check()
        logger = logging.getLogger("auto-attack")
        collect = _Collect()
        logger.addHandler(collect)
        try:
            devices = [x.device] if x.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                adversary = auto_attack(model, device=x.device, eps=self.eps, norm="Linf", seed=self.seed, version=self.version)
                if self.attacks is not None:
                    missing = [a for a in self.attacks if a not in adversary.attacks_to_run]
                    if missing:
                        raise ValueError(f"AutoAttack version {self.version!r} has no attack(s) {missing}")
                    adversary.attacks_to_run = list(self.attacks)  # the version's budgets, a subset of its attacks
                x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=x.shape[0])
        finally:
            logger.removeHandler(collect)
        self.flags = {flag_key(m): m for m in collect.messages}
        # The reference keeps its points inside the ball up to float rounding; ours guarantee it exactly.
        return project(x_adv.to(x.dtype), x, self.eps, self.bounds)
