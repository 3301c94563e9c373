"""Plugin identity in every key: a plugin's changed code (editable / ``--plugin`` module: its source hash)
or a new version of its distribution retrains its stages and recomputes its features; an unchanged
plugin reuses them."""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import sys

from conftest import SMALL  # noqa: F401  (the small-run conventions live there)

from paraisite_bench.plugins import load_registry

ONE = ["--preset", "quick", "--strategies", "scratch", "--train", "dataset1", "--test", "dataset1",
       "--splits", "1", "--epochs", "1", "--subsample", "dataset1=20", "--no-progress"]

PLUGIN = '''"""A third-party backbone plugin written by the test."""
from paraisite_megnet import MEGNetBackbone

from paraisite_bench import hookimpl

TAG = {tag!r}


class Backbone(MEGNetBackbone):
    name = "{name}"


@hookimpl
def register_backbones(register):
    register(Backbone)
'''


def _write_plugin(root, pkg: str, tag: str):
    (root / pkg).mkdir(parents=True, exist_ok=True)
    (root / pkg / "__init__.py").write_text(PLUGIN.format(tag=tag, name=pkg.replace("_", "")))


def _new_process(pkg: str):
    """What a new command in a new process sees: the plugin imported again, metadata looked up again."""
    for name in [m for m in sys.modules if m == pkg or m.startswith(pkg + ".")]:
        del sys.modules[name]
    importlib.invalidate_caches()


def _run(cli, pkg: str, out) -> str:
    _new_process(pkg)
    code, stdout, err = cli("run", *ONE, "--plugin", pkg, "--backbones", pkg.replace("_", ""),
                            "--out", str(out))
    assert code == 0, err
    return stdout


def _feature_files(cache_dir, pkg: str):
    return sorted((cache_dir / "features").glob(f"{pkg.replace('_', '')}-dataset1-*.pt"))


def test_a_plugin_module_whose_code_changes_retrains_and_refeaturises(cli, tmp_path, monkeypatch, cache_dir):
    pkg = "idplug_edit"
    _write_plugin(tmp_path / "src", pkg, "one")
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    out = tmp_path / "run"
    assert "1 stages trained, 0 reused" in _run(cli, pkg, out)
    assert len(_feature_files(cache_dir, pkg)) == 1
    # unchanged: reused, features from the cache
    assert "0 stages trained, 1 reused" in _run(cli, pkg, out)
    assert len(_feature_files(cache_dir, pkg)) == 1
    # the same version (there is none) but other code: a new key, trained again, featurised again
    _write_plugin(tmp_path / "src", pkg, "two")
    assert "1 stages trained, 0 reused" in _run(cli, pkg, out)
    assert len(_feature_files(cache_dir, pkg)) == 2
    # a file anywhere in the plugin's package counts, not only the module that holds the hooks
    (tmp_path / "src" / pkg / "helpers.py").write_text("SCALE = 2\n")
    assert "1 stages trained, 0 reused" in _run(cli, pkg, out)
    assert "0 stages trained, 1 reused" in _run(cli, pkg, out)


def _install(root, pkg: str, dist: str, version: str):
    """A distribution as pip installs a built wheel: ``<dist>-<version>.dist-info`` next to the package."""
    for old in root.glob(f"{pkg}-*.dist-info"):
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    info = root / f"{pkg}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "top_level.txt").write_text(f"{pkg}\n")
    (info / "RECORD").write_text(f"{pkg}/__init__.py,,\n{info.name}/METADATA,,\n")


def test_a_version_bump_retrains_and_a_wheel_is_keyed_by_its_version(cli, tmp_path, monkeypatch):
    pkg, dist = "idplug_ver", "idplug-ver"
    src = tmp_path / "site"
    _write_plugin(src, pkg, "one")
    _install(src, pkg, dist, "1.0")
    monkeypatch.syspath_prepend(str(src))
    _new_process(pkg)
    assert importlib.metadata.packages_distributions()[pkg] == [dist]  # it really maps
    module = importlib.import_module(pkg)
    ident = load_registry([module], entry_points=False).identity("backbone", pkg.replace("_", ""))
    assert ident == {"plugin": pkg, "distribution": dist, "version": "1.0", "source": None}

    out = tmp_path / "run"
    assert "1 stages trained, 0 reused" in _run(cli, pkg, out)
    assert "0 stages trained, 1 reused" in _run(cli, pkg, out)
    _install(src, pkg, dist, "1.1")
    assert "1 stages trained, 0 reused" in _run(cli, pkg, out)
    assert "0 stages trained, 1 reused" in _run(cli, pkg, out)


def test_built_in_plugins_carry_their_distribution_and_a_source_hash_when_editable():
    reg = load_registry()
    dist = importlib.metadata.distribution("paraisite-bench")
    direct_url = json.loads(dist.read_text("direct_url.json") or "{}")
    editable = direct_url.get("dir_info", {}).get("editable", False)
    for kind, name in [("backbone", "megnet"), ("dataset", "dataset1"), ("strategy", "scratch")]:
        ident = reg.identity(kind, name)
        assert ident["distribution"] == "paraisite-bench" and ident["version"] == dist.version
        assert (ident["source"] is not None) == editable
    # each plugin hashes its own package
    assert reg.identity("backbone", "megnet")["source"] != reg.identity("dataset", "dataset1")["source"] \
        or not editable
