#!/usr/bin/env bash
# Issue 14 on a lent GPU, one prepared call: advertorch's robust LeNet-5 on the first SAMPLES full-MNIST
# test images (eps 0.3, lambda 0.1), our strong suite at full default budgets in a cascade, and the
# reference AutoAttack (pyautoattack, "standard") on every sample, base and defense. The CPU run of the
# same command (500 images) is results/strong_advertorch_lenet5_cpu/; this one is the 1,000+ image table.
#   here:   mkdir -p .devdata/weights && cp -r ../shared/data/mnist .devdata/ \
#             && cp -r ../shared/data/weights/advertorch_mnist_lenet5 .devdata/weights/ \
#             && python3 -m pip download --no-deps -d .whl pyautoattack==0.2.0     (both git-ignored, carried)
#   device: OUT=$OUT bash benchmarks/gpu_reference_check.sh               (run tool, carry [".devdata", ".whl"])
#   dry run on CPU: DEVICE=cpu SAMPLES=4 ATTACKS="APGD-T adaptive,AutoAttack" OUT=/tmp/out bash benchmarks/gpu_reference_check.sh
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
DEVICE=${DEVICE:-cuda}
DATA=${DATA:-.devdata}
SAMPLES=${SAMPLES:-1000}
LIMIT_S=${LIMIT_S:-540}
ATTACKS=${ATTACKS:-FGSM,PGD,APGD-CE,APGD-T,APGD-T adaptive,APGD-CE adaptive,Joint hypotheses,Adaptive-margin,Adaptive,Square,AutoAttack}
OUT=${OUT:?set OUT to the folder that receives the results}
mkdir -p "$OUT"
rm -f "$OUT/check.log"
source benchmarks/device_env.sh "$OUT/check.log"
start=$(date +%s)
# The run resumes where a cut-off call stopped: call again with the same OUT contents carried back as --out.
timeout "$LIMIT_S" python3 -m advpnml evaluate --checkpoint "$DATA/weights/advertorch_mnist_lenet5/mnist_lenet5_advtrained.pt" \
    --source advertorch_lenet5 --config mnist --data mnist --data-dir "$DATA/mnist" --samples "$SAMPLES" --device "$DEVICE" \
    --suite autoattack --cascade --batch-size 500 --checks 100 --attacks "$ATTACKS" --out "$OUT/lenet5_autoattack" 2>&1 \
    | tr '\r' '\n' | grep -v 'it/s\]$' | tee -a "$OUT/check.log"
echo "wall $(( $(date +%s) - start )) s" | tee -a "$OUT/check.log"
