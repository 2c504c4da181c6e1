#!/usr/bin/env bash
# GPU checks on one CUDA machine, from the repository root, with the stack installed (or on PYTHONPATH):
#   bash benchmarks/gpu.sh bench     # pretrain loop vs raw loop, gpt2-124m, bf16, torch.compile: tokens/s, MFU
#   bash benchmarks/gpu.sh flow      # `lifecycle run --profile gpu`: every stage on the GPU in bf16
#   bash benchmarks/gpu.sh qlora     # the default (tiny) flow with QLoRA SFT (sft.quantization=4bit) and PPO
# Logs and results go to $OUT (default benchmarks/results/gpu/).
set -uo pipefail
PY=${PY:-python3}
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
export PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_UI_ENABLED=false PREFECT_SERVER_UI_ENABLED=false
export TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 GIT_PYTHON_REFRESH=quiet
if [ ! -d .git ]; then  # DVC needs a git repository; a copied working tree has none
  git init -q && mkdir -p .git/info && echo "/.gpu/" >> .git/info/exclude && git add -A &&
    git -c user.email=gpu@localhost -c user.name=gpu commit -qm "working tree" || exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
"$PY" -c "import torch, transformers, trl, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'trl', trl.__version__, 'peft', peft.__version__)" | tee -a "$OUT/device.txt"

keep_results() {  # $1: name; the report card, timings and every metrics file in one archive
  tar -czf "$OUT/$1.tar.gz" reports metrics 2>/dev/null
  cp reports/report.md "$OUT/$1_report.md" 2>/dev/null
}

for part in "$@"; do
  start=$(date +%s)
  case "$part" in
    bench)
      "$PY" -m benchmarks.pretrain --profile gpt2-124m --batch 32 --seq-len 1024 --vocab 50304 --steps 30 \
        --repeats 1 --compile 2>&1 | tail -n 30 | tee "$OUT/bench.log"
      cp benchmarks/results/pretrain_gpu.json "$OUT/" ;;
    flow)
      "$PY" -m pipelines.cli run --profile gpu > "$OUT/flow.log" 2>&1; echo "flow exit $?"
      tail -n 40 "$OUT/flow.log"; keep_results flow ;;
    qlora)
      "$PY" -m pipelines.cli run --set sft.quantization=4bit --set align.method=ppo > "$OUT/qlora.log" 2>&1
      echo "qlora exit $?"; tail -n 40 "$OUT/qlora.log"; keep_results qlora ;;
    *) echo "unknown part '$part' (bench | flow | qlora)"; exit 2 ;;
  esac
  echo "$part: $(( $(date +%s) - start )) s" | tee -a "$OUT/device.txt"
done
