"""Make the reference ``imagecorruptions==1.1.2`` importable on this stack, for tests and benchmarks only.

The package was written for numpy 1 / skimage < 0.19 / setuptools' pkg_resources; it does not import on numpy 2,
skimage 0.26 or a Python without pkg_resources. Nothing in site-packages is edited: each incompatibility is patched
in memory before the first import, and only in the process that imports this module.

- ``np.float_`` (gone in numpy 2) -> ``np.float64``: plasma_fractal uses it for its map.
- ``skimage.filters.gaussian(multichannel=True)`` (gone in 0.19) -> ``channel_axis=-1``: the package imports
  ``gaussian`` by name, so the wrapper is installed on ``skimage.filters`` before it is imported.
- ``scipy.ndimage.interpolation`` (deprecated alias) -> ``scipy.ndimage`` when the alias is missing.
- ``pkg_resources.resource_filename`` (setuptools) -> a stub that resolves paths beside the module, used for the frost
  pictures only.
- ``skimage.util.random_noise`` draws from a fresh, unseeded ``default_rng()`` unless given one, so impulse_noise
  ignores ``np.random.seed``; the wrapper passes a Generator seeded from the legacy global state, which makes the
  reference reproducible under ``np.random.seed`` like every other corruption (the maths is unchanged).
"""
from __future__ import annotations

import sys
import types
import warnings
from pathlib import Path

import numpy as np
from scipy import ndimage
import skimage.filters
import skimage.util


def _install() -> None:
    if not hasattr(np, "float_"):
        np.float_ = np.float64

    if not getattr(skimage.filters.gaussian, "_shimmed", False):
        gaussian = skimage.filters.gaussian

        def gaussian_multichannel(image, sigma=1.0, *args, multichannel=None, **kwargs):
            if multichannel is not None:
                kwargs.setdefault("channel_axis", -1 if multichannel else None)
            return gaussian(image, sigma, *args, **kwargs)

        gaussian_multichannel._shimmed = True
        skimage.filters.gaussian = gaussian_multichannel

    if not getattr(skimage.util.random_noise, "_shimmed", False):
        random_noise = skimage.util.random_noise

        def seeded_random_noise(image, mode="gaussian", rng=None, clip=True, **kwargs):
            if rng is None:
                rng = np.random.default_rng(np.random.randint(0, 2**31 - 1))
            return random_noise(image, mode=mode, rng=rng, clip=clip, **kwargs)

        seeded_random_noise._shimmed = True
        skimage.util.random_noise = seeded_random_noise

    if "scipy.ndimage.interpolation" not in sys.modules:
        try:
            import scipy.ndimage.interpolation  # noqa: F401
        except ImportError:
            sys.modules["scipy.ndimage.interpolation"] = ndimage

    if "pkg_resources" not in sys.modules:
        try:
            import pkg_resources  # noqa: F401
        except ImportError:
            stub = types.ModuleType("pkg_resources")

            def resource_filename(module_name: str, resource: str) -> str:
                # like pkg_resources: relative to the directory of the named module (here a plain module)
                directory = Path(sys.modules[module_name].__file__).parent
                return str(directory / resource.removeprefix("./"))

            stub.resource_filename = resource_filename
            sys.modules["pkg_resources"] = stub


_install()

with warnings.catch_warnings():  # its own deprecated scipy import, not ours to fix
    warnings.simplefilter("ignore", DeprecationWarning)
    import imagecorruptions  # noqa: E402  (must follow the patches)
    from imagecorruptions import corruptions as reference_functions  # noqa: E402

__all__ = ["imagecorruptions", "reference_functions", "reference_corrupt"]


def reference_corrupt(image_uint8_hwc: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray:
    """The reference's uint8 HWC output for one image, with numpy's legacy global RNG seeded by ``seed``."""
    np.random.seed(seed)
    return imagecorruptions.corrupt(image_uint8_hwc, corruption_name=name, severity=severity)
