"""Backbones for the failure tests, loaded with ``--plugin featurise_plugin_for_tests``: one whose featuriser
has a bug until ``$PB_FEATURISER_FIXED`` is set (a plugin failure, never cached), one that rejects one record
with a RecordError (bad data: a skipped record), and one with a long name whose model never builds."""

from __future__ import annotations

import os

from paraisite_megnet import MEGNetBackbone

from paraisite_bench import hookimpl
from paraisite_bench.errors import RecordError


class BuggyFeaturiser(MEGNetBackbone):
    name = "buggyfeat"

    def featurise(self, record):
        if not os.environ.get("PB_FEATURISER_FIXED"):
            raise RuntimeError("featuriser bug: index out of range")
        return super().featurise(record)


class PickyFeaturiser(MEGNetBackbone):
    name = "pickyfeat"

    def featurise(self, record):
        if record.id == os.environ.get("PB_REJECT_RECORD"):
            raise RecordError("dataset1", record.id, "this backbone rejects it", "fix or remove this record")
        return super().featurise(record)


class NeverBuilds(MEGNetBackbone):
    name = "neverbuilds-longname"

    def build(self):
        raise RuntimeError("this backbone always fails to build")


@hookimpl
def register_backbones(register):
    register(BuggyFeaturiser)
    register(PickyFeaturiser)
    register(NeverBuilds)
