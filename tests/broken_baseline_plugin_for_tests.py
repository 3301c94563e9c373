"""A baseline plugin whose hook raises: it must be listed as broken, and the other baselines still load."""

from paraisite_bench import hookimpl


@hookimpl
def register_baselines(register):
    raise ImportError("needs a baseline library that is not installed")
