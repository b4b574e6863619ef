"""A short GPU re-measure (no reference loops): each form's floor and PGD-10 vs torchattacks.

    python benchmarks/gpu_recheck.py OUT.json
"""
import json
import sys

import torch

from advpnml.benchmark import CASES, bench_case, format_table

device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
rows = []
for name, (arch, kwargs, shape, cpu_batch, gpu_batch) in CASES.items():
    rows.append(bench_case(name, arch, kwargs, shape, gpu_batch if device.type == "cuda" else cpu_batch, device, repeats=7, loops=False))
result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "threads": torch.get_num_threads(),
          "torch": torch.__version__, "repeats": 7, "rows": rows}
print(format_table(result))
if len(sys.argv) > 1:
    with open(sys.argv[1], "w") as f:
        json.dump(result, f, indent=2)
