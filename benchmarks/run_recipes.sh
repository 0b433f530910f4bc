#!/usr/bin/env bash
# Every training run behind docs/results.md, one log each in docs/results/recipes/ (the model files
# beside them are not kept in git). Then `python benchmarks/results_table.py` makes the table.
#
#   bash benchmarks/run_recipes.sh [MNIST_DIR] [WHICH...]     WHICH: quick fast best fashion
#
# Run it on an otherwise idle machine: the times are part of the results.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/data/mnist}
shift || true
which=${*:-quick fast best fashion}
out=docs/results/recipes
mkdir -p "$out"
scratchcnn=${SCRATCHCNN:-.venv/bin/scratchcnn}

run() {  # run NAME ARGS...: one training, its output (tqdm off) in NAME.log
  local name=$1
  shift
  echo "$(date -u +%H:%M:%S) $name"
  "$scratchcnn" train "$@" --out "$out/$name.npz" --quiet > "$out/$name.log" 2>&1
}

for recipe in $which; do
  case $recipe in
    quick | fast)
      for seed in 0 1 2; do run "$recipe-mnist-s$seed" --recipe "$recipe" --seed "$seed" --data-dir "$data"; done ;;
    best)
      for seed in 0 1; do run "best-mnist-s$seed" --recipe best --seed "$seed" --data-dir "$data"; done ;;
    fashion)
      run "fashion-fashion-mnist-s0" --recipe fashion --dataset fashion-mnist --seed 0 ;;
  esac
done
.venv/bin/python benchmarks/results_table.py "$out"
