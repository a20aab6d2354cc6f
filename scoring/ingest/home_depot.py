"""The Home Depot adapter: Kaggle's "Home Depot Product Search Relevance" file mapped onto Aisle's contract.

The file (../shared/datasets, read in place from its zip, never copied) holds 74,067 (search term as
typed, product, human grade 1..3) rows. It becomes:

- **items**: one row per product_uid (54,667): item_id = product_uid, title = product_title. The file
  has no category, brand or price, so those optional columns are absent.
- **searches**: one search per distinct search term of the training split (the search log a shop would
  have), anonymous (empty user_id). A grade is the mean of about three raters, so it maps onto the
  action a shopper would most plausibly have taken on that result:

      grade = 3            -> purchase   (every rater: exactly what was asked for)
      2.67 <= grade < 3    -> cart
      2.33 <= grade < 2.67 -> click      (the evaluation's "relevant" threshold)
      grade < 2.33         -> no action

  A search with no product at or above 2.33 is one row with action `none` and no item, as the contract
  says for a search without interaction; a search with actions has one row per acted-on product. The
  file has no time and no ranks: searched_at is synthetic (one search a minute from 2016-01-01, in the
  order of the term's first row in the file) and position is left empty.
- **split**: deterministic, by search term: a term is a test term when the first 8 bytes of the SHA-256
  of its normalised form (lower-cased, whitespace collapsed), read as a fraction of 2^64, fall below the
  test share (20%). Normalising first keeps "Toilet Seat" and "toilet seat" on the same side, so no test
  query is seen in training under another case. A second salted hash splits the training terms again
  (`part_of`) for the evaluation (fine-tuning vs ranker training).
"""

from __future__ import annotations

import hashlib
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from scoring.settings import ROOT

HOME_DEPOT_ZIP = ROOT.parent / "shared" / "datasets" / "home_depot_search_relevance.csv.zip"
MEMBER = "train.csv"
ENCODING = "latin-1"
START = pd.Timestamp("2016-01-01 00:00:00")
# (lowest grade, action), highest first; below the last one a judged product drew no action.
ACTIONS = ((3.0, "purchase"), (2.67, "cart"), (2.33, "click"))
RELEVANT_GRADE = 2.33


def normalise_term(term: str) -> str:
    """The split's key for a term: lower-cased, trimmed, inner whitespace collapsed."""
    return re.sub(r"\s+", " ", str(term).strip().lower())


