"""Model architectures (registry), normalization, checkpoints and external-checkpoint adapters."""

from . import cifar_resnet18, cifar_small, mlp, mnist_cnn, preact_resnet, resnet, wide_resnet  # noqa: F401  (registers the architectures)
from .checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from .external import EXTERNAL_SOURCES, default_checkpoint, load_external, unwrap_state_dict
from .layout import MEMORY_FORMATS, resolve_memory_format, set_memory_format, use_memory_format
from .normalization import Normalize, Normalized
from .registry import arch_info, create_model, list_models, register_model
from .user import build_user_model, load_state

__all__ = [
    "CheckpointError",
    "EXTERNAL_SOURCES",
    "MEMORY_FORMATS",
    "Normalize",
    "Normalized",
    "arch_info",
    "build_user_model",
    "create_model",
    "default_checkpoint",
    "list_models",
    "load_checkpoint",
    "load_external",
    "load_state",
    "read_checkpoint",
    "register_model",
    "resolve_memory_format",
    "save_checkpoint",
    "set_memory_format",
    "unwrap_state_dict",
    "use_memory_format",
]
