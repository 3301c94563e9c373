"""paraisite-bench: plugin-based benchmark of transfer learning for lattice thermal conductivity.

The core knows no model and no dataset: backbones, datasets and transfer strategies are
contributed by plugins through the hooks in :mod:`paraisite_bench.hookspecs`.
"""

import pluggy

__version__ = "0.1.0"

#: Decorator for plugin hook implementations: ``@hookimpl def register_backbones(register): ...``
hookimpl = pluggy.HookimplMarker("paraisite_bench")

__all__ = ["hookimpl", "__version__"]