def hash_fraction(text: str, salt: str = "") -> float:
    """A stable number in [0, 1) from text (SHA-256, first 8 bytes), the same on every machine."""
    digest = hashlib.sha256(f"{salt}{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def is_test_term(term: str, test_share: float) -> bool:
    return hash_fraction(normalise_term(term)) < test_share


def part_of(term: str, share: float, salt: str = "ranker") -> bool:
    """A second, independent split of terms (salted hash): True for about `share` of them."""
    return hash_fraction(normalise_term(term), salt) < share


def action_for(grade: float) -> str:
    """The shopper's action a mean grade maps onto (module docstring); `none` below 2.33."""
    for lowest, action in ACTIONS:
        if grade >= lowest - 1e-9:
            return action
    return "none"


def read_judgments(path: Path = HOME_DEPOT_ZIP) -> pd.DataFrame:
    """Every (search term, product, grade) row, read from the zip in place (latin-1)."""
    if not Path(path).exists():
        raise FileNotFoundError(f"the Home Depot file is not at {path} (it lives in ../shared/datasets)")
    with zipfile.ZipFile(path) as archive, archive.open(MEMBER) as member:
        raw = pd.read_csv(member, encoding=ENCODING, dtype={"product_uid": str, "search_term": str})
    return pd.DataFrame(
        {
            "row_id": raw["id"].astype(int),
            "search_term": raw["search_term"].fillna("").astype(str),
            "item_id": raw["product_uid"].astype(str),
            "title": raw["product_title"].fillna("").astype(str),
            "grade": raw["relevance"].astype(float),
        }
    )


@dataclass
class HomeDepot:
    """The file on the contract: the catalogue, the judgments with their split, the training search log."""

    items: pd.DataFrame  # item_id, title
    judgments: pd.DataFrame  # row_id, search_term, item_id, title, grade, term_key, test
    searches: pd.DataFrame  # the contract's searches table, training terms only
    test_share: float

    @property
    def test(self) -> pd.DataFrame:
        return self.judgments[self.judgments["test"]]

    @property
    def train(self) -> pd.DataFrame:
        return self.judgments[~self.judgments["test"]]

    def split_summary(self) -> dict:
        terms = self.judgments.drop_duplicates("search_term")
        return {
            "rule": "sha256(lower-cased, whitespace-collapsed term)[:8] / 2**64 < test_share",
            "test_share": self.test_share,
            "terms": int(len(terms)),
            "test_terms": int(terms["test"].sum()),
            "train_terms": int((~terms["test"]).sum()),
            "test_judgments": int(self.judgments["test"].sum()),
            "train_judgments": int((~self.judgments["test"]).sum()),
            "items": int(len(self.items)),
        }


def search_log(judgments: pd.DataFrame) -> pd.DataFrame:
    """The contract's searches rows for these judgments (module docstring: one search per term)."""
    frame = judgments.assign(action=judgments["grade"].map(action_for))
    first_row = frame.groupby("search_term", sort=False)["row_id"].transform("min")
    order = first_row.rank(method="dense").astype(int) - 1
    frame = frame.assign(
        search_id=[hashlib.sha256(t.encode()).hexdigest()[:16] for t in frame["search_term"]],
        searched_at=(START + pd.to_timedelta(order, unit="min")).dt.strftime("%Y-%m-%d %H:%M:%S"),
    )
    acted = frame[frame["action"] != "none"]
    silent = frame[~frame["search_term"].isin(set(acted["search_term"]))].drop_duplicates("search_term")
    silent = silent.assign(item_id="", action="none")
    log = pd.concat([acted, silent], ignore_index=True).sort_values(["searched_at", "item_id"], kind="stable")
    return pd.DataFrame(
        {
            "search_id": "hd" + log["search_id"].to_numpy(),
            "user_id": "",
            "query": log["search_term"].to_numpy(),
            "searched_at": log["searched_at"].to_numpy(),
            "item_id": log["item_id"].to_numpy(),
            "action": log["action"].to_numpy(),
            "position": "",
        }
    ).reset_index(drop=True)


def load(path: Path = HOME_DEPOT_ZIP, test_share: float = 0.2) -> HomeDepot:
    """The file mapped onto the contract, with the deterministic split by term."""
    judgments = read_judgments(path)
    keys = judgments["search_term"].map(normalise_term)
    unique = pd.Series(keys.unique())
    test_keys = set(unique[unique.map(lambda k: hash_fraction(k) < test_share)])
    judgments = judgments.assign(term_key=keys, test=keys.isin(test_keys).to_numpy())
    items = (
        judgments.sort_values("row_id")
        .drop_duplicates("item_id")[["item_id", "title"]]
        .sort_values("item_id", key=lambda s: s.astype(np.int64), kind="stable")
        .reset_index(drop=True)
    )
    searches = search_log(judgments[~judgments["test"]])
    return HomeDepot(items=items, judgments=judgments, searches=searches, test_share=test_share)


def write_raw(data: HomeDepot, folder: Path) -> Path:
    """items.parquet and searches.parquet in `folder`: a raw folder dbt's `files`/demo layout reads (no
    events file: the catalogue and the search log are all this source has)."""
    folder.mkdir(parents=True, exist_ok=True)
    data.items.to_parquet(folder / "items.parquet", index=False)
    data.searches.to_parquet(folder / "searches.parquet", index=False)
    return folder
