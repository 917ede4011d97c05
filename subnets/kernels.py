"""``subnets.kernels`` in a source tree: the top-level ``kernels/`` folder, loaded under this name.

A built wheel installs ``kernels/`` as the package ``subnets/kernels/`` (the ``package-dir``
mapping in ``pyproject.toml``), and a package directory takes precedence over this module, so this
file only acts in a checkout or an editable install, where ``subnets/`` is imported from the
source tree: it loads ``kernels/__init__.py`` as ``subnets.kernels`` with ``kernels/`` as its
search path, so ``subnets.kernels.knapsack`` (and ``kernels/mcu`` data via
``importlib.resources``) resolve exactly as in the wheel, with no reinstall.

Example:
    >>> import subnets.kernels.knapsack as k
    >>> k.__name__, callable(k.solve_graph)
    ('subnets.kernels.knapsack', True)

References:
    Python Packaging User Guide, "src layout vs flat layout"; setuptools, "package_dir".
"""

import importlib.util as _util
import os as _os
import sys as _sys

_DIR = _os.path.join(_os.path.dirname(_os.path.dirname(_os.path.abspath(__file__))), "kernels")
_spec = _util.spec_from_file_location(__name__, _os.path.join(_DIR, "__init__.py"),
                                      submodule_search_locations=[_DIR])
if _spec is None or _spec.loader is None:  # pragma: no cover - a broken checkout
    raise ImportError(f"subnets.kernels: no kernels/__init__.py in {_DIR}")
_module = _util.module_from_spec(_spec)
_sys.modules[__name__] = _module
_spec.loader.exec_module(_module)
