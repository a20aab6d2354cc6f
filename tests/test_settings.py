from pathlib import Path

from scoring.settings import SHARED_ONLINE_RETAIL, Settings


def test_environment_points_dbt_and_feast_at_one_workspace(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, source="demo", raw_path=None)
    env = settings.environ()
    assert env["AISLE_SOURCE"] == "demo"
    assert env["AISLE_WAREHOUSE"] == str(tmp_path / "warehouse.duckdb")
    assert env["AISLE_MARTS_DIR"] == str(tmp_path / "marts")
    assert env["AISLE_FEAST_DIR"] == str(tmp_path / "feast")
    assert env["AISLE_RAW_PATH"] == str(tmp_path / "raw" / "demo")
    assert (tmp_path / "marts").is_dir() and (tmp_path / "feast").is_dir()


def test_each_source_has_its_default_raw_path(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path, source="online_retail", raw_path=None).resolved_raw_path == (
        SHARED_ONLINE_RETAIL
    )
    custom = tmp_path / "mine"
    assert Settings(data_dir=tmp_path, source="files", raw_path=custom).resolved_raw_path == custom


def test_settings_read_the_environment(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AISLE_TOP_N", "7")
    monkeypatch.setenv("AISLE_SOURCE", "files")
    monkeypatch.setenv("AISLE_RAW_FORMAT", "csv")
    settings = Settings(data_dir=tmp_path)
    assert (settings.top_n, settings.source, settings.raw_format) == (7, "files", "csv")
    assert settings.environ()["AISLE_RAW_FORMAT"] == "csv"


def test_default_model_is_the_bundled_minilm() -> None:
    path = Path(Settings(model_name="").resolved_model_name)
    assert (path / "config.json").exists()
    assert Settings(model_name="bert-base-uncased").resolved_model_name == "bert-base-uncased"
