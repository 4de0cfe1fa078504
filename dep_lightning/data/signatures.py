"""Sign-offs planted by the embedded dataset's style groups, read back from any text.

With ``SyntheticConfig.style_groups`` > 0 each user belongs to a group whose sign-off
("-- the Saltmarsh Listening Club") ends most of the group's reviews; some users also sign
personally ("-- Nadia D."). These helpers find them in references or generated outputs, so
a personalization check can measure *signature recall*: how often a method's output for a
user carries that user's own group sign-off rather than another group's.

Matching is case-insensitive (some users write in lower case), tolerates extra spaces and
en / em dashes in place of ``--``, and returns the canonical sign-off of
``synthetic.GROUP_SIGNOFFS``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from dep_lightning.data.synthetic import FIRST_NAMES, GROUP_STYLES

_DASH = r"(?:--|\u2014|\u2013)"


def _words(phrase: str) -> str:
    return r"\s+".join(map(re.escape, phrase.split()))


_GROUP = re.compile(
    _DASH + r"\s*(" + "|".join(_words(signoff.removeprefix("-- ")) for signoff, *_ in GROUP_STYLES) + r")\b",
    re.IGNORECASE)
_OPENER = re.compile("|".join(f"({_words(opener.rstrip('.'))})" for _, opener, *_ in GROUP_STYLES), re.IGNORECASE)
_CANONICAL = {" ".join(signoff.lower().split()[1:]): signoff for signoff, *_ in GROUP_STYLES}
#: A group's own name word ("Saltmarsh", "Juniper"): the first word after "the" in its sign-off.
_NAMES = {signoff.split()[2].lower(): signoff for signoff, *_ in GROUP_STYLES}
_NAME = re.compile(r"\b(" + "|".join(map(re.escape, _NAMES)) + r")\b", re.IGNORECASE)
_PERSONAL = re.compile(_DASH + r"\s*(" + "|".join(FIRST_NAMES) + r")\s+([A-Z])\.", re.IGNORECASE)


def signature_of(text: str, openers: bool = False) -> str | None:
    """The group sign-off in ``text`` (canonical form), the last one if several; else None.

    With ``openers`` a group's opening line ("Saltmarsh report, as promised.") also counts
    as that group's signature (when no sign-off is present), for outputs cut off before
    their end.
    """
    found = list(_GROUP.finditer(text))
    if found:
        return _CANONICAL[" ".join(found[-1].group(1).lower().split())]
    if openers:
        match = _OPENER.search(text)
        if match:
            return GROUP_STYLES[match.lastindex - 1][0]
    return None


def group_name_of(text: str) -> str | None:
    """The group whose name word ("Saltmarsh", "Foxglove") comes first in ``text``, as its
    canonical sign-off; None if no group is named.

    A looser reading than :func:`signature_of`: a short or degenerate output that starts
    "Foxglove: ..." names the Foxglove group without reproducing its opening line or
    sign-off. Whole words only ("Fernhill", not "Fernposte").
    """
    match = _NAME.search(text)
    return _NAMES[match.group(1).lower()] if match else None


def personal_signoff_of(text: str) -> str | None:
    """A personal sign-off ("-- Nadia D.") in ``text``, normalised; the last one if several."""
    found = list(_PERSONAL.finditer(text))
    if not found:
        return None
    first, initial = found[-1].groups()
    return f"-- {first.capitalize()} {initial.upper()}."


def _field(review: Any, name: str) -> Any:
    return review[name] if isinstance(review, Mapping) else getattr(review, name)


def user_signatures(reviews: Iterable[Any]) -> dict[str, str]:
    """Each user's dominant group sign-off over ``reviews`` (e.g. their profile reviews).

    ``reviews`` are :class:`~dep_lightning.data.schema.Review` objects or mappings with
    ``user_id`` and ``text``. Users none of whose reviews carries a group sign-off are left
    out; ties go to the sign-off listed first in ``GROUP_STYLES``.
    """
    counts: dict[str, Counter] = {}
    for review in reviews:
        signature = signature_of(_field(review, "text"))
        if signature is not None:
            counts.setdefault(_field(review, "user_id"), Counter())[signature] += 1
    order = {signoff: k for k, (signoff, *_) in enumerate(GROUP_STYLES)}
    return {user: min(c, key=lambda s: (-c[s], order[s])) for user, c in counts.items()}
