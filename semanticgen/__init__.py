"""Headless runner for SemanticGen's ComfyUI workflows: ``python -m semanticgen run|generate|api``.

Runs the same node classes ComfyUI runs, without ComfyUI: see ``runner`` (workflow conversion, validation
and execution) and ``cli`` (the command line).
"""

from .runner import WorkflowError, load_pack, run, to_api, validate

__all__ = ["WorkflowError", "load_pack", "run", "to_api", "validate"]
