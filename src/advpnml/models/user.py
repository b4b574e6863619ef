"""The user's own model class: built by name from their file or package, weights from a plain state dict.

``--model FILE.py:NAME`` (or ``package.module:NAME``) imports the user's code and calls ``NAME()``: that runs their
code, which is what they asked for, and happens only when they name it; a checkpoint never runs code (it is read
with ``weights_only=True``). The model is named ``NAME (FILE.py)`` (or ``package.module:NAME``) in every process and
from any folder, so a run resumes after a copy or a restart; what it computes is judged by its outputs
(:func:`advpnml.evaluation.identity.probe_outputs`).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import torch.nn as nn

from .checkpoint import CheckpointError, load_weights, read_checkpoint


def build_user_model(spec: str) -> nn.Module:
    """The model ``NAME()`` returns, NAME from ``FILE.py:NAME`` or ``package.module:NAME``; one line for each way
    that fails (no such file or module, no NAME, NAME raising, NAME returning something that is not a module)."""
    factory, origin, label = load_user_callable(spec, "--model")
    name = spec.rpartition(":")[2]
    try:
        model = factory()
    except SystemExit as err:
        raise ValueError(f"{origin}:{name}() called sys.exit({err.code!r})") from None
    except Exception as err:
        raise ValueError(
            f"{origin}:{name}() raised {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''} "
            "(NAME is called without arguments)"
        ) from None
    if not isinstance(model, nn.Module):
        raise ValueError(f"{origin}:{name}() returned a {type(model).__name__}, not a torch.nn.Module")
    object.__setattr__(model, "advpnml_architecture", label)  # read by advpnml.evaluation.identity.architecture
    return model


def load_user_callable(spec: str, flag: str = "--model") -> tuple[Any, str, str]:
    """NAME from ``FILE.py:NAME`` or ``package.module:NAME`` (the user's code runs: they named it), its origin and its
    label (``NAME (FILE.py)``, the same from any folder); one line for each way that fails. ``flag`` names the
    option in the errors (``--model``, ``--defense``)."""
    where, sep, name = spec.rpartition(":")
    if not sep or not where or not name:
        raise ValueError(f"{flag} must be FILE.py:NAME or package.module:NAME (NAME a class or function), got {spec!r}")
    if where.endswith(".py") or os.sep in where or "/" in where:
        path = Path(where)
        if not path.is_file():
            raise ValueError(f"{flag.lstrip('-')} file not found: {path}")
        # the same name for the same file in every process (Python's hash() of a string is salted per process)
        module_name = f"advpnml_user_{flag.strip('-')}_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]}"
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        if module_spec is None or module_spec.loader is None:
            raise ValueError(f"{path} cannot be imported as Python")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module  # dataclasses and pickling look a class's module up by name
        folder = str(path.resolve().parent)
        if folder not in sys.path:  # its own folder first, as `python FILE.py` has it: `from helpers import act` works
            sys.path.insert(0, folder)
        loader, origin, label = (lambda: module_spec.loader.exec_module(module)), str(path), f"{name} ({path.name})"
    else:
        module, origin, label = None, where, spec

        def loader() -> None:
            nonlocal module
            module = importlib.import_module(where)

    try:
        loader()
    except ModuleNotFoundError as err:
        raise ValueError(f"cannot import {origin}: {err}") from None
    except SystemExit as err:  # the user's module ends the process on import (argparse, a script's main)
        raise ValueError(
            f"importing {origin} called sys.exit({err.code!r}); put script code under if __name__ == '__main__':"
        ) from None
    except Exception as err:  # the user's code: whatever it raises is reported in one line
        raise ValueError(
            f"importing {origin} raised {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        ) from None
    if module is None:
        raise ValueError(f"importing {origin} gave no module")
    factory = getattr(module, name, None)
    if factory is None:
        found = sorted(
            k
            for k, v in vars(module).items()
            if callable(v) and not k.startswith("_") and getattr(v, "__module__", None) == module.__name__
        )
        raise ValueError(f"{origin} has no {name!r}; it defines: {', '.join(found) or 'nothing callable'}")
    if not callable(factory):
        raise ValueError(f"{origin}:{name} is a {type(factory).__name__}, not a class or function")
    return factory, origin, label


def load_state(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a plain state dict, or one held under ``state_dict`` or ``model``, into ``model`` (strict; a mismatch is
    one line naming the first keys or shapes that do not fit)."""
    payload: Any = read_checkpoint(path)
    if isinstance(payload, dict):
        for key in ("state_dict", "model"):
            if isinstance(payload.get(key), dict):
                payload = payload[key]
                break
    if not isinstance(payload, dict) or not payload:
        raise CheckpointError(f"{path} holds no state dict (a dict of tensors, plain or under 'state_dict' or 'model')")
    state = {k[len("module.") :] if isinstance(k, str) and k.startswith("module.") else k: v for k, v in payload.items()}
    load_weights(model, state, source=str(path), arch=type(model).__name__)
    return model.eval()
