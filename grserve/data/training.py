"""Next-SID training of a GR model: item text → MiniLM embeddings (with collaborative dimensions from the
training sequences appended, with `collab_weight`) → residual k-means SIDs → a decoder-only transformer
trained with next-token cross-entropy on users' SID sequences. The model directory keeps the k-means
centroids and the encoder's name (`codebooks.safetensors`).

A training row is `<bos>` + the SID tokens of up to `max_history_items + 1` consecutive items of a
user's training sequence; every position predicts the next token, so one row teaches the model each
item of the window given the items before it (the same prompt shape as serving)."""
from __future__ import annotations

import contextlib
import copy
import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from grserve.bench.machine import machine_info
from grserve.bundle import GRBundle, GRSettings
from grserve.data.collaborative import collaborative_embeddings
from grserve.data.dataset import SequenceDataset
from grserve.data.embeddings import ENCODER, embed_texts
from grserve.data.evaluation import evaluate, round_metrics
from grserve.data.split import leave_one_out
from grserve.engine.config import setting
from grserve.items.codebooks import FILE_NAME as CODEBOOKS_FILE
from grserve.items.codebooks import Codebooks
from grserve.items.item_table import ItemTable
from grserve.items.semantic_ids import centroids_from_codes, residual_kmeans_fit
from grserve.items.trie import SIDTrie
from grserve.items.vocab import BOS, EOS, PAD, GRVocab
from grserve.model.config import ModelConfig
from grserve.model.precision import check_dtype, native_bf16
from grserve.model.transformer import Transformer
from grserve.recommender import Recommender


@dataclass
class TrainConfig:
    codebook_size: int = setting(64, "codes per level of the semantic IDs (residual k-means clusters)")
    levels: int = setting(3, "codes per semantic ID (residual k-means levels; 2 or more)")
    collab_weight: float = setting(0.0, "weight of the collaborative embedding (co-occurrence in the training "
                                        "sequences) appended to the unit text embedding before k-means; 0: text only")
    collab_dim: int = setting(64, "dimensions of the collaborative embedding")
    collab_window: int = setting(3, "items this many steps apart in a sequence count as taken together")
    architecture: str = setting("LlamaForCausalLM", "model class: LlamaForCausalLM or Qwen3ForCausalLM")
    hidden_size: int = setting(128, "transformer hidden size")
    intermediate_size: int = setting(512, "inner size of the transformer's MLP")
    num_layers: int = setting(4, "transformer layers")
    num_heads: int = setting(4, "attention heads")
    num_kv_heads: int = setting(2, "key/value heads (grouped-query attention when fewer than num_heads)")
    max_history_items: int = setting(50, "most history items in a prompt (sets the model's context)")
    epochs: int = setting(20, "training epochs; the epoch best on validation NDCG@10 is kept")
    batch_size: int = setting(32, "training rows per optimizer step")
    lr: float = setting(2e-3, "peak AdamW learning rate (linear warm-up over 5% of the steps, then cosine decay)")
    weight_decay: float = setting(0.1, "AdamW weight decay")
    dropout: float = setting(0.2, "dropout of the embeddings, attention probabilities and residual branches while "
                                  "training (none at inference)")
    label_smoothing: float = setting(0.1, "label smoothing of the next-token cross-entropy")
    ema_decay: float = setting(0.0, "keep an exponential moving average of the weights (this decay per step) and "
                                    "validate, keep and ship it in place of the last step's; 0: off")
    patience: int = setting(5, "stop after this many epochs without a better validation NDCG@10 (0: run all epochs)")
    valid_from: int = setting(1, "first epoch validated (and so eligible to be kept); earlier ones report their loss "
                                 "only, and one past the last epoch means the last. Under the cosine schedule "
                                 "early epochs are never the best, and Beauty's validation costs ~40% of an "
                                 "epoch's training")
    eval_beam_width: int = setting(32, "beam width of the validation and test evaluations")
    valid_users: int = setting(0, "validation users scored after each epoch, drawn at random with the seed "
                                  "(0: all)")
    seed: int = setting(0, "seed of the SID clustering, the initial weights and the data order")
    threads: int = setting(0, "torch intra-op threads; 0: torch's default")
    train_dtype: str = setting("float32", "what the training forward and backward compute in: float32, bfloat16 "
                                          "(autocast; the weights and optimizer stay float32), or auto (bfloat16 "
                                          "where the CPU has native bf16, else float32). Validation, test and the "
                                          "saved model are float32 either way")

    def __post_init__(self):
        check_dtype("train_dtype", self.train_dtype)


