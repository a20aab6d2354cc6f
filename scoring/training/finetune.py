"""Fine-tune the BERT encoder as a two-tower retriever, jointly for recommendation and search.

One shared encoder embeds the query side (a user's history text, or a normalised search query) and the
item's text; the loss is in-batch-negatives cross-entropy (MultipleNegativesRanking), so every other
item of the batch is a negative. Each batch mixes the two tasks in fixed proportion
(settings.finetune_search_share of search pairs, the rest recommendation pairs), so one model learns
both jobs and neither task's pair count crowds the other out. In-batch negatives are drawn in proportion
to popularity, which teaches the model to push popular items down; the logQ correction (Yi et al., 2019)
subtracts each item's log sampling probability (over the mixed batch) from its logits to undo that, and
a negative that is the same item as the positive is masked out.

Before training, whole users and queries are held out (about settings.finetune_holdout_pairs pairs per
task, at most a fifth): a stable share by hash (scoring/training/holdout.py), so they were held out on
every night before too. recall@10 of each held-out pair's item among the texts of every item in the pairs
is measured with the zero-shot encoder, with the promoted run's encoder (the model in production) and with
the one trained tonight. Tonight's ships only if its mean over the tasks beats the model it would replace
(the promoted one, else zero-shot) by more than settings.finetune_gate_margin; otherwise that model ships
again, and the metrics' `encoder` record says which and why: the gate pattern, for the encoder. Training
starts from the promoted model (settings.finetune_warm_start), so the encoder keeps learning night after
night within the same step budget. The texts' vectors are kept by text
(scoring/training/text_vectors.py): the base model's in the workspace, as they repeat every night, the
shipped model's in the run folder, where the embed stage reads the item texts' back.

The step budget is bounded by settings. Steps run under bf16 autocast where the hardware multiplies bf16
natively (a CUDA GPU, or a CPU with AMX: 1.6x the steps per second on 2 cores), in fp32 elsewhere
(settings.finetune_bf16); the weights, the loss and the optimizer stay fp32. Embedding on a CPU stays
fp32: a bf16 vector would depend on which other texts share its padded batch far more than an fp32 one.
It reads only Parquet from the run folder, so it can run alone on a GPU host
(`python -m scoring.training.finetune RUN_DIR [--incumbent MODEL_DIR]`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Dense, Normalize
from tqdm import tqdm

from scoring.settings import Settings
from scoring.training.holdout import held_out
from scoring.training.text_vectors import RUN_VECTORS, TextVectors, base_model_cache, encode

SCALE = 20.0  # inverse temperature of the in-batch softmax, as in sentence-transformers' MNRL
RECALL_K = 10
TASKS = ("recommend", "search")  # the `task` values of training pairs; pairs without one recommend


def in_batch_loss(queries: torch.Tensor, positives: torch.Tensor, item_ids: list[str], log_q: torch.Tensor):
    """Symmetric in-batch softmax loss with the logQ correction and same-item negatives masked."""
    scores = SCALE * queries.float() @ positives.float().T
    labels = torch.arange(len(item_ids), device=scores.device)
    codes = torch.as_tensor(pd.factorize(pd.Series(item_ids))[0], device=scores.device)
    same_item = (codes[:, None] == codes[None, :]) & ~torch.eye(
        len(item_ids), dtype=torch.bool, device=scores.device
    )
    scores = scores.masked_fill(same_item, float("-inf"))
    corrected = scores - log_q.to(scores.device)[None, :]
    return (
        torch.nn.functional.cross_entropy(corrected, labels)
        + torch.nn.functional.cross_entropy(scores.T, labels)
    ) / 2


def pick_device(requested: str) -> str:
    if requested != "auto":
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def bf16_native(device: str) -> bool:
    """Whether `device` multiplies bf16 matrices in hardware: a CUDA GPU with bf16, or a CPU with AMX tiles
    (Sapphire Rapids and later). Only there does bf16 autocast make training faster; on other CPUs torch
    emulates bf16 and a step is slower than in fp32."""
    if device.startswith("cuda"):
        return torch.cuda.is_bf16_supported()
    return device == "cpu" and torch.cpu._is_amx_tile_supported()


def load_model(name_or_path: str, device: str, max_seq_length: int) -> SentenceTransformer:
    model = SentenceTransformer(name_or_path, device=device)
    model.max_seq_length = max_seq_length
    return model


def _embed(model: SentenceTransformer, texts: list[str]) -> torch.Tensor:
    features = model.preprocess(texts)
    features = {k: v.to(model.device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}
    return model(features)["sentence_embedding"]


def _tasks(pairs: pd.DataFrame) -> pd.Series:
    """Each pair's task; pairs written before search existed have no column and are recommendation."""
    if "task" not in pairs:
        return pd.Series(TASKS[0], index=pairs.index)
    return pairs["task"].fillna(TASKS[0])


