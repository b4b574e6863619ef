"""advpnml: the Adversarial pNML defense and the tools to evaluate it honestly.

    import advpnml
    model = advpnml.create_model("madry_cnn")
    defended = advpnml.AdversarialPnml(model, refine_eps=0.1)
    log_q = defended(x)            # x in [0, 1], shape (N, 1, 28, 28)
"""
from .data import load_dataset
from .defense import AdversarialPnml, PnmlOutput
from .models import create_model, list_models, load_checkpoint, load_external, save_checkpoint

__version__ = "0.1.0"

__all__ = [
    "AdversarialPnml", "PnmlOutput", "__version__", "create_model", "list_models", "load_checkpoint",
    "load_dataset", "load_external", "save_checkpoint",
]
