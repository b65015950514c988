"""Names shared by the library and the nodes, in a module that imports nothing heavy.

The nodes read these at import time (ComfyUI imports every pack at start-up), so they must not pull in
torch models, diffusers or transformers.
"""

MODEL_FILE_FORMAT = "semanticgen-model"  # the "format" metadata of SemanticGen's own model files
MODEL_FILE_VERSION = 1
SAMPLERS = ("euler", "unipc")
