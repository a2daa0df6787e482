"""Put ``mamba_hubert`` into ``s3prl.hub``, where s3prl and ESPnet look upstreams up.

Importing ``s3prl.hub`` imports every upstream s3prl ships (over ten seconds), so it is not
imported here: if it already is, the entry is added now; otherwise a meta-path finder adds
it right after ``s3prl.hub`` is first imported, by whoever imports it.
"""

import importlib.abc
import importlib.machinery
import sys

from s3prl_upstream.hubconf import mamba_hubert

UPSTREAM_NAME = "mamba_hubert"
HUB_MODULE = "s3prl.hub"


class _RegisteringLoader(importlib.abc.Loader):
    """Runs the real loader of s3prl.hub, then adds the entry."""

    def __init__(self, loader: importlib.abc.Loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        setattr(module, UPSTREAM_NAME, mamba_hubert)


class _HubFinder(importlib.abc.MetaPathFinder):
    """Finds s3prl.hub as the path finder would, with the registering loader."""

    def find_spec(self, fullname, path, target=None):
        if fullname != HUB_MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is not None and spec.loader is not None:
            spec.loader = _RegisteringLoader(spec.loader)
        return spec


def register() -> None:
    """Make ``s3prl.hub.mamba_hubert`` available, now or when s3prl.hub is imported."""
    if HUB_MODULE in sys.modules:
        setattr(sys.modules[HUB_MODULE], UPSTREAM_NAME, mamba_hubert)
    elif not any(isinstance(finder, _HubFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _HubFinder())
