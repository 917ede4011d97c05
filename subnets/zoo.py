"""``subnets.zoo``: an alias of :mod:`subnets.models.zoo`, where the zoo now lives.

``subnets.zoo.create``, ``subnets.zoo.NAMES``, ``subnets.zoo.Net`` and the submodules
(``subnets.zoo.common``, ``.kws``, ``.resnet``, ``.vgg``) are the very same objects as under
``subnets.models.zoo``, so ``isinstance`` checks and caches agree whichever name is used.

Example:
    >>> import subnets
    >>> subnets.zoo is subnets.models.zoo
    True

References:
    Python import system: a module may replace its own ``sys.modules`` entry.
"""

import sys

from subnets.models import zoo as _zoo
from subnets.models.zoo import common, kws, resnet, vgg

for _sub in (common, kws, resnet, vgg):
    sys.modules[f"{__name__}.{_sub.__name__.rsplit('.', 1)[1]}"] = _sub
sys.modules[__name__] = _zoo