def _holdout_keys(pairs: pd.DataFrame, task: pd.Series) -> pd.Series:
    """What a pair is held out by: its user for a recommendation (the query text where there is none),
    its query for a search. A held-out user's histories, and a held-out query, are never trained on."""
    users = pairs["user_id"] if "user_id" in pairs else pd.Series(pd.NA, index=pairs.index)
    by_user = ("user " + users.astype("string")).fillna("query " + pairs["query"].astype("string"))
    return by_user.where(task == TASKS[0], "query " + pairs["query"].astype("string"))


def _hold_out(pairs: pd.DataFrame, settings: Settings) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Split off each task's held-out pairs: about settings.finetune_holdout_pairs (at most a fifth of the
    task), as a stable share of its keys (scoring/training/holdout.py), so that what tonight holds out
    was held out on every night before and the model in production never trained on it."""
    task = _tasks(pairs)
    keys = _holdout_keys(pairs, task)
    held: dict[str, pd.DataFrame] = {}
    keep = np.ones(len(pairs), dtype=bool)
    for name in TASKS:
        rows = (task == name).to_numpy()
        n = min(settings.finetune_holdout_pairs, int(rows.sum()) // 5)
        if n == 0:
            continue
        out = rows & held_out(keys, n / rows.sum())
        if out.any():
            keep &= ~out
            held[name] = pairs[out]
    return pairs[keep], held


Encoder = Callable[[list[str]], np.ndarray]  # texts -> L2-normalised vectors, one row per text


def encoder_of(model: SentenceTransformer, batch_size: int) -> Encoder:
    """`encode` with one model (encode puts the model in eval mode)."""
    return lambda texts: encode(model, texts, batch_size, "held-out texts")


def recall_at_k(
    encoder: Encoder,
    held: pd.DataFrame,
    catalogue: pd.DataFrame,
    cache: TextVectors,
    k: int = RECALL_K,
) -> float:
    """Share of held-out pairs whose item is among the k catalogue texts closest to the query."""
    texts = [*catalogue["positive"], *held["query"]]  # one cache call: one write of the cache's files
    with torch.no_grad():
        vectors = torch.from_numpy(cache.vectors(texts, encoder))
        items, queries = vectors[: len(catalogue)], vectors[len(catalogue) :]
        top = (queries @ items.T).topk(min(k, len(catalogue)), dim=1).indices.numpy()
    position = pd.Series(np.arange(len(catalogue)), index=catalogue["item_id"].to_numpy())
    target = position.loc[held["item_id"].to_numpy()].to_numpy()
    return float(np.mean([t in row for t, row in zip(target, top, strict=True)]))


def _measure(
    encoder: Encoder, held: dict[str, pd.DataFrame], catalogue: pd.DataFrame, cache: TextVectors
) -> dict[str, float]:
    """recall@k of each task's held-out pairs."""
    return {t: recall_at_k(encoder, h, catalogue, cache) for t, h in held.items()}


