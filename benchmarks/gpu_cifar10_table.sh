#!/usr/bin/env bash
# Issue 15 on a lent GPU, one prepared call: the CIFAR-10 table on the two shared robust checkpoints at full
# budgets (our strong suite in a cascade + the reference AutoAttack on every sample, base and defense).
# The CPU runs (1,000 images, cut budgets) are results/cifar10_*; this is the paper-scale table.
#   here:   bash benchmarks/gpu_cifar10_table.sh prepare     (writes the git-ignored .devdata/ and .devsite/, ~32 MB:
#           the CIFAR-10 test batch, both checkpoints, pyautoattack's sources without its 45 MB example model)
#   device: OUT=$OUT bash benchmarks/gpu_cifar10_table.sh     (run tool, carry [".devdata/cifar10", ".devdata/weights", ".devsite"])
#   dry run on CPU: DEVICE=cpu SAMPLES=4 ATTACKS="FGSM,APGD-CE adaptive,AutoAttack" OUT=/tmp/out bash benchmarks/gpu_cifar10_table.sh
# Each run resumes from its records.jsonl: a call cut off by LIMIT_S continues when called again with OUT carried back.
set -u
SHARED=${SHARED:-../shared/data}
if [ "${1:-}" = prepare ]; then
    mkdir -p .devdata/cifar10 .devdata/weights .devsite
    cp -r "$SHARED/cifar10/cifar-10-batches-py" .devdata/cifar10/
    cp -r "$SHARED/weights/abcrown_cifar10_resnet4b" "$SHARED/weights/convex_cifar10_small_8px" .devdata/weights/
    site=$(${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)} -c "import pyautoattack, os; print(os.path.dirname(pyautoattack.__file__))")
    rm -rf .devsite/pyautoattack && cp -r "$site" .devsite/pyautoattack && rm -rf .devsite/pyautoattack/examples
    du -sh .devdata .devsite
    exit 0
fi
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src:$PWD/.devsite${PYTHONPATH:+:$PYTHONPATH}"
DEVICE=${DEVICE:-cuda}
SAMPLES=${SAMPLES:-10000}
LIMIT_S=${LIMIT_S:-270}
ATTACKS=${ATTACKS:-FGSM,PGD,APGD-CE,APGD-T,APGD-CE adaptive,APGD-T adaptive,Adaptive-margin,Adaptive,Joint hypotheses,Square,AutoAttack}
OUT=${OUT:?set OUT to the folder that receives the results}
mkdir -p "$OUT"
rm -f "$OUT/check.log"
source benchmarks/device_env.sh "$OUT/check.log"
run() {  # name, limit, then the model and radius arguments
    local name=$1 limit=$2; shift 2
    local start=$(date +%s)
    timeout "$limit" python3 -m advpnml evaluate --config cifar10 --data cifar10 --data-dir .devdata/cifar10 \
        --samples "$SAMPLES" --device "$DEVICE" --suite autoattack --cascade --batch-size 1000 --checks 100 \
        --attacks "$ATTACKS" --out "$OUT/$name" "$@" 2>&1 | tr '\r' '\n' | grep -v 'it/s\]$' | tee -a "$OUT/check.log"
    echo "$name: wall $(( $(date +%s) - start )) s" | tee -a "$OUT/check.log"
}
# ResNet-4B at its own eps 2/255, lambda scaled as the paper's 0.03/0.031, step sizes scaled alike.
run resnet4b "$LIMIT_S" --checkpoint .devdata/weights/abcrown_cifar10_resnet4b/resnet4b.pth --source abcrown_resnet4b \
    --eps 0.00784313725490196 --lam 0.0075901328273244775 --set PGD.step_size=0.00177 --set Adaptive.step_size=0.00177 \
    --set Adaptive-margin.step_size=0.00177 --set "Joint hypotheses.step_size=0.00076"
# The certified CNN at the paper's eps 8/255 and lambda 0.03.
run convex_small "$LIMIT_S" --checkpoint .devdata/weights/convex_cifar10_small_8px/cifar_small_8px.pth --source convex_small \
    --eps 0.031 --lam 0.03
