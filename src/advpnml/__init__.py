"""advpnml: the Adversarial pNML defense and the tools to evaluate it honestly.

import advpnml
defended = advpnml.AdversarialPnml(model, refine_eps=0.1)        # any nn.Module: inputs in [0, 1], logits out
log_q = defended(x)                                              # x in [0, 1], shape (N, C, H, W)
found = advpnml.evaluate(model, (x, y), eps=0.3, lam=0.1)       # every attack, base and defense, per sample
print(found.markdown())
"""

from .api import Evaluation, evaluate
from .data import load_dataset
from .defense import AdversarialPnml, PnmlOutput
from .models import create_model, list_models, load_checkpoint, load_external, save_checkpoint
from .version import __version__

__all__ = [
    "AdversarialPnml",
    "Evaluation",
    "PnmlOutput",
    "__version__",
    "create_model",
    "evaluate",
    "list_models",
    "load_checkpoint",
    "load_dataset",
    "load_external",
    "save_checkpoint",
]
