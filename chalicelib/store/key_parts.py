"""User-controlled strings inside table keys, made collision-free.

A key such as `IDEM#<owner>#<key>` or the statistics scope `owner:<sub>|type:<type>` joins
several strings with separators. When a component may itself contain a separator (a JWT
`sub` may hold `#` or `|`), two different tuples can spell the same key: `("alice",
"k123#1")` and `("alice#k123", "1")`. `part(value)` percent-encodes `%` and the separators
the layouts use, so a component never contains a separator and the encoding is injective:
different values always give different components.
"""

from __future__ import annotations

import re
from typing import Final

#: `%` first in meaning: escaping it is what makes the encoding reversible
_ESCAPES: Final = str.maketrans({"%": "%25", "#": "%23", "|": "%7C"})


def part(value: str) -> str:
    """`value` as one component of a key: no `#` or `|` left in it, and reversible."""
    return value.translate(_ESCAPES)


_UNESCAPES: Final = {"%25": "%", "%23": "#", "%7C": "|"}
_ESCAPED: Final = re.compile("%25|%23|%7C")


def whole(component: str) -> str:
    """The value `part` made `component` of (its inverse)."""
    return _ESCAPED.sub(lambda found: _UNESCAPES[found.group(0)], component)