def _batch_plan(task: pd.Series, settings: Settings, batch: int) -> dict[str, int]:
    """How many pairs of each task one batch holds: the search share of the batch, when there are both."""
    present = [t for t in TASKS if (task == t).any()]
    if len(present) < 2:
        return {t: batch for t in present}
    search = round(settings.finetune_search_share * batch)
    if 0 < settings.finetune_search_share < 1:
        search = min(batch - 1, max(1, search))  # a share strictly between: both tasks in every batch
    return {t: n for t, n in (("recommend", batch - search), ("search", search)) if n > 0}


def _mean(recalls: dict[str, float]) -> float:
    """One figure for a model: the mean of its tasks' held-out recall@k, each task weighted alike."""
    return float(np.mean(list(recalls.values())))


def _train(
    train: pd.DataFrame,
    settings: Settings,
    parameters: list[torch.nn.Parameter],
    learning_rate: float,
    steps: int,
    batch: int,
    loss_of: Callable[[np.ndarray, torch.Tensor], torch.Tensor],
    log_every: int,
) -> tuple[list[tuple[int, float]], dict[str, int], float]:
    """The loop both modes share: mixed-task batches, the logQ correction, warm-up, clipping.
    `loss_of(rows, log_q)` is one batch's loss. Returns the logged losses, the batch plan and the seconds."""
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / max(1, steps // 10))
    )
    rng = np.random.default_rng(settings.seed)
    task = _tasks(train)
    plan = _batch_plan(task, settings, batch)
    rows_of = {t: np.flatnonzero((task == t).to_numpy()) for t in plan}
    # The chance that a batch slot holds each item, over the mixed batch: the logQ correction's q.
    share = {t: n / sum(plan.values()) for t, n in plan.items()}
    frequency = np.zeros(len(train))
    for t, rows in rows_of.items():
        items = train["item_id"].iloc[rows]
        frequency += share[t] * train["item_id"].map(items.value_counts(normalize=True)).fillna(0).to_numpy()
    losses: list[tuple[int, float]] = []
    start = time.perf_counter()
    for step in tqdm(range(steps), desc="fine-tune", unit="step"):
        idx = np.concatenate(
            [rng.choice(rows_of[t], size=min(n, len(rows_of[t])), replace=False) for t, n in plan.items()]
        )
        loss = loss_of(idx, torch.log(torch.as_tensor(frequency[idx], dtype=torch.float32)))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        scheduler.step()
        if step % log_every == 0 or step == steps - 1:
            losses.append((step, float(loss.detach())))
    return losses, plan, time.perf_counter() - start


def _with_head(model: SentenceTransformer, head: torch.nn.Linear) -> SentenceTransformer:
    """The frozen encoder with the trained head after it, and the vectors normalised again: one
    SentenceTransformer, so every caller (embedding, updates, search, the Spark shards) encodes with it."""
    dense = Dense(
        head.in_features,
        head.out_features,
        activation_function=torch.nn.Identity(),
        init_weight=head.weight.detach().clone(),
        init_bias=head.bias.detach().clone(),
    )
    return SentenceTransformer(modules=[*model, dense, Normalize()], device=str(model.device))


def _head_vectors(head: torch.nn.Linear, vectors: np.ndarray) -> np.ndarray:
    """What `_with_head`'s model gives for texts whose frozen vectors are `vectors` (up to float rounding)."""
    with torch.no_grad():
        out = torch.nn.functional.normalize(head(torch.from_numpy(vectors)), dim=1)
    return np.ascontiguousarray(out.numpy(), dtype=np.float32)


@dataclass
class Trained:
    """One way of fine-tuning, trained tonight: its model, its held-out recall, its vectors of the measured
    texts (the embed stage reads the item texts' back if it ships) and its training record."""

    model: SentenceTransformer
    recall: dict[str, float]
    vectors: TextVectors
    record: dict


