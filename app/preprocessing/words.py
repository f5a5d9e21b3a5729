"""Text to word tokens: how the words model's corpus was tokenised, and how queries are read."""

from __future__ import annotations

import re

# Letters only (any script), with inner apostrophes kept: "don't", "o'brien".
WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*")


def tokenize(text: str) -> list[str]:
    """Lowercase word tokens; digits and punctuation separate words and are dropped."""
    return WORD.findall(text.lower())
