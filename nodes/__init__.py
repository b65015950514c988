"""ComfyUI nodes over semanticgen_core: the only place that knows ComfyUI."""

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
