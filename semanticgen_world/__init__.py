"""The procedural video world the embedded default is trained and judged on, beside the method.

``world`` renders captioned clips from a seed (and writes them out as a folder of videos, so the trainer's
real-video path runs on real files); ``evaluation`` is its independent OpenCV detector and the held-out
evaluation; ``recipes`` train the embedded default's own VAE and semantic encoder, which at real scale are
Wan2.1's and Qwen2.5-VL's frozen models. ``semanticgen_core`` never imports this package.
"""
