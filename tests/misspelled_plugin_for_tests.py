"""A plugin whose hook implementation misspells its argument (pluggy's PluginValidationError)."""

from paraisite_bench import hookimpl


@hookimpl
def register_backbones(regster):
    pass
