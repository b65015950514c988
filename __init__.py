"""ComfyUI-SemanticGen: ComfyUI entry point.

ComfyUI imports this file as a package. Importing it must stay cheap (no model loading, no torch work),
so the node modules only define classes; models load when a node runs.

The library has one import name, ``semanticgen_core``, wherever it runs (ComfyUI, the command line, tests,
benchmarks): the pack's folder joins the end of ``sys.path``, behind everything else, so it adds the
library and shadows nothing (ComfyUI's own ``nodes`` module is imported long before any pack).
"""

import os
import sys

_ROOT = os.path.dirname(os.path.abspath(__file__))
if _ROOT not in sys.path:
    sys.path.append(_ROOT)

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402

WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
