#!/usr/bin/env bash
# The one measurement issue 6 still needs a GPU for: PGD-10 throughput, ours vs torchattacks, with a
# kernel profile of both so a gap can be traced (~1 minute on an H200). One prepared call:
#   here:   python3 -m pip download --no-deps --only-binary=:all: -d .whl torchattacks   (git-ignored, carried)
#   device: OUT=$OUT bash benchmarks/gpu_pgd_check.sh                  (run tool, carry [".whl"])
#   dry run on CPU: DEVICE=cpu MODELS=mnist_cnn BATCH=2 OUT=/tmp/out bash benchmarks/gpu_pgd_check.sh
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
DEVICE=${DEVICE:-cuda}
MODELS=${MODELS:-mnist_cnn,preact_resnet18,wrn_28_10}
BATCH=${BATCH:-}
OUT=${OUT:?set OUT to the folder that receives the results}
mkdir -p "$OUT"
rm -f "$OUT/check.log"
source benchmarks/device_env.sh "$OUT/check.log"
timeout 300 python3 -m advpnml bench --device "$DEVICE" --skip-loops --models "$MODELS" --repeats 7 ${BATCH:+--batch $BATCH} \
    --out "$OUT/bench_pgd_check.json" 2>&1 | tee -a "$OUT/check.log"
timeout 200 python3 benchmarks/pgd_profile.py --device "$DEVICE" --models "$MODELS" ${BATCH:+--batch $BATCH} \
    --out "$OUT/pgd_profile.json" 2>&1 | grep -v '^USDT' | tee -a "$OUT/check.log"
