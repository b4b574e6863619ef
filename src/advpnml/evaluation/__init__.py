"""The evaluation: every attack on every sample, per-sample records that resume, the gradient-masking checks, and the
reports drawn from the records.

- :mod:`~advpnml.evaluation.engine`: :func:`evaluate` (the engine: cascade, torchrun sharding, resume);
- :mod:`~advpnml.evaluation.records`: :class:`EvalResult` and the append-only records file;
- :mod:`~advpnml.evaluation.masking`: the gradient-masking checklist;
- :mod:`~advpnml.evaluation.reporting`: tables, summaries and figures; :mod:`~advpnml.evaluation.protocols`: the
  strict-vs-paper table.
"""

from .engine import build_attack, evaluate
from .records import SKIPPED, EvalResult, RunMismatchError

__all__ = ["SKIPPED", "EvalResult", "RunMismatchError", "build_attack", "evaluate"]
