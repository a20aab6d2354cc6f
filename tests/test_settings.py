from pathlib import Path

from scoring.settings import SHARED_ONLINE_RETAIL, Settings


def test_environment_points_dbt_and_feast_at_one_workspace(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, source="demo", raw_path=None)
    env = settings.environ()
    assert env["AISLE_SOURCE"] == "demo"
    # Readers go through the `live` link, so they follow each build that is swapped in.
    assert env["AISLE_WAREHOUSE"] == str(tmp_path / "live" / "warehouse.duckdb")
    assert env["AISLE_MARTS_DIR"] == str(tmp_path / "live" / "marts")
    assert env["AISLE_DBT_TARGET"] == str(tmp_path / "live" / "target")
    assert env["AISLE_FEAST_REGISTRY"] == str(tmp_path / "live" / "registry.db")
    assert env["AISLE_ONLINE_STORE"] == str(tmp_path / "feast" / "online_store.db")
    assert env["AISLE_RAW_PATH"] == str(tmp_path / "raw" / "demo")
    assert (tmp_path / "feast").is_dir()


def test_a_build_writes_beside_the_live_workspace(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, source="demo", raw_path=None)
    staged = settings.for_build(tmp_path / "builds" / "b1")
    env = staged.environ()
    assert env["AISLE_WAREHOUSE"] == str(tmp_path / "builds" / "b1" / "warehouse.duckdb")
    assert env["AISLE_ONLINE_STORE"] == str(tmp_path / "builds" / "b1" / "online_store.db")
    assert settings.warehouse_path == tmp_path / "live" / "warehouse.duckdb"  # the original is untouched


def test_the_serve_token_never_reaches_a_run_manifest(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, serve_token="s3cret")
    assert settings.serve_token.get_secret_value() == "s3cret"
    assert "s3cret" not in str(settings.model_dump(mode="json"))


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


def test_a_relative_workspace_is_where_the_command_runs(monkeypatch, tmp_path: Path) -> None:
    # Feast reads a relative online-store path against its repo folder: every path must be absolute.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AISLE_DATA_DIR", "nights/data")
    settings = Settings()
    assert settings.data_dir == tmp_path / "nights" / "data"
    run_folder_store = settings.runs_dir / "20261207T000000-1" / "online_store.db"
    assert run_folder_store.is_absolute() and settings.online_store_path.is_absolute()
    assert Settings(search_evaluation_cache_dir="cache").search_evaluation_cache_dir == tmp_path / "cache"


def test_default_model_is_the_bundled_minilm() -> None:
    path = Path(Settings(model_name="").resolved_model_name)
    assert (path / "config.json").exists()
    assert Settings(model_name="bert-base-uncased").resolved_model_name == "bert-base-uncased"
