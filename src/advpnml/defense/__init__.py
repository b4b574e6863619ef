"""Test-time defenses, each an ``nn.Module`` around the base model, built by name (:func:`create_defense`): the
Adversarial pNML (eqs. 8-12, :class:`AdversarialPnml`), Hedge (:class:`Hedge`), the anti-adversary
(:class:`AntiAdversary`), test-time transformation ensembling (:class:`TransformEnsemble`), and the user's own
(:func:`build_user_defense`). The refinements' backward modes (identity BPDA, exact clip, second order through the
refinement's gradient: :mod:`advpnml.defense.second_order`) and Expectation over Transformation for a random defense
(:class:`ExpectationOverTransformation`) make one adaptive suite apply to all of them."""

from .anti_adversary import AntiAdversary
from .eot import ExpectationOverTransformation
from .hedge import Hedge
from .pnml import EXCLUDED_LOG_PROB, AdversarialPnml, PnmlOutput
from .refinement import GradientRefinement
from .registry import (
    DEFENSES,
    build_user_defense,
    check_defense,
    create_defense,
    defense_hooks,
    defense_label,
    defense_parameters,
    defense_settings,
)
from .tte import TransformEnsemble

__all__ = [
    "DEFENSES",
    "EXCLUDED_LOG_PROB",
    "AdversarialPnml",
    "AntiAdversary",
    "ExpectationOverTransformation",
    "GradientRefinement",
    "Hedge",
    "PnmlOutput",
    "TransformEnsemble",
    "build_user_defense",
    "check_defense",
    "create_defense",
    "defense_hooks",
    "defense_label",
    "defense_parameters",
    "defense_settings",
]
