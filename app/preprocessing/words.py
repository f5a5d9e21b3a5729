"""Text to word tokens: how the words model's corpus was tokenised, and how queries are read."""

from __future__ import annotations

import re
import unicodedata

# Letters only (any script), with inner apostrophes kept: "don't", "o'brien".
WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*")


def tokenize(text: str) -> list[str]:
    """Lowercase word tokens; digits and punctuation separate words and are dropped.

    Lowercasing the Turkish dotted capital gives "i" plus a combining dot ("İstanbul" would split
    into "i", "stanbul"), so that dot is dropped; composing (NFC) keeps a decomposed accent inside
    its letter ("cafe" + U+0301 is "café", one word)."""
    return WORD.findall(unicodedata.normalize("NFC", text.lower().replace("i\u0307", "i")))
