"""SemanticGen: video generation in semantic space, as a pure-torch library.

Data flows one way: text/video -> semantic plan -> VAE latents -> frames. Each arrow lives in one
module: ``semantic_encoder`` + ``compressor`` (video -> plan), ``semantic_dit`` (text -> plan, stage 1),
``latent_dit`` (plan -> latents, stage 2), ``vae`` (latents -> frames); ``pipeline`` wires them.
This package never imports ComfyUI.
"""
