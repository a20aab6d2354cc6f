from pathlib import Path

import pandas as pd
import pytest

from scoring import raw_contract
from tests.conftest import tiny_settings


def _write(folder: Path, drop: str | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for table, columns in raw_contract.CONTRACT.items():
        frame = pd.DataFrame({c: ["x"] for c in columns if not (table == "events" and c == drop)})
        frame.to_csv(folder / f"{table}.csv", index=False)


def test_a_complete_folder_passes(tmp_path: Path) -> None:
    _write(tmp_path / "raw")
    raw_contract.check(tiny_settings(tmp_path, source="files", raw_path=tmp_path / "raw", raw_format="csv"))


def test_a_missing_column_names_the_file_the_column_and_the_rule(tmp_path: Path) -> None:
    _write(tmp_path / "raw", drop="unit_price")
    settings = tiny_settings(tmp_path, source="files", raw_path=tmp_path / "raw", raw_format="csv")
    with pytest.raises(raw_contract.RawContractError) as error:
        raw_contract.check(settings)
    message = str(error.value)
    assert "events.csv" in message and "unit_price" in message and "canonical contract" in message


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    settings = tiny_settings(tmp_path, source="files", raw_path=tmp_path / "nowhere", raw_format="parquet")
    with pytest.raises(raw_contract.RawContractError, match="events.parquet: file is missing"):
        raw_contract.check(settings)


def test_the_online_retail_file_passes(online_retail_path: Path, tmp_path: Path) -> None:
    raw_contract.check(tiny_settings(tmp_path, source="online_retail", raw_path=online_retail_path))