def build_item_table(dataset: SequenceDataset, cfg: TrainConfig, train_sequences: list[list[int]],
                     progress: bool = False) -> tuple[ItemTable, Codebooks]:
    """SIDs for the dataset's items from their texts and, with `cfg.collab_weight`, from the training
    sequences (never the held-out items)."""
    embeddings = embed_texts(dataset.texts, progress=progress)
    text_dim = embeddings.shape[1]
    if cfg.collab_weight:
        collab = collaborative_embeddings(train_sequences, len(dataset.item_ids), cfg.collab_dim,
                                          cfg.collab_window, cfg.seed)
        embeddings = np.concatenate([embeddings, cfg.collab_weight * collab], axis=1)
    codes, centroids = residual_kmeans_fit(embeddings, cfg.codebook_size, cfg.levels, cfg.seed, progress)
    return (ItemTable(cfg.codebook_size, codes, dataset.item_ids, dataset.titles),
            Codebooks(centroids, ENCODER, text_dim))


def derive_codebooks(dataset: SequenceDataset, table: ItemTable,
                     progress: bool = False) -> tuple[Codebooks, dict]:
    """The codebooks of a model trained before they were saved, from its item table and the dataset's
    texts embedded as training embedded them: each centroid is the mean of its items' residuals. Also
    how much of the table `quantize` reproduces: the share of items whose first 1, 2, ... codes (and each
    level's code) it gives back."""
    row_of = {item: row for row, item in enumerate(dataset.item_ids)}
    missing = [r for r in table.raw_ids if r not in row_of]
    if missing:
        raise ValueError(f"{len(missing)} items of the table are not in dataset {dataset.name}, e.g. {missing[:3]}")
    # All texts in dataset order, as training embedded them: a batch's padding moves the last float bits.
    embeddings = embed_texts(dataset.texts, progress=progress)[[row_of[r] for r in table.raw_ids]]
    codebooks = Codebooks(centroids_from_codes(embeddings, table.codes, table.codebook_size), ENCODER)
    same = codebooks.quantize(embeddings) == table.codes
    prefix = np.cumprod(same, axis=1).mean(axis=0)
    return codebooks, {"items": len(table), "sid": round(float(prefix[-1]), 4),
                       "prefix": prefix.round(4).tolist(), "level": same.mean(axis=0).round(4).tolist()}


def windows(sequences: list[list[int]], length: int, rng: random.Random) -> list[list[int]]:
    """Consecutive item windows covering each sequence, cut at a random offset every epoch."""
    out = []
    for seq in sequences:
        ends = [len(seq), *range(len(seq) - rng.randrange(1, length), 0, -length)]
        out.extend(seq[max(0, e - length):e] for e in ends)
    return out


def length_batches(rows: list[list[int]], batch_size: int, rng: random.Random,
                   chunk: int = 50) -> list[list[list[int]]]:
    """Batches of rows of similar length, in random order. A batch is padded to its longest row and
    histories are skewed (Beauty: mean 7 items a window, up to 51), so random batches are ~5x padding;
    sorting within random chunks of `chunk` batches keeps that near 1.07x and the order still random."""
    rows = rows[:]
    rng.shuffle(rows)
    batches = []
    for start in range(0, len(rows), batch_size * chunk):
        part = sorted(rows[start:start + batch_size * chunk], key=len)
        batches.extend(part[i:i + batch_size] for i in range(0, len(part), batch_size))
    rng.shuffle(batches)
    return batches


