#!/usr/bin/env bash
# One lease on a lent GPU, as a single prepared command (issues 4 and 6):
#   1. the paper's MNIST recipe (Madry CNN, PGD 40 x 0.01 at eps 0.3, SGD 0.01, batch 50) on full
#      MNIST for as many epochs as TRAIN_MIN minutes allow (resumable: --resume continues it);
#   2. the speed benchmark (advpnml bench) on the GPU;
#   3. the trained model, base vs defense, on the first SAMPLES test images with the paper's attacks
#      and the strong suite's transfer / adaptive APGD (budgets reduced to fit, printed in the report).
# Everything lands in $OUT (results.tar.gz, the checkpoint, session.log).
#
# Before the call, here: `mkdir -p .devdata && cp -r ../shared/data/mnist .devdata/` (and, for the
# torchattacks comparison, `pip download --no-deps -d .whl torchattacks`); both folders git-ignored
# locally (.git/info/exclude) and carried with the call.
#   benchmarks/gpu_session.sh                       # on the GPU machine, MNIST files in .devdata/mnist
#   DEVICE=cpu TRAIN_MIN=0.1 SAMPLES=4 TRAIN_N=100 BENCH_ARGS="--models mnist_cnn --batch 2 --repeats 1" \
#       EVAL_SET="--set Adaptive.steps=2" OUT=/tmp/out benchmarks/gpu_session.sh   # a dry run here
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
DEVICE=${DEVICE:-cuda}
DATA=${DATA:-.devdata/mnist}
TRAIN_MIN=${TRAIN_MIN:-4.5}
TRAIN_N=${TRAIN_N:-}
SAMPLES=${SAMPLES:-1000}
BENCH_S=${BENCH_S:-170}
EVAL_S=${EVAL_S:-110}
BENCH_ARGS=${BENCH_ARGS:-}
EVAL_SET=${EVAL_SET:-}
RUN=${RUN:-/tmp/advpnml-gpu}
OUT=${OUT:?set OUT to the folder that receives the results}
mkdir -p "$RUN" "$OUT"
log="$OUT/session.log"
say() { echo "== $(date -u +%T) $*" | tee -a "$log"; }

say "machine"
source benchmarks/device_env.sh "$log"

say "1. train: paper MNIST recipe, ${TRAIN_MIN} min"
start=$(date +%s)
timeout $(( ${TRAIN_MIN%.*} * 60 + 120 )) python3 -m advpnml train --config mnist --data-dir "$DATA" --device "$DEVICE" \
    --out "$RUN/train" --time-limit "$TRAIN_MIN" ${TRAIN_N:+--samples $TRAIN_N} 2>&1 | tr '\r' '\n' | grep -v 'it/s' | tee -a "$log"
say "train wall $(( $(date +%s) - start )) s"
# The weights and metadata without the optimizer state (half the size: fits the 16 MiB a file that comes back).
python3 -c "import sys, advpnml; m, meta = advpnml.load_checkpoint(sys.argv[1]); advpnml.save_checkpoint(sys.argv[2], m, \
    dataset=meta['dataset'], training=meta['training'], eps=meta['eps'])" "$RUN/train/last.pt" "$OUT/mnist_madry_pgd.pt" 2>&1 | tee -a "$log"

say "2. bench"
timeout "$BENCH_S" python3 -m advpnml bench --device "$DEVICE" --out "$RUN/bench_gpu.json" $BENCH_ARGS 2>&1 | tee -a "$log"

say "3. evaluate the trained model"
start=$(date +%s)
timeout "$EVAL_S" python3 -m advpnml reproduce table1 --dataset mnist --checkpoint "$RUN/train/last.pt" --data-dir "$DATA" \
    --device "$DEVICE" --samples "$SAMPLES" --suite strong --out "$RUN/eval" --checks 100 \
    --attacks "FGSM,PGD,Adaptive,Adaptive-margin,APGD-CE,APGD-T,APGD-T adaptive,Joint hypotheses" \
    --set PGD.restarts=2 --set Adaptive.restarts=1 --set Adaptive-margin.restarts=1 --set Adaptive.steps=100 \
    --set Adaptive-margin.steps=100 --set "APGD-T.n_targets=3" --set "APGD-T adaptive.n_targets=3" $EVAL_SET 2>&1 \
    | tr '\r' '\n' | grep -v 'it/s' | tee -a "$log"
say "evaluate wall $(( $(date +%s) - start )) s"
tar -czf "$OUT/results.tar.gz" -C "$RUN" --exclude='*.pt' . 2>>"$log"
say "done"
