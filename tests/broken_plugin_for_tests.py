"""A plugin whose hook raises: it must be reported, not crash the tool."""

from paraisite_bench import hookimpl


@hookimpl
def register_backbones(register):
    raise ImportError("needs a library that is not installed")