def _scratch(out_dir: Path, name: str) -> TextVectors:
    """An empty vectors folder beside the run's own, for one model's measure."""
    vectors = TextVectors(out_dir.parent / f"{RUN_VECTORS}_{name}")
    vectors.clear()
    return vectors


def _record(
    losses: list[tuple[int, float]], plan: dict[str, int], seconds: float, steps: int, batch: int, pairs: int
) -> dict:
    """What a training loop did: its steps, batches, time and loss curve."""
    window = max(1, len(losses) // 4)
    return {
        "steps": steps,
        "batch_size": batch,
        "batch_by_task": plan,
        "pairs_trained_on": pairs,
        "seconds": round(seconds, 2),
        "pairs_per_second": round(steps * batch / seconds, 1) if seconds else None,
        "loss_first": losses[0][1],
        "loss_last": losses[-1][1],
        "loss_first_quarter_mean": float(np.mean([v for _, v in losses[:window]])),
        "loss_last_quarter_mean": float(np.mean([v for _, v in losses[-window:]])),
        "loss_curve": losses,
    }


def _fit_head(
    zero_shot: SentenceTransformer,
    train: pd.DataFrame,
    settings: Settings,
    frozen: TextVectors,
    measured: list[str],
    log_every: int,
) -> tuple[torch.nn.Linear, dict]:
    """Train a linear map (identity at first) on the frozen encoder's vectors of the pairs (at most
    settings.finetune_head_pairs of each task, a seeded sample).
    Every text is embedded once, and once ever (the workspace's cache), so a step costs a matrix product
    and many more pairs are learned from in the CPU time one step of full fine-tuning takes. The held-out
    measure's texts (`measured`) are embedded in the same cache call, so the cache is written once."""
    rng = np.random.default_rng(settings.seed)
    task = _tasks(train).to_numpy()
    keep = [
        rows
        if len(rows) <= settings.finetune_head_pairs
        else rng.choice(rows, settings.finetune_head_pairs, replace=False)
        for rows in (np.flatnonzero(task == t) for t in TASKS)
    ]
    train = train.iloc[np.sort(np.concatenate(keep))].reset_index(drop=True)
    own = [*train["query"], *train["positive"]]
    encoder = encoder_of(zero_shot, settings.embed_batch_size)
    vectors = torch.from_numpy(frozen.vectors([*own, *measured], encoder)[: len(own)])
    queries, positives = vectors[: len(train)], vectors[len(train) :]
    dim = vectors.shape[1]
    head = torch.nn.Linear(dim, dim)
    torch.nn.init.eye_(head.weight)
    torch.nn.init.zeros_(head.bias)
    ids = train["item_id"].to_numpy()

    def loss_of(idx: np.ndarray, log_q: torch.Tensor) -> torch.Tensor:
        q = torch.nn.functional.normalize(head(queries[idx]), dim=1)
        p = torch.nn.functional.normalize(head(positives[idx]), dim=1)
        return in_batch_loss(q, p, ids[idx].tolist(), log_q)

    steps, batch = max(1, settings.finetune_head_steps), settings.finetune_head_batch_size
    losses, plan, seconds = _train(
        train,
        settings,
        list(head.parameters()),
        settings.finetune_head_learning_rate,
        steps,
        batch,
        loss_of,
        log_every,
    )
    return head, _record(losses, plan, seconds, steps, batch, len(train))


def _fit_full(
    model: SentenceTransformer, train: pd.DataFrame, settings: Settings, device: str, log_every: int
) -> dict:
    """Train every weight of `model` for settings.finetune_steps steps, under bf16 autocast where the
    hardware multiplies bf16."""
    steps, batch = max(1, settings.finetune_steps), settings.finetune_batch_size
    use_bf16 = settings.finetune_bf16 == "auto" and bf16_native(device)
    model.train()

    def loss_of(idx: np.ndarray, log_q: torch.Tensor) -> torch.Tensor:
        rows = train.iloc[idx]
        with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=use_bf16):
            queries = _embed(model, rows["query"].tolist())
            positives = _embed(model, rows["positive"].tolist())
            return in_batch_loss(queries, positives, rows["item_id"].tolist(), log_q)

    losses, plan, seconds = _train(
        train, settings, list(model.parameters()), settings.learning_rate, steps, batch, loss_of, log_every
    )
    model.eval()
    return {"bf16": use_bf16, **_record(losses, plan, seconds, steps, batch, len(train))}


