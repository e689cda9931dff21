#!/usr/bin/env bash
# The main job on bundled real data:
#  1. build the kanji set (KanjiVG strokes rendered as handwriting) and write sample grids;
#  2. meta-train a ProtoNet on its background alphabets and test it on held-out characters;
#  3. label a pool of 30 kanji characters the model has never seen, from ONE label per class,
#     asking a simulated person 100 questions (part of them a random reference sample that
#     certifies the accepted labels' precision at >= 0.90 with probability 0.95), with
#     generators kept only where they raise held-out accuracy; score the result against the
#     true labels, write the HTML report, export the data set with provenance;
#  4. where Fashion-MNIST is installed, the same from 5 labels per class through a pretrained
#     image encoder (with a class-conditional VAE making new 28x28 images), and the planner's
#     estimate of what certifying more of that pool would cost.
# Sets up .venv first (idempotent). Everything lands in out/demo/.
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
    --steps "${DEMO_STEPS:-600}" --val-every 200 --out "$out/kanji-protonet"
$ml meta-eval --model "$out/kanji-protonet" --source kanji --ways 5 20 --shots 1 --episodes 300 \
    --json "$out/eval-kanji.json"

rm -rf "$out/kanji-project" "$out/kanji-export"
$ml init "$out/kanji-project" --pool kanji:evaluation --source-option max_classes=30 --seed-per-class 1
$ml run "$out/kanji-project" --model "$out/kanji-protonet" --oracle simulated --budget 100 --per-round 25 \
    --target-precision 0.9
$ml evaluate "$out/kanji-project" --model "$out/kanji-protonet" --gold-from-pool
$ml report "$out/kanji-project"
$ml export "$out/kanji-project" --format parquet --out "$out/kanji-export"
$ml status "$out/kanji-project"

if $ml show fashion-mnist:test >/dev/null 2>&1; then
    rm -rf "$out/fashion-project"
    $ml init "$out/fashion-project" --pool fashion-mnist:test --seed-per-class 5
    $ml run "$out/fashion-project" --oracle simulated --budget 100 --target-precision 0.9
    $ml plan "$out/fashion-project" --coverage 0.3 --target-precision 0.9
    $ml evaluate "$out/fashion-project" --gold-from-pool
    $ml report "$out/fashion-project"
fi
echo "grids, checkpoint, projects, reports (PROJECT/report.html) and exports are in $out/"
