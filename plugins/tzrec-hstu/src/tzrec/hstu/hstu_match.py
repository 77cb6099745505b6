"""HSTUMatch: generative retrieval with an HSTU user tower (registered as ``hstu_match``).

The model itself lands with the HSTUMatch issue; the class is registered now so configs
resolve to this package and ``tzrec plugins`` shows what tzrec-hstu provides.
"""

from typing import Any

from tzrec.core.errors import NotBuiltError


class HSTUMatch:
    """The ``hstu_match`` model (not built yet: constructing it says so)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NotBuiltError(
            "model 'hstu_match' is registered by tzrec-hstu but not built yet (it lands "
            "with the 'HSTUMatch as a plugin' issue)"
        )
