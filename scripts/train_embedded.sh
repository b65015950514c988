#!/usr/bin/env bash
# Train every part of the embedded default, in order, and copy the results into semanticgen_core/weights.
# Every step resumes where it stopped (run folders under runs/); budgets are wall-clock minutes per step.
#   VAE_MIN=120 ENC_MIN=22 S2_MIN=30 S1_MIN=20 CLIPS=2000 THREADS=2 bash scripts/train_embedded.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
T=${THREADS:-1}
W=semanticgen_core/weights
python -m semanticgen_core.recipes.train_vae --out runs/vae --threads "$T" --minutes "${VAE_MIN:-120}"
python -m semanticgen_core.recipes.train_semantic_encoder --out runs/semantic_encoder --minutes "${ENC_MIN:-22}"
cp runs/vae/vae.safetensors runs/semantic_encoder/semantic_encoder.safetensors "$W/"
python -m semanticgen_core.recipes.dataset --cache runs/cache --vae "$W/vae.safetensors" \
    --encoder "$W/semantic_encoder.safetensors" --clips "${CLIPS:-2000}" --threads "$T"
python -m semanticgen_core.recipes.train_stage2 --cache runs/cache --out runs/stage2 --threads "$T" --minutes "${S2_MIN:-30}"
cp runs/stage2/stage2.safetensors "$W/"
python -m semanticgen_core.recipes.train_stage1 --cache runs/cache --stage2 "$W/stage2.safetensors" --out runs/stage1 \
    --threads "$T" --minutes "${S1_MIN:-20}"
cp runs/stage1/stage1.safetensors "$W/"
