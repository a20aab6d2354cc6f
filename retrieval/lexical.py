"""Lexical retrieval: BM25 from bm25s over item texts, with typo tolerance from symspellpy.

Why these two: bm25s is a maintained BM25 whose index is a sparse matrix, so a query is a sum of a few
posting columns (about a millisecond on tens of thousands of items); symspellpy corrects a misspelt token
by symmetric deletes against a dictionary, also in well under a millisecond. The dictionary is the
catalogue's own vocabulary with its token frequencies, so a typo is corrected towards words the shop
actually sells ("hanlel" -> "handle"), never towards general English.

Text is lower-cased and split on letters/digits; English stop words go, the rest is Snowball-stemmed
(PyStemmer, bm25s's own stemmer of choice) so "faucets" finds "faucet". A query token is corrected only
when it is unknown to the catalogue, is long enough to hold a real typo, and carries no digit: numbers,
units and model numbers ("4x9ft", "1/2", "rg8a") are kept as typed, because the nearest catalogue word
to a model number is almost never the one meant.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import bm25s
import numpy as np
import Stemmer
from symspellpy import SymSpell, Verbosity

TOKEN = re.compile(r"[a-z0-9]+")
STOPWORDS = frozenset(bm25s.stopwords.STOPWORDS_EN)
_STEMMER = Stemmer.Stemmer("english")

# bm25s writes its own files in the index folder; these are ours beside them.
ITEM_IDS_FILE = "item_ids.json"
VOCABULARY_FILE = "vocabulary.json"
PARAMS_FILE = "lexical.json"


def words(text: str) -> list[str]:
    """The lower-cased letter/digit runs of a text, stop words kept (the spelling dictionary's unit)."""
    return TOKEN.findall(str(text).lower())


def stems(tokens: Iterable[str]) -> list[str]:
    """Stop words dropped, the rest stemmed: the unit BM25 indexes and scores."""
    kept = [t for t in tokens if t not in STOPWORDS]
    return _STEMMER.stemWords(kept) if kept else []


@dataclass
class Correction:
    """What typo correction did to one query: the tokens in and out, and which were changed."""

    tokens: list[str]
    corrected: list[str]
    changed: dict[str, str] = field(default_factory=dict)


@dataclass
class LexicalIndex:
    """A BM25 index over item texts with a spelling dictionary of the same texts."""

    item_ids: np.ndarray
    bm25: bm25s.BM25
    vocabulary: dict[str, int]  # word -> how many times it occurs in the catalogue
    typo_tolerant: bool = True
    max_edit_distance: int = 2
    min_typo_length: int = 4
    distance_penalty: float = 4.0
    _speller: SymSpell | None = field(default=None, repr=False)

    @classmethod
    def build(
        cls,
        item_ids: Sequence,
        texts: Sequence[str],
        typo_tolerant: bool = True,
        max_edit_distance: int = 2,
        min_typo_length: int = 4,
        distance_penalty: float = 4.0,
        k1: float = 1.2,
        b: float = 0.75,
    ) -> LexicalIndex:
        """Index `texts` (one per item, same order as `item_ids`)."""
        if len(item_ids) != len(texts):
            raise ValueError(f"{len(item_ids)} item ids but {len(texts)} texts")
        tokenised = [words(t) for t in texts]
        stemmed = [stems(t) for t in tokenised]
        # The stems' ids in sorted order: bm25s numbers them in the iteration order of a set of strings,
        # which changes with the process's hash seed, and so would the saved index.
        ids = {stem: i for i, stem in enumerate(sorted({s for doc in stemmed for s in doc}))}
        bm25 = bm25s.BM25(k1=k1, b=b)
        bm25.index(([[ids[s] for s in doc] for doc in stemmed], ids), show_progress=False)
        vocabulary = Counter(t for tokens in tokenised for t in tokens)
        return cls(
            item_ids=np.asarray(item_ids),
            bm25=bm25,
            vocabulary=dict(vocabulary),
            typo_tolerant=typo_tolerant,
            max_edit_distance=max_edit_distance,
            min_typo_length=min_typo_length,
            distance_penalty=distance_penalty,
        )

    @classmethod
    def from_settings(cls, settings, item_ids: Sequence, texts: Sequence[str]) -> LexicalIndex:
        """`build` with the search_* knobs of Settings (BM25 k1/b and the typo-correction knobs)."""
        return cls.build(
            item_ids,
            texts,
            typo_tolerant=settings.search_typo_tolerant,
            max_edit_distance=settings.search_typo_max_edit_distance,
            min_typo_length=settings.search_typo_min_length,
            distance_penalty=settings.search_typo_distance_penalty,
            k1=settings.search_bm25_k1,
            b=settings.search_bm25_b,
        )

    def __len__(self) -> int:
        return len(self.item_ids)

    @property
    def speller(self) -> SymSpell:
        """The symspell dictionary, built on first use (a second or so on a large catalogue)."""
        if self._speller is None:
            speller = SymSpell(max_dictionary_edit_distance=self.max_edit_distance, prefix_length=7)
            for word, count in self.vocabulary.items():
                if not word.isdigit():
                    speller.create_dictionary_entry(word, count)
            self._speller = speller
        return self._speller

    def is_known(self, token: str) -> bool:
        return token in self.vocabulary

    def correct(self, query: str) -> Correction:
        """The query's tokens with each correctable unknown token replaced by symspell's best guess."""
        tokens = words(query)
        corrected, changed = [], {}
        for token in tokens:
            fixed = token
            if (
                self.typo_tolerant
                and token not in self.vocabulary
                and len(token) >= self.min_typo_length
                and not any(c.isdigit() for c in token)
            ):
                distance = 1 if len(token) < 6 else self.max_edit_distance
                found = self.speller.lookup(token, Verbosity.ALL, max_edit_distance=distance)
                if found:
                    # A frequent catalogue word one edit further beats a rare one: "hanlel" is "handle"
                    # (2 edits, 1,500 titles), not the brand "hansel" (1 edit, 1 title).
                    best = max(
                        found,
                        key=lambda s: (np.log(s.count) - self.distance_penalty * s.distance, s.term),
                    )
                    fixed = best.term
                    changed[token] = fixed
            corrected.append(fixed)
        return Correction(tokens, corrected, changed)

    def query_stems(self, query: str) -> list[str]:
        """The stems the query is scored with, after typo correction where it is on."""
        return stems(self.correct(query).corrected)

    def scores(self, query: str) -> np.ndarray:
        """BM25 of every item for the query (zeros when no query token is in the catalogue)."""
        ids = self.bm25.get_tokens_ids(self.query_stems(query))
        if not ids:
            return np.zeros(len(self.item_ids), dtype=np.float32)
        return self.bm25.get_scores_from_ids(ids)

    def search(self, query: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k best items with a positive score, best first: (item_ids, scores)."""
        scores = self.scores(query)
        k = min(k, len(scores))
        if k <= 0:
            return self.item_ids[:0], scores[:0]
        top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        top = top[np.lexsort((top, -scores[top]))]
        top = top[scores[top] > 0]
        return self.item_ids[top], scores[top]

    def save(self, directory: Path) -> Path:
        """Write the index to `directory` (bm25s's files plus item ids, vocabulary and parameters)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.bm25.save(str(directory), show_progress=False)
        (directory / ITEM_IDS_FILE).write_text(json.dumps([str(i) for i in self.item_ids]))
        (directory / VOCABULARY_FILE).write_text(json.dumps(self.vocabulary))
        params = {
            "typo_tolerant": self.typo_tolerant,
            "max_edit_distance": self.max_edit_distance,
            "min_typo_length": self.min_typo_length,
            "distance_penalty": self.distance_penalty,
            "items": len(self.item_ids),
        }
        (directory / PARAMS_FILE).write_text(json.dumps(params, indent=2))
        return directory

    @classmethod
    def load(cls, directory: Path) -> LexicalIndex:
        """Read an index written by `save` (item ids come back as strings)."""
        directory = Path(directory)
        params = json.loads((directory / PARAMS_FILE).read_text())
        bm25 = bm25s.BM25.load(str(directory), show_progress=False, verbosity=0)
        return cls(
            item_ids=np.asarray(json.loads((directory / ITEM_IDS_FILE).read_text())),
            bm25=bm25,
            vocabulary=json.loads((directory / VOCABULARY_FILE).read_text()),
            typo_tolerant=params["typo_tolerant"],
            max_edit_distance=params["max_edit_distance"],
            min_typo_length=params["min_typo_length"],
            distance_penalty=params["distance_penalty"],
        )
