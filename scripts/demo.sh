#!/usr/bin/env bash
# The main job on bundled real data: build the kanji set, meta-train a ProtoNet on its
# background characters, and test it on held-out characters and on Fashion-MNIST.
# Sets up .venv first (idempotent). Outputs go to out/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-env.sh
export MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TOP_PAD_=268435456 MALLOC_TRIM_THRESHOLD_=4294967295
ml=.venv/bin/metalabel
out=out/demo
mkdir -p "$out"

$ml show kanji --split background --grid "$out/kanji-background.png"
$ml show kanji --split evaluation --grid "$out/kanji-evaluation.png"
$ml meta-train --source kanji --algo protonet --ways 5 --shots 1 --train-ways 20 --queries 5 \
    --steps "${DEMO_STEPS:-600}" --val-every 200 --out "$out/kanji-protonet" "$@"
$ml meta-eval --model "$out/kanji-protonet" --source kanji --ways 5 20 --shots 1 5 --json "$out/eval-kanji.json"
if $ml show fashion-mnist:test >/dev/null 2>&1; then
    $ml meta-eval --model "$out/kanji-protonet" --source fashion-mnist:test --ways 5 --shots 1 5 \
        --json "$out/eval-fashion-mnist.json"
fi
echo "grids, checkpoint and results are in $out/"
