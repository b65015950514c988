"""ComfyUI-SemanticGen: ComfyUI entry point.

ComfyUI imports this file as a package. Importing it must stay cheap (no model loading, no torch work),
so the node modules only define classes; models load when a node runs.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
