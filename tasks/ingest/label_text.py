"""Checks the text of a label (a class folder's name, a label table's cell); reads and writes nothing.

A label travels into file names, CSV and JSON reports, plots and the model's label list: a newline or another
control character in one breaks them later (train's augmentation preview crashed on one, run after run), so
ingest refuses such a label where it meets it, naming the folder or the table's row.
"""

from __future__ import annotations

import unicodedata

# Unicode categories refused in a label: controls (C0, DEL, C1: newline, tab, escape...), format characters
# (bidirectional overrides that make text read backwards, zero-width spaces), line and paragraph separators, and
# lone surrogates. The zero-width (non-)joiners are part of real words and emoji, and are kept.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
_KEPT = frozenset({"\u200c", "\u200d"})


def control_character(label: str) -> str:
    """"" for a label fit to use; else which character is wrong and where, e.g. "U+000A (a control character)
    at position 4" (the label itself is never repeated: it may come from a private table)."""
    for position, character in enumerate(label, start=1):
        category = unicodedata.category(character)
        if category in _REFUSED_CATEGORIES and character not in _KEPT:
            kind = "a control character" if category == "Cc" else "an invisible formatting character"
            return f"U+{ord(character):04X} ({kind}) at position {position}"
    return ""


