#!/usr/bin/env bash
# Rebuild the shipped demo from nothing on a CPU: the synthetic set, the VAE, the seeded helper stand-ins, the
# DiTalker, the benchmark's probes, then ditalker_core/demo/ and the benchmark figures. Every stage resumes where
# it stopped (rerun the script after an interruption). Stages: data vae helpers dit probes assets bench.
#   bash scripts/train_demo.sh [STAGE ...]     (default: all, in order)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
DATA=${DATA:-data/synthetic}
OUT=${OUT:-output}
stages=${*:-data vae helpers dit probes assets bench}

for stage in $stages; do
  case $stage in
    data)  # two shards side by side, one thread each; the one that finishes last writes metadata.json
      for k in 0 1; do OMP_NUM_THREADS=1 $PY -m training.synthetic "$DATA" --clips 1600 --shard "$k/2" & done
      wait
      $PY -c "from pathlib import Path; from training.synthetic.__main__ import write_metadata as w; w(Path('$DATA'))" ;;
    vae)  # 4 latent channels first, then widened to 16 (the function kept) and trained on, then a lower lr
      $PY -m training.train_vae --metadata "$DATA/metadata.json" --out "$OUT/demo_vae_narrow" --config demo_narrow \
        --steps 4250
      $PY -m training.train_vae --metadata "$DATA/metadata.json" --out "$OUT/demo_vae" --steps 500 \
        --init "$OUT/demo_vae_narrow"
      $PY -m training.train_vae --metadata "$DATA/metadata.json" --out "$OUT/demo_vae" --steps 800 --lr 1e-4 ;;
    helpers)
      $PY -m training.tiny "$OUT/demo_helpers" ;;
    dit)
      # What the shipped model went through: 2,600 steps with log-normal timesteps (too few high-noise steps: it
      # could not start a sample from noise, and its scale adapter had closed the audio and style gates), then
      # uniform timesteps from those weights with a fresh scale adapter. From nothing, the second run alone
      # (model.init=null, model.reinit=[]) is the recipe. T5 and CLIP: the shipped stand-ins (training.tiny's).
      common=(--config training/configs/demo.yaml data.metadata="$DATA/metadata.json" models.vae="$OUT/demo_vae"
        models.dinov2="$OUT/demo_helpers/dinov2" models.text_encoder=ditalker_core/demo/models/text_encoders/ditalker_demo_t5
        models.image_encoder=ditalker_core/demo/models/clip_vision/ditalker_demo_clip)
      $PY training/train.py "${common[@]}" output_dir="$OUT/ditalker_demo" diffusion.timestep_sampling=lognorm \
        train.max_steps=2600
      $PY training/train.py "${common[@]}" output_dir="$OUT/ditalker_demo_uniform" \
        model.init="$OUT/ditalker_demo/transformer_ema.safetensors" 'model.reinit=[scale_adapter]' \
        train.max_steps=${DIT_STEPS:-4400} ;;   # the shipped model stopped at 4,400 (session time)
    probes)
      $PY bench/talking/probes.py --out bench/talking/probes.safetensors ;;
    assets)
      $PY -m training.demo_assets --transformer "$OUT/ditalker_demo_uniform/transformer_ema.safetensors" \
        --vae "$OUT/demo_vae" --helpers "$OUT/demo_helpers" ;;
    bench)
      $PY -m ditalker_core.demo && cp output/demo/strip.png bench/figures/demo_strip.png   # the README's still
      $PY bench/adherence.py --cases 7 --steps 10 --long-sentences 14 --out "$OUT/adherence" | tee "$OUT/adherence.json" ;;
    *) echo "unknown stage $stage (data vae helpers dit probes assets bench)" >&2; exit 2 ;;
  esac
done