def batch_tensors(rows: list[list[int]], table: ItemTable, vocab: GRVocab) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded inputs and next-token targets (PAD targets are ignored by the loss)."""
    seqs = [vocab.prompt(table.codes[r]) for r in rows]
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), PAD, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s)
    targets = torch.full_like(ids, -100)
    targets[:, :-1] = ids[:, 1:]
    targets[targets == PAD] = -100
    return ids, targets


def model_config(cfg: TrainConfig, vocab: GRVocab) -> ModelConfig:
    return ModelConfig(architecture=cfg.architecture, vocab_size=vocab.size, hidden_size=cfg.hidden_size,
                       intermediate_size=cfg.intermediate_size, num_hidden_layers=cfg.num_layers,
                       num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
                       max_position_embeddings=1 + vocab.levels * (cfg.max_history_items + 1),
                       bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD)


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0,
                    tokens_per_batch: float | None = None) -> torch.Tensor:
    """Cross-entropy over the positions with a target (-100: none): their mean, or with `tokens_per_batch`
    their sum over that number. Length-bucketed batches hold from a few to hundreds of targets, and a
    per-batch mean would give each short-window target many times the weight of a long one; dividing by the
    epoch's mean count weighs every target alike, as random batches do on average. Label smoothing moves
    that share of each target's probability evenly onto the whole vocabulary: the next item is one pick
    among many a user would have liked, and a model pushed to certainty on it overfits a small dataset."""
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                             label_smoothing=label_smoothing,
                                             reduction="mean" if tokens_per_batch is None else "sum")
    return loss if tokens_per_batch is None else loss / tokens_per_batch


def autocast_dtype(setting: str, device: str | torch.device = "cpu") -> torch.dtype | None:
    """The dtype training autocasts to for `setting` (one of DTYPES), or None for plain float32. On an AVX-512
    BF16 EPYC, bf16 autocast trained ml-100k 1.34x faster an epoch at 1 thread and Beauty little faster at 2,
    with the same quality (`benchmarks/results/ml-100k-train-dtype-20261207.json`,
    `beauty-bf16-train-20261207.json`); without native bf16 it would crawl."""
    if setting == "bfloat16" or (setting == "auto" and native_bf16(device)):
        return torch.bfloat16
    return None


def train_epoch(model: Transformer, batches: list, table: ItemTable, vocab: GRVocab, optimizer, scheduler,
                label_smoothing: float, progress: bool = False, desc: str = "", averaged=None,
                dtype: torch.dtype | None = None) -> float:
    """One pass over `batches` (lists of item-row windows) in train mode, dropout on, every target weighed
    alike; the mean loss per target. `averaged` (torch's AveragedModel) follows every step; with `dtype`,
    the forward runs under autocast to it (the loss in float32). The model is left in eval mode, as
    evaluation and serving run it."""
    device = next(model.parameters()).device
    model.train()
    tokens_per_batch = sum(len(r) for b in batches for r in b) * table.levels / len(batches)
    losses, counts = [], []
    bar = tqdm(batches, desc=desc, disable=not progress)
    for rows in bar:
        ids, targets = batch_tensors(rows, table, vocab)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits, _ = model(ids, torch.arange(ids.shape[1]).expand_as(ids))
        loss = next_token_loss(logits.float(), targets, label_smoothing, tokens_per_batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        if averaged is not None:
            averaged.update_parameters(model)
        losses.append(loss.item() * tokens_per_batch)
        counts.append(int((targets != -100).sum()))
        bar.set_postfix(loss=f"{sum(losses[-50:]) / sum(counts[-50:]):.3f}")
    model.eval()
    return sum(losses) / sum(counts)


def validation_sample(examples: list, users: int, seed: int) -> list:
    """`users` of the validation examples drawn at random (all when 0 or more than there are), in their order.
    Not the first ones: a file's users are often ordered by something that tracks how predictable they are
    (Beauty's first 5,000 score half what all its users do)."""
    if not users or users >= len(examples):
        return examples
    return [examples[i] for i in sorted(random.Random(seed).sample(range(len(examples)), users))]


@contextlib.contextmanager
def averaged_weights(model: Transformer, averaged):
    """The model computes with the averaged weights inside the block (the recommender holds the model, not a
    copy), and with its own again after it."""
    if averaged is None:
        yield
        return
    own = copy.deepcopy(model.state_dict())
    model.load_state_dict(averaged.module.state_dict())
    try:
        yield
    finally:
        model.load_state_dict(own)


def train(dataset: SequenceDataset, cfg: TrainConfig, out_dir: str | Path, progress: bool = True,
          table: ItemTable | None = None) -> dict:
    """Train on the leave-one-out training part, keep the epoch best on validation NDCG@10, report
    test metrics beside the popularity baseline, and write the model directory. The item table is
    built from the item texts unless one is given."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    started = time.time()
    codebooks = None
    split = leave_one_out(dataset.sequences)
    if table is None:
        table, codebooks = build_item_table(dataset, cfg, list(split.train.values()), progress)
    vocab, trie = GRVocab.of(table), SIDTrie.from_table(table)
    model = Transformer(model_config(cfg, vocab), dropout=cfg.dropout)
    bundle = GRBundle(model, table, trie, vocab,
                      GRSettings(max_history_items=cfg.max_history_items, dataset=dataset.name))
    recommender = Recommender(bundle)
    valid = validation_sample(split.valid, cfg.valid_users, cfg.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    averaged = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
                if cfg.ema_decay else None)
    train_seqs = [s for s in split.train.values() if len(s) > 1]
    windows_per_epoch = len(windows(train_seqs, cfg.max_history_items + 1, random.Random(cfg.seed)))
    total = max(1, cfg.epochs * windows_per_epoch // cfg.batch_size)
    # Linear warm-up over 5% of the steps, then cosine decay to zero.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(
        (step + 1) / (0.05 * total), 0.5 * (1 + math.cos(math.pi * min(step / total, 1.0)))))
    first_validated = min(max(cfg.valid_from, 1), cfg.epochs)
    dtype = autocast_dtype(cfg.train_dtype)
    best, history = (-1.0, None, first_validated - 1), []
    for epoch in range(1, cfg.epochs + 1):
        batches = length_batches(windows(train_seqs, cfg.max_history_items + 1, rng), cfg.batch_size, rng)
        epoch_started = time.time()
        loss = train_epoch(model, batches, table, vocab, optimizer, scheduler, cfg.label_smoothing, progress,
                           f"epoch {epoch}/{cfg.epochs}", averaged, dtype)
        train_seconds, metrics = round(time.time() - epoch_started, 1), {}
        if epoch >= first_validated:
            with averaged_weights(model, averaged):  # the weights validated are the ones kept
                metrics = evaluate(recommender, valid, cfg.eval_beam_width, progress=progress)["model"]
                if metrics["ndcg@10"] > best[0]:
                    best = (metrics["ndcg@10"], copy.deepcopy(model.state_dict()), epoch)
        history.append({"epoch": epoch, "loss": loss, "train_seconds": train_seconds, **metrics})
        if progress:
            tqdm.write(json.dumps(round_metrics({"epoch": history[-1]})["epoch"]))
        if cfg.patience and epoch - best[2] >= cfg.patience:
            break
    model.load_state_dict(best[1])
    model.eval()
    test = evaluate(recommender, split.test, cfg.eval_beam_width, progress=progress)
    recommender.close()
    bundle.save(out_dir)
    if codebooks is not None:
        codebooks.save(out_dir)
    else:  # a given table has no centroids: codebooks left from an earlier model would be wrong for it
        (Path(out_dir) / CODEBOOKS_FILE).unlink(missing_ok=True)
    report = {"dataset": dataset.describe(), "train_config": asdict(cfg), "best_epoch": best[2],
              "epochs": history, "test": round_metrics(test), "seconds": round(time.time() - started, 1),
              "machine": machine_info(), "threads": torch.get_num_threads()}
    (Path(out_dir) / "training_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