def finetune(
    pairs: pd.DataFrame,
    settings: Settings,
    out_dir: Path,
    log_every: int = 5,
    incumbent: Path | None = None,
) -> dict:
    """Fine-tune in each of settings.finetune_mode's ways, then ship the best of them if it beats the
    model it would replace on the held-out pairs: `incumbent` (the promoted run's model folder) where
    there is one, else the zero-shot base model. The shipped checkpoint and the metrics go to `out_dir`.

    `head` trains a linear head on the frozen encoder's cached vectors, on all of a night's pairs (up to
    finetune_head_pairs) in seconds, afresh each night; `full` trains every weight for finetune_steps
    steps, from the incumbent with settings.finetune_warm_start, so it keeps learning night after night.
    Which wins depends on the shop (docs/pipeline.md), so `both` (the default) trains both."""
    torch.manual_seed(settings.seed)
    device = pick_device(settings.device)
    modes = ("head", "full") if settings.finetune_mode == "both" else (settings.finetune_mode,)
    start_from = (
        incumbent if incumbent is not None and settings.finetune_warm_start and "full" in modes else None
    )
    zero_shot = load_model(settings.resolved_model_name, device, settings.max_seq_length)
    catalogue = pairs.drop_duplicates("item_id")[["item_id", "positive"]].reset_index(drop=True)
    train, held = _hold_out(pairs, settings)
    # The base model's vectors, from the workspace's cache: the held-out texts repeat every night, and so
    # do most of the head's training texts.
    base = base_model_cache(
        settings.data_dir / "cache", settings.resolved_model_name, settings.max_seq_length
    )
    base_encoder = encoder_of(zero_shot, settings.embed_batch_size)
    trained: dict[str, Trained] = {}
    if "head" in modes:
        measured = [*catalogue["positive"], *(q for h in held.values() for q in h["query"])]
        linear, record = _fit_head(zero_shot, train, settings, base, measured, log_every)
        vectors = _scratch(out_dir, "head")
        recall = _measure(
            lambda texts: _head_vectors(linear, base.vectors(texts, base_encoder)), held, catalogue, vectors
        )
        trained["head"] = Trained(_with_head(zero_shot, linear), recall, vectors, record)
    before = _measure(base_encoder, held, catalogue, base)
    in_production: dict[str, float] = {}
    production_vectors = _scratch(out_dir, "incumbent")
    if incumbent is not None:
        # The model in production on tonight's held-out pairs, reading the vectors its run already holds.
        if (incumbent.parent / RUN_VECTORS).exists():
            shutil.copytree(incumbent.parent / RUN_VECTORS, production_vectors.folder)
            production_vectors = TextVectors(production_vectors.folder)
        production = load_model(str(incumbent), device, settings.max_seq_length)
        in_production = _measure(
            encoder_of(production, settings.embed_batch_size), held, catalogue, production_vectors
        )
    if "full" in modes:
        # A warm start trains the promoted model just measured: it is not loaded twice.
        model = (
            production
            if start_from is not None
            else load_model(settings.resolved_model_name, device, settings.max_seq_length)
        )
        record = _fit_full(model, train, settings, device, log_every)
        vectors = _scratch(out_dir, "full")
        recall = _measure(encoder_of(model, settings.embed_batch_size), held, catalogue, vectors)
        trained["full"] = Trained(model, recall, vectors, record)
    best = max(trained, key=lambda name: _mean(trained[name].recall) if held else 0.0)
    after = trained[best].recall
    rival, rival_name = (in_production, "promoted") if incumbent is not None else (before, "zero_shot")
    beats = not held or _mean(after) > _mean(rival) + settings.finetune_gate_margin
    out_dir.mkdir(parents=True, exist_ok=True)
    run_vectors = TextVectors(out_dir.parent / RUN_VECTORS)
    run_vectors.clear()
    if beats:
        trained[best].model.save(str(out_dir))
        trained[best].vectors.folder.rename(run_vectors.folder)
    elif incumbent is not None:
        shutil.copytree(incumbent, out_dir, dirs_exist_ok=True)
        if production_vectors.folder.exists():
            production_vectors.folder.rename(run_vectors.folder)
    else:
        zero_shot.save(str(out_dir))
        if base.folder.exists():
            shutil.copytree(base.folder, run_vectors.folder)
    for scratch in [production_vectors, *(t.vectors for t in trained.values())]:
        scratch.clear()
    shipped = "fine_tuned" if beats else rival_name
    records = {name: {k: v for k, v in t.record.items() if k != "loss_curve"} for name, t in trained.items()}
    metrics = {
        "device": device,
        "mode": settings.finetune_mode,
        "best": best,
        **trained[best].record,
        "bf16": trained["full"].record["bf16"] if "full" in trained else False,
        "pairs": len(pairs),
        "pairs_by_task": {t: int(n) for t, n in _tasks(pairs).value_counts().sort_index().items()},
        "trained": records,
        "held_out": {
            t: {
                "pairs": len(held[t]),
                "candidates": len(catalogue),
                f"recall_at_{RECALL_K}_zero_shot": round(before[t], 4),
                **(
                    {f"recall_at_{RECALL_K}_promoted": round(in_production[t], 4)}
                    if incumbent is not None
                    else {}
                ),
                **{f"recall_at_{RECALL_K}_{name}": round(tr.recall[t], 4) for name, tr in trained.items()},
                f"recall_at_{RECALL_K}_fine_tuned": round(after[t], 4),
            }
            for t in held
        },
        "encoder": {
            "shipped": shipped,
            "best_trained": best,
            "started_from": "promoted" if start_from is not None else "zero_shot",
            "promoted_run": incumbent.parent.name if incumbent is not None else None,
            "message": _encoder_message(
                shipped, rival_name, best, after, rival, settings.finetune_gate_margin
            ),
        },
        "base_model": settings.resolved_model_name,
    }
    (out_dir / "finetune_metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def _encoder_message(
    shipped: str, rival_name: str, best: str, after: dict[str, float], rival: dict[str, float], margin: float
) -> str:
    """Which encoder the run ships, and the held-out figures that chose it."""
    label = {"zero_shot": "the zero-shot model", "promoted": "the promoted model"}[rival_name]
    if not after:
        return f"no held-out pairs to judge by: the fine-tuned model ({best}) ships"
    figures = f"mean held-out recall@{RECALL_K} {_mean(after):.4f} fine-tuned ({best})"
    figures += f" vs {_mean(rival):.4f} for {label}"
    if shipped == "fine_tuned":
        return f"the fine-tuned model ships: {figures}"
    return f"{label} stays: the fine-tuned model did not beat it by more than {margin} ({figures})"


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Fine-tune from a run folder's pairs.parquet (GPU host friendly)."
    )
    parser.add_argument("run_dir", type=Path)
    parser.add_argument(
        "--incumbent", type=Path, help="the promoted run's model folder, to start from and to beat"
    )
    args = parser.parse_args()
    pairs = pd.read_parquet(args.run_dir / "pairs.parquet")
    metrics = finetune(pairs, Settings(), args.run_dir / "model", incumbent=args.incumbent)
    print(json.dumps({k: v for k, v in metrics.items() if k != "loss_curve"}))


if __name__ == "__main__":
    main()
