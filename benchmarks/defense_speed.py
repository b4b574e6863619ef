"""Defense and attack speed as ratios measured in one run; same as ``advpnml bench``.

    python benchmarks/defense_speed.py --device cpu --threads 2 --out results/bench_cpu.json
    python benchmarks/defense_speed.py --device cuda --out results/bench_gpu.json

Targets (issue 6): defense <= 1.25x its floor; on CPU >= 1.3x faster than a loop over hypotheses
and >= 5x faster than the per-sample loop (on GPU >= 10x); PGD throughput >= torchattacks';
top-3 of 100 classes >= 10x cheaper than all 100. torchattacks is optional:
``pip install --no-deps torchattacks`` (its torchvision requirement would replace torch).
``pgd_profile.py`` traces a PGD gap to kernels; ``gpu_pgd_check.sh`` runs both on a lent GPU.
"""

import sys

from advpnml.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
