"""What a run depends on beyond its settings: the model's weights and what it computes, the data, the package and
torch versions.

A records file stores these in its header; resuming with a different model under the same checkpoint path (other
weights, another ``--source`` reading the same file, a changed normalization, an edited helper that ``forward``
calls), other data (``--samples``), or another version is refused naming what changed, instead of mixing two runs'
samples into one table. What the model computes is judged by its outputs on a fixed, seeded probe batch
(:func:`probe_outputs`), not by its source: code lives anywhere (helpers, other methods, other files, a library), and
the same file copied to another folder or imported in a fresh interpreter computes the same. Tensors are hashed in
their logical element order, so a model stored channels-last hashes as it does contiguous.
"""

from __future__ import annotations

import hashlib
from itertools import chain
from typing import Any

import torch
import torch.nn as nn

from ..data.dataset import LabeledDataset


def _update(digest: hashlib._Hash, tensor: torch.Tensor) -> None:
    tensor = tensor.detach()
    digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
    if tensor.numel():
        # reshape(-1) of a contiguous tensor has stride 1 whatever its format and rank (a 0-dim buffer, a 1x1
        # channels-last weight), so the byte view below always exists and reads the elements in logical order.
        flat = tensor.cpu().contiguous().reshape(-1)
        digest.update(flat.view(torch.uint8).numpy().tobytes())


def model_digest(model: nn.Module) -> str:
    """sha256 of the model's state dict (names, dtypes, shapes and values of its parameters and persistent buffers)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        _update(digest, tensor)
    return digest.hexdigest()[:16]


#: The probe: inputs every run's model answers, stored in the records header (eq.-free: the model's own logits).
PROBE_RANDOM = 4
PROBE_SAMPLES = 4
PROBE_SEED = 0
#: Two probes agree when every output differs by at most this fraction of the larger output scale (floored at 1).
#: The same model in another process, folder or memory format repeats its outputs to the last bit on one machine;
#: another thread count, BLAS kernel or device (a GPU's TF32 matmuls) moves fp32 logits by up to about 1e-3 of their
#: scale. A change to what the model computes (an activation, a constant, a normalization) moves them by far more.
PROBE_RTOL = 2e-3


def probe_inputs(dataset: LabeledDataset) -> torch.Tensor:
    """The probe batch: ``PROBE_RANDOM`` inputs drawn uniformly in the data's bounds by a private generator seeded
    ``PROBE_SEED`` (the same in every process), then the data's first ``PROBE_SAMPLES`` samples."""
    x0 = torch.as_tensor(dataset[0][0])
    low, high = getattr(getattr(dataset, "info", None), "bounds", None) or (0.0, 1.0)
    generator = torch.Generator().manual_seed(PROBE_SEED)
    noise = low + (high - low) * torch.rand((PROBE_RANDOM, *x0.shape), generator=generator, dtype=torch.float64)
    samples = [torch.as_tensor(dataset[i][0]).double() for i in range(min(PROBE_SAMPLES, len(dataset)))]
    return torch.cat([noise, torch.stack(samples)])


def probe_outputs(model: nn.Module, dataset: LabeledDataset) -> list[list[float]]:
    """What ``model`` computes, read off its outputs on :func:`probe_inputs` (6 significant digits), in eval mode,
    without gradients, with torch's random generators seeded and restored: a model that draws random numbers
    answers the same probe the same way in every process. Whatever code computes the outputs (a helper outside
    ``forward``, another file, a library) is covered, because the outputs are."""
    param = next((t for t in chain(model.parameters(), model.buffers()) if t.is_floating_point()), None)
    dtype = param.dtype if param is not None else torch.float32
    device = param.device if param is not None else torch.device("cpu")
    x = probe_inputs(dataset).to(device=device, dtype=dtype)
    devices = [device.index or 0] if device.type == "cuda" else []
    training = model.training
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(PROBE_SEED)
        try:
            out = model.eval()(x)
        finally:
            model.train(training)
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"the model returned a {type(out).__name__}, not a tensor of logits")
    return [[float(f"{v:.6g}") for v in row] for row in out.detach().double().cpu().reshape(len(x), -1).tolist()]


