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

import semanticgen_core  # noqa: E402  (cheap: the package's __init__ imports nothing)

if os.path.dirname(os.path.dirname(os.path.abspath(semanticgen_core.__file__))) != _ROOT:
    import logging

    logging.getLogger(__name__).warning(
        "SemanticGen: semanticgen_core is imported from %s, not from this pack (%s): another installed copy "
        "comes first on sys.path; uninstall it (pip uninstall comfyui-semanticgen) so the nodes run their own.",
        os.path.dirname(semanticgen_core.__file__), _ROOT)

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402

WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
