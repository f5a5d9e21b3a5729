"""Text to word tokens: how the words model's corpus was tokenised, and how queries are read."""

from __future__ import annotations

import re
import unicodedata

# A phone's apostrophe (U+2019), the modifier letter apostrophe and the opening quote read as "'".
APOSTROPHES = str.maketrans(dict.fromkeys("\u2019\u02bc\u2018", "'"))


def combining_marks(planes: tuple[int, ...]) -> str:
    """Every combining mark (categories Mn, Mc, Me) as ranges for a regex class: `re` has no \\p{M}."""
    marks = [code for plane in planes for code in range(plane << 16, (plane + 1) << 16)
             if unicodedata.category(chr(code))[0] == "M"]
    ranges: list[list[int]] = []
    for code in marks:
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    return "".join(chr(first) if first == last else f"{chr(first)}-{chr(last)}" for first, last in ranges)


# A combining mark. Marks lie in planes 0 (the BMP), 1 and 14 only: scanning those, not all 17,
# imports in about 25 ms instead of 100. `re` tests a class's ranges beyond the BMP one by one for
# every character its BMP bitmap refuses, so those marks sit behind a one-range check (tokenising
# the corpus then costs 10 % more than without marks, not 55 %).
MARK = rf"(?:[{combining_marks((0,))}]|(?=[^\x00-\uffff])[{combining_marks((1, 14))}])"
# A letter (any script) followed by letters and combining marks: "हिन्दी", "كَتَبَ" are one word each
# (`re`'s \w has no marks).
LETTERS = rf"[^\W\d_]+(?:{MARK}+[^\W\d_]*)*"
# With inner apostrophes kept: "don't", "o'brien".
WORD = re.compile(rf"{LETTERS}(?:'{LETTERS})*")


def tokenize(text: str) -> list[str]:
    """Lowercase word tokens; digits and punctuation separate words and are dropped.

    Lowercasing the Turkish dotted capital gives "i" plus a combining dot ("İstanbul" would read
    "i̇stanbul", not the corpus's "istanbul"), so that dot is dropped; composing (NFC) turns a
    decomposed accent into its letter ("cafe" + U+0301 is "café"); a mark with no composed form
    stays in its word ("q" + U+0301 is not "q"). Curly apostrophes are the ASCII one ("don’t")."""
    text = text.lower().replace("i\u0307", "i").translate(APOSTROPHES)
    return WORD.findall(unicodedata.normalize("NFC", text))
