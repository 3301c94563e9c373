"""paraisite-bench: plugin-based benchmark of transfer learning for lattice thermal conductivity.

The core knows no model and no dataset: backbones, datasets and transfer strategies are
contributed by plugins through the hooks in :mod:`paraisite_bench.hookspecs`.
"""

import pluggy

__version__ = "0.1.0"

#: Decorator for plugin hook implementations: ``@hookimpl def register_backbones(register): ...``
hookimpl = pluggy.HookimplMarker("paraisite_bench")


def load_results(*run_dirs):
    """Results of run directories as pandas DataFrames (``.results``, ``.cells``, ``.curves``); see
    :func:`paraisite_bench.notebook.load_results`."""
    from .notebook import load_results as load  # pandas and the store only when called

    return load(*run_dirs)


__all__ = ["hookimpl", "load_results", "__version__"]
