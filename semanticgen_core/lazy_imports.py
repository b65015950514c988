"""Import one diffusers model module without the package ``__init__`` files that import all its siblings.

``diffusers.models.transformers``, ``.autoencoders``, ``.unets`` and ``.controlnets`` each import every model
class of their kind (together some two hundred modules) before Python reaches the one file SemanticGen
uses (Wan's DiT, Wan's VAE, and the few blocks those import). ``submodule`` imports just those files: each
of these packages that is not imported yet is put in ``sys.modules`` as a ``DeferredPackage``, the package's
own module object with its ``__init__`` not run yet. Its submodules import as usual; the first time anything
asks the package for a name it lacks (``from diffusers.models.transformers import FluxTransformer2DModel``,
``diffusers.models.autoencoders.AutoencoderKL``), its ``__init__`` runs, in that module, as the import would
have run it, and finds the modules loaded already: the classes are the same objects either way. Where a
package is already imported, nothing changes.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types

# diffusers packages whose __init__ imports all their modules eagerly (diffusers itself, diffusers.models,
# diffusers.loaders and diffusers.schedulers import lazily and need no help)
EAGER_PACKAGES = ("diffusers.models.transformers", "diffusers.models.autoencoders", "diffusers.models.unets",
                  "diffusers.models.controlnets")

_LOCK = threading.RLock()


class DeferredPackage(types.ModuleType):
    """A package whose ``__init__`` runs when a name it does not have yet is first asked for."""

    def __getattr__(self, name: str):
        state = self.__dict__.get("_deferred_state")
        if state != "pending":  # running (a submodule asking for a sibling: Python then looks in
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")  # sys.modules) or run
        with _LOCK:
            if self.__dict__.get("_deferred_state") == "pending":
                self._deferred_state = "running"
                try:
                    self.__spec__.loader.exec_module(self)
                finally:
                    self._deferred_state = "done"
        return object.__getattribute__(self, name)


def _defer(name: str) -> None:
    spec = importlib.util.find_spec(name)  # imports the parent packages, not this one
    if spec is None or spec.submodule_search_locations is None or spec.loader is None:
        return
    module = DeferredPackage(name)
    module.__spec__, module.__loader__, module.__package__ = spec, spec.loader, name
    module.__path__, module.__file__ = list(spec.submodule_search_locations), spec.origin
    module._deferred_state = "pending"
    sys.modules[name] = module


def submodule(name: str) -> types.ModuleType:
    """``importlib.import_module(name)``, with the ``__init__`` of those ``EAGER_PACKAGES`` not imported yet
    deferred until something needs it (see the module's docstring)."""
    if name in sys.modules:
        return sys.modules[name]
    with _LOCK:
        for package in EAGER_PACKAGES:
            if package not in sys.modules:
                _defer(package)
        return importlib.import_module(name)
