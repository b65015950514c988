#!/usr/bin/env bash
# Train every part of the embedded default, in order, and copy the results into semanticgen_core/weights.
# Every step resumes where it stopped (run folders under runs/); budgets are wall-clock minutes per step.
#   VAE_MIN=120 ENC_MIN=22 S2_MIN=30 S1_MIN=20 PV_MIN=10 DEC_MIN=30 DEC33_MIN=75 CLIPS=2000 THREADS=2 bash scripts/train_embedded.sh
# The VAE's decoder steps (batch 32, then 33-frame clips) are meant for a GPU: DEC_DEVICE=cuda DEC_WORKERS=14.
# Stage 2 and the single-stage baseline train side by side, one thread each, for the same minutes from the
# same start (the previous stage-2 DiT, when there is one), so the bench/ comparisons are like for like.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
T=${THREADS:-1}
W=semanticgen_core/weights
python -m semanticgen_world.recipes.train_vae --out runs/vae --threads "$T" --minutes "${VAE_MIN:-120}"
if [ "${ENC_MIN:-22}" != 0 ]; then  # ENC_MIN=0 keeps the encoder (and a cache built with it) as it is
    python -m semanticgen_world.recipes.train_semantic_encoder --out runs/semantic_encoder --minutes "${ENC_MIN:-22}"
fi
VAE=runs/vae/vae.safetensors
cp runs/semantic_encoder/semantic_encoder.safetensors "$W/"
# the cache belongs to this VAE and encoder (and cache version 2: per-step thumbnails for the preview decoder):
# a new pair gets a new folder (the cache also refuses a mismatch)
CACHE=runs/features-v2-$(cat "$VAE" "$W/semantic_encoder.safetensors" | sha256sum | cut -c1-8)
python -m semanticgen_world.cache --out "$CACHE" --vae "$VAE" --encoder "$W/semantic_encoder.safetensors" \
    --clips "${CLIPS:-2000}" --threads "$T"
INIT=()
if [ -f "$W/stage2.safetensors" ] && [ ! -f runs/baseline/checkpoints/latest ]; then
    cp "$W/stage2.safetensors" runs/stage2-start.safetensors
    INIT=(--init runs/stage2-start.safetensors)
fi
TRAIN=(python -m semanticgen_core.trainer)
"${TRAIN[@]}" stage2 --cache "$CACHE" --out runs/stage2 --minutes "${S2_MIN:-30}" --threads 1 --export-dtype float16 &
"${TRAIN[@]}" baseline --cache "$CACHE" --out runs/baseline --minutes "${S2_MIN:-30}" --threads 1 \
    --export-dtype float16 "${INIT[@]}" &
wait %1 && wait %2
cp runs/stage2/stage2.safetensors runs/baseline/baseline.safetensors "$W/"
"${TRAIN[@]}" stage1 --cache "$CACHE" --stage2 "$W/stage2.safetensors" --out runs/stage1 --threads "$T" \
    --minutes "${S1_MIN:-20}" --export-dtype float16
cp runs/stage1/stage1.safetensors "$W/"
# The plan-preview decoder (the editor's thumbnails, the Plan Preview node): draws the compressor's plans as
# 16x16 frames, learnt from the cache's per-step thumbnails; a folder per compressor, as it belongs to one.
PV=runs/preview-$(sha256sum "$W/stage2.safetensors" | cut -c1-8)
"${TRAIN[@]}" preview --cache "$CACHE" --stage2 "$W/stage2.safetensors" --out "$PV" --threads "$T" \
    --minutes "${PV_MIN:-10}" --batch 32 --lr 2e-3 --warmup 100 --export-dtype float16
cp "$PV/preview.safetensors" "$W/"
# The aligner of stage 1's alignment guidance: prompts against the compressor's plans and their time
# reversals (3 min on 2 threads); like the preview decoder, it belongs to one compressor.
AL=runs/aligner-$(sha256sum "$W/stage2.safetensors" | cut -c1-8)
"${TRAIN[@]}" aligner --cache "$CACHE" --stage2 "$W/stage2.safetensors" --out "$AL" --threads "$T" \
    --steps 3000 --decay-steps 1000 --batch 64 --align-group 32 --lr 1e-3 --warmup 100 --export-dtype float16
cp "$AL/aligner.safetensors" "$W/"
# Last, a fresh decoder 20 wide on the frozen encoder (the latents, the cache and the stages stay valid), in
# a folder of its own per joint VAE, so a retrained VAE starts a new decoder run.
DEC=runs/vae-decoder20-$(sha256sum "$VAE" | cut -c1-16)
[ -f "$DEC/vae.safetensors" ] || { mkdir -p "$DEC" && cp "$VAE" "$DEC/"; }
python -m semanticgen_world.recipes.train_vae --out "$DEC" --decoder-only --decoder-base-dim 20 --object-weight 8 \
    --lr "${DEC_LR:-5e-4}" --batch 32 --device "${DEC_DEVICE:-cpu}" --workers "${DEC_WORKERS:-0}" --threads "$T" \
    --minutes "${DEC_MIN:-30}" --export-dtype float16
# Then on whole 4 s clips (33 frames): trained on 17 alone, it drifts in the frames past the 17th.
DEC33=$DEC-33f
[ -f "$DEC33/vae.safetensors" ] || { mkdir -p "$DEC33" && cp "$DEC"/{vae.safetensors,config.json,encoder_frozen_from.json} "$DEC33/"; }
python -m semanticgen_world.recipes.train_vae --out "$DEC33" --frames 33 --batch 2 --lr 1e-4 --object-weight 8 \
    --device "${DEC_DEVICE:-cpu}" --threads "$T" --minutes "${DEC33_MIN:-75}" --export-dtype float16
cp "$DEC33/vae.safetensors" "$W/"
