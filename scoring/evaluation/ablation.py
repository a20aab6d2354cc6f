"""What BERT adds to Aisle: the run's retrieval and ranking stages again, without the encoder's
candidates (so without the embedding source and the ranker's embedding features), with the base model's
zero-shot vectors in place of the run's, and with the run's (fine-tuned) vectors, the last two kept
whatever the rank stage's embedding gate would decide. The run as it shipped, gate and all, is the fourth
row.

Each variant is a folder beside the run's stages (RUN/ablation/<variant>/) holding the run's items and
user histories; its stages are the pipeline's own (`embed`, `index`, `candidates`, `rank`), run with the
run's recorded settings and the source knobs the run chose (no tuning again), on the live warehouse and
Feast store of the run's as-of cut. So a variant differs from the run in the encoder's part alone.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from rich.console import Console

from scoring.evaluation.protocol import VIEWS, Split, bootstrap, per_user_metrics
from scoring.pipeline.run_folder import RunFolder
from scoring.pipeline.stages import recorded_knobs, run_stage
from scoring.settings import Settings

console = Console()
# Each variant: the settings it changes and the stages it reruns, in order.
VARIANTS: dict[str, tuple[dict, tuple[str, ...]]] = {
    "without_embeddings": ({"embedding_candidates": "never"}, ("candidates", "rank")),
    "zero_shot_embeddings": ({"embedding_candidates": "always"}, ("embed", "index", "candidates", "rank")),
    "fine_tuned_embeddings": ({"embedding_candidates": "always"}, ("candidates", "rank")),
}
# What a variant starts from: the run's items and user histories, and (for a variant that keeps them) its
# vectors and index.
INPUTS = ("items.parquet", "users.parquet", "users_label.parquet")
VECTORS = ("item_embeddings.npy", "users_embeddings.npy", "users_label_embeddings.npy", "items.faiss")
FINE_TUNED = "fine_tuned_embeddings"  # the row the others are compared with
SHIPPED = "shipped"  # the run itself


def variant_runs(run_dir: Path, settings: Settings) -> dict[str, Path]:
    """Each variant's folder, its stages run (a folder left by an earlier evaluation is replaced)."""
    run = RunFolder.open(run_dir)
    knobs = recorded_knobs(run.manifest["stages"]["candidates"]["source_knobs"])
    tifu = knobs["tifu_knn"]
    fixed = settings.model_copy(
        update={
            "tune_sources": False,
            "ease_lambda": knobs["ease"],
            "repurchase_half_life_days": knobs["decayed_repurchase"],
            "tifu_neighbours": tifu.neighbours,
            "tifu_alpha": tifu.alpha,
            "tifu_r_basket": tifu.r_basket,
            "tifu_r_group": tifu.r_group,
            "tifu_group_size": tifu.group_size,
        }
    )
    folders = {}
    for name, (update, stages) in VARIANTS.items():
        console.rule(f"[bold]ablation: {name}")
        folder = run_dir / "ablation" / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        kept = INPUTS if "embed" in stages else (*INPUTS, *VECTORS)
        for file in kept:
            if run.path(file).exists():
                shutil.copy2(run.path(file), folder / file)
        if "embed" in stages:
            from scoring.training.finetune import load_model

            load_model(settings.resolved_model_name, "cpu", settings.max_seq_length).save(
                str(folder / "model")
            )
        manifest = {
            "run_id": f"{run.run_id}-{name}",
            "status": "ablation",
            "settings": run.manifest["settings"],
            "stages": {"training_pairs": run.manifest["stages"]["training_pairs"]},
        }
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
        variant = RunFolder.open(folder)
        for stage in stages:
            run_stage(fixed.model_copy(update=update), variant, stage)
        folders[name] = folder
    return folders


def report(scores: dict[str, np.ndarray], split: Split, k: int, holdout: dict[str, dict]) -> dict:
    """The ablation table: each row's NDCG@k and Recall@k in every view, and the fine-tuned row's lead
    over it, with a paired 95% bootstrap interval (the same users resampled for both rows); `adds` where
    the interval lies above zero, `costs` where below. `scores` and `holdout` (each row's rank-stage
    holdout record) are keyed by VARIANTS and SHIPPED."""
    rows: dict[str, dict] = {}
    metrics = ("ndcg", "recall")
    per_user = {
        name: {view: per_user_metrics(matrix, split, view, k, metrics) for view in VIEWS}
        for name, matrix in scores.items()
    }
    for name in scores:
        row: dict = {"holdout_ndcg": holdout[name].get("ndcg"), "holdout_auc": holdout[name].get("auc")}
        for view, suffix in VIEWS.items():
            for metric in metrics:
                values = per_user[name][view][metric]
                row[f"{metric}@{k}{suffix}"] = bootstrap(values)
                if name != FINE_TUNED:
                    lead = bootstrap(per_user[FINE_TUNED][view][metric] - values)
                    lead["adds"] = bool(lead["ci_low"] > 0)
                    lead["costs"] = bool(lead["ci_high"] < 0)
                    row[f"fine_tuned_lead_{metric}@{k}{suffix}"] = lead
        rows[name] = row
    return {"rows": rows}