def probes_differ(old: Any, new: Any, rtol: float = PROBE_RTOL) -> str | None:
    """Why two probes' outputs are not the same model's (None when they agree within ``rtol``, see
    :data:`PROBE_RTOL`): another shape, or the largest difference and where."""
    try:
        a, b = torch.tensor(old, dtype=torch.float64), torch.tensor(new, dtype=torch.float64)
    except (TypeError, ValueError):
        return "the stored probe is unreadable"
    if a.shape != b.shape:
        return f"outputs of shape {tuple(a.shape)} -> {tuple(b.shape)}"
    if not a.numel():
        return None
    scale = max(1.0, float(a.abs().nan_to_num(0).max()), float(b.abs().nan_to_num(0).max()))
    gap = (a - b).abs().nan_to_num(float("inf"))
    gap[a.isnan() & b.isnan()] = 0
    worst = int(gap.argmax())
    if float(gap.flatten()[worst]) <= rtol * scale:
        return None
    row, col = divmod(worst, a.shape[1]) if a.dim() == 2 else (worst, 0)
    return (
        f"outputs differ by up to {float(gap.flatten()[worst]):.4g} (tolerance {rtol:g} of the outputs' scale {scale:.3g}; probe {row}, "
        f"output {col}: {float(a.flatten()[worst]):.6g} -> {float(b.flatten()[worst]):.6g})"
    )


def architecture(model: nn.Module) -> str:
    """The architecture in words: the registry name and the external source it was read as, else the class."""
    named = getattr(model, "advpnml_architecture", None)
    if isinstance(named, str):
        return named
    spec = getattr(model, "advpnml_spec", None)
    if isinstance(spec, dict) and "arch" in spec:
        return spec["arch"] + (f" (source {spec['source']})" if spec.get("source") else "")
    return f"{type(model).__module__}.{type(model).__qualname__}"


def data_digest(dataset: LabeledDataset) -> str:
    """sha256 of the samples: the tensors of an in-memory dataset, else every sample in order."""
    digest = hashlib.sha256()
    if hasattr(dataset, "x") and hasattr(dataset, "y"):
        _update(digest, dataset.x)
        _update(digest, dataset.y)
    else:
        for i in range(len(dataset)):
            x, y = dataset[i]
            _update(digest, torch.as_tensor(x))
            _update(digest, torch.as_tensor(y))
    return digest.hexdigest()[:16]


def run_identity(
    model: nn.Module, dataset: LabeledDataset, precision: str = "fp32", defense: nn.Module | None = None
) -> dict[str, Any]:
    """The content a run depends on, as stored in its records header: the weights' hash, the architecture's name,
    the model's outputs on the probe batch (:func:`probe_outputs`), the data's hash, the versions, and
    ``precision`` only when not fp32 (so the headers of every fp32 run, older ones included, stay as they were).
    A user's own ``defense`` adds the same three for it (a registry defense is named by the settings)."""
    from ..version import __version__

    own = (
        {
            "defense_sha256": model_digest(defense),
            "defense_architecture": architecture(defense),
            "defense_outputs": probe_outputs(defense, dataset),
        }
        if defense is not None
        else {}
    )
    return {
        **own,
        "model_sha256": model_digest(model),
        "architecture": architecture(model),
        "data_sha256": data_digest(dataset),
        "outputs": probe_outputs(model, dataset),
        "advpnml": __version__,
        "torch": torch.__version__,
        **({"precision": precision} if precision != "fp32" else {}),
    }


_WHAT = {
    "model_sha256": "the model's weights",
    "data_sha256": "the data",
    "advpnml": "the advpnml version",
    "torch": "the torch version",
    "precision": "the precision",
    "architecture": "the architecture",
    "outputs": "the model as it computes (its outputs on the probe batch: its code, layers, normalization or buffers)",
    "defense_sha256": "your defense's weights",
    "defense_architecture": "your defense",
    "defense_outputs": "your defense as it computes (its outputs on the probe batch)",
}
#: what a header without the key means
_DEFAULTS = {"precision": "fp32"}


def identity_changes(stored: dict[str, Any] | None, current: dict[str, Any]) -> list[str]:
    """What differs between a stored identity and the current one (nothing when none was stored: older files).

    A key an older header lacks (``architecture``, ``outputs``) is not compared: those files resume. Older headers'
    ``computation_sha256`` (a hash of the module tree and ``forward``'s source, which changed with the process for a
    ``--model FILE.py`` class) is no longer compared; their weights, architecture and data still are. The probe's
    outputs agree within :data:`PROBE_RTOL`."""
    if not isinstance(stored, dict) or not stored:
        return []
    changes = []
    for key in dict.fromkeys([*current, *_DEFAULTS]):
        if key in stored or key in _DEFAULTS:
            old, new = stored.get(key, _DEFAULTS.get(key)), current.get(key, _DEFAULTS.get(key))
            if key in ("outputs", "defense_outputs"):
                why = probes_differ(old, new)
                if why:
                    changes.append(f"{_WHAT[key]}: {why}")
            elif old != new:
                changes.append(f"{_WHAT.get(key, key)} ({old} -> {new})")
    return changes
