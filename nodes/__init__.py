"""SemanticGen's ComfyUI nodes: thin calls into ``semanticgen_core``, one small module per family.

Every node uses ComfyUI's legacy class API, which needs nothing from ComfyUI at import time, so the same
classes run inside ComfyUI, in the headless runner (``python -m semanticgen``) and in tests. Only
``comfy.py`` knows ComfyUI. Importing this package is cheap: the library (torch models, diffusers,
transformers) is imported when a node first runs.

Custom wire types: SEMANTICGEN_TEXT_ENCODER, SEMANTICGEN_STAGE1, SEMANTICGEN_STAGE2, SEMANTICGEN_VAE,
SEMANTICGEN_ENCODER, SEMANTICGEN_ALIGNER (models), SEMANTICGEN_CONDITIONING (text embeddings), SEMANTIC_PLAN. Frames are core
IMAGE ``[T, H, W, 3]`` in 0..1 and latents core LATENT ``{"samples": [B, 16, T', H/8, W/8]}`` (raw, as core).
"""

from . import comfy
from .decode import SemanticGenDecodeToVideo, SemanticGenVAEDecode
from .edit import SemanticGenEditPlan, SemanticGenPlanPreview, register_routes
from .loaders import (SemanticGenAlignerLoader, SemanticGenSemanticEncoderLoader, SemanticGenStage1Loader,
                      SemanticGenStage2Loader, SemanticGenTextEncoderLoader, SemanticGenVAELoader)
from .plans import SemanticGenLoadPlan, SemanticGenSavePlan, SemanticGenSemanticEncode
from .sampling import SemanticGenBestOfN, SemanticGenStage1Sample, SemanticGenStage2Sample
from .text import SemanticGenTextEncode
from .video import SemanticGenLoadVideo, SemanticGenSaveVideo

comfy.register_model_folder()  # models/semanticgen (does nothing outside ComfyUI)
register_routes()  # the plan editor's preview route (does nothing outside ComfyUI)

_NODES = {
    # id: (class, display name)
    "SemanticGenTextEncoderLoader": (SemanticGenTextEncoderLoader, "SemanticGen Load Text Encoder"),
    "SemanticGenStage1Loader": (SemanticGenStage1Loader, "SemanticGen Load Stage 1 (planner)"),
    "SemanticGenStage2Loader": (SemanticGenStage2Loader, "SemanticGen Load Stage 2 (renderer)"),
    "SemanticGenVAELoader": (SemanticGenVAELoader, "SemanticGen Load VAE"),
    "SemanticGenSemanticEncoderLoader": (SemanticGenSemanticEncoderLoader, "SemanticGen Load Semantic Encoder"),
    "SemanticGenAlignerLoader": (SemanticGenAlignerLoader, "SemanticGen Load Aligner"),
    "SemanticGenTextEncode": (SemanticGenTextEncode, "SemanticGen Text Encode"),
    "SemanticGenStage1Sample": (SemanticGenStage1Sample, "SemanticGen Stage 1: Plan from Text"),
    "SemanticGenStage2Sample": (SemanticGenStage2Sample, "SemanticGen Stage 2: Render Plan"),
    "SemanticGenBestOfN": (SemanticGenBestOfN, "SemanticGen Best of N Videos"),
    "SemanticGenVAEDecode": (SemanticGenVAEDecode, "SemanticGen VAE Decode (chunked)"),
    "SemanticGenDecodeToVideo": (SemanticGenDecodeToVideo, "SemanticGen VAE Decode to Video"),
    "SemanticGenSemanticEncode": (SemanticGenSemanticEncode, "SemanticGen Plan from Video"),
    "SemanticGenSavePlan": (SemanticGenSavePlan, "SemanticGen Save Plan"),
    "SemanticGenLoadPlan": (SemanticGenLoadPlan, "SemanticGen Load Plan"),
    "SemanticGenEditPlan": (SemanticGenEditPlan, "SemanticGen Edit Plan"),
    "SemanticGenPlanPreview": (SemanticGenPlanPreview, "SemanticGen Plan Preview"),
    "SemanticGenLoadVideo": (SemanticGenLoadVideo, "SemanticGen Load Video"),
    "SemanticGenSaveVideo": (SemanticGenSaveVideo, "SemanticGen Save Video (mp4)"),
}

NODE_CLASS_MAPPINGS = {key: cls for key, (cls, _) in _NODES.items()}
NODE_DISPLAY_NAME_MAPPINGS = {key: name for key, (_, name) in _NODES.items()}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
