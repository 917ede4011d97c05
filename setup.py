"""Package list for setuptools: ``subnets*`` plus the top-level ``kernels/`` as ``subnets.kernels``.

Everything else is declared in ``pyproject.toml`` (its ``package-dir`` maps ``subnets.kernels`` to
``kernels/``). ``find_packages`` cannot add a prefix to the packages it finds under another
folder, hence this file.
"""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["subnets", "subnets.*"]), "subnets.kernels",
                *(f"subnets.kernels.{p}" for p in find_packages("kernels"))])
