"""The Adversarial pNML defense (eqs. 8-12): :class:`AdversarialPnml`, and the second-order backward through its
refinement (the paper's Appendix B attack, :mod:`advpnml.defense.second_order`)."""

from .pnml import EXCLUDED_LOG_PROB, AdversarialPnml, PnmlOutput

__all__ = ["EXCLUDED_LOG_PROB", "AdversarialPnml", "PnmlOutput"]
