"""Training learns a pattern a hand-written oracle knows: in the synthetic data every user walks the
catalog in a fixed cycle, so the next item is always the successor of the last one. The codebooks it
saves turn the items' texts back into their SIDs."""
import json
import math
import random

import numpy as np
import pytest
import torch

from grserve.bundle import DEFAULT_MODEL_DIR, GRBundle
from grserve.data.dataset import SequenceDataset
from grserve.data.embeddings import ENCODER
from grserve.data.recbole import load_movielens_100k
from grserve.data.training import (TrainConfig, autocast_dtype, derive_codebooks, length_batches,
                                   next_token_loss, train, windows)
from grserve.items.codebooks import Codebooks
from grserve.items.item_table import ItemTable
from grserve.recommender import Recommender

N = 32


def cyclic_dataset(users: int = 120, seed: int = 0) -> SequenceDataset:
    rng = random.Random(seed)
    ids = [f"m{i}" for i in range(N)]
    sequences = {}
    for u in range(users):
        start, length = rng.randrange(N), rng.randrange(6, 14)
        sequences[f"u{u}"] = [(start + k) % N for k in range(length)]
    return SequenceDataset("cyclic", ids, ids, ids, sequences)


def cyclic_table(ds: SequenceDataset) -> ItemTable:
    """A hand-made item table for the cyclic data (4 codes a level, item i's SID its base-4 digits)."""
    codes = np.array([[i // 16, (i // 4) % 4, i % 4] for i in range(N)], dtype=np.int32)
    return ItemTable(4, codes, ds.item_ids, ds.titles)


def test_windows_cover_every_item_once_or_more():
    rng = random.Random(1)
    seq = list(range(23))
    for _ in range(20):
        ws = windows([seq], 5, rng)
        assert all(1 <= len(w) <= 5 for w in ws)
        assert set().union(*ws) == set(seq)
        assert ws[0] == seq[-5:]


def test_length_batches_keep_every_row_once_and_group_similar_lengths():
    rng = random.Random(3)
    rows = [[i] * rng.randrange(1, 40) for i in range(1000)]
    batches = length_batches(rows, 32, random.Random(0), chunk=4)
    assert sorted(map(tuple, (r for b in batches for r in b))) == sorted(map(tuple, rows))
    assert all(1 <= len(b) <= 32 for b in batches)
    # Within a chunk of 4 batches the rows are sorted, so a batch spans a quarter of a chunk's lengths:
    # padding is far below random batches' (lengths 1..39 uniform: max of 32 draws ~38, mean 20).
    padded = sum(len(b) * max(map(len, b)) for b in batches) / sum(map(len, rows))
    assert padded < 1.4


def successor_run(tmp_path, **fields) -> dict:
    """The report of 12 epochs on the cyclic data with a hand-made item table (no text SIDs)."""
    ds = cyclic_dataset()
    table = cyclic_table(ds)
    cfg = TrainConfig(codebook_size=4, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                      num_kv_heads=2, max_history_items=8, epochs=12, batch_size=16, lr=5e-3,
                      eval_beam_width=10, **fields)
    return train(ds, cfg, tmp_path, progress=False, table=table)


def test_training_learns_the_successor(tmp_path):
    report = successor_run(tmp_path)
    assert report["test"]["model"]["recall@5"] > 0.9
    assert report["test"]["popularity"]["recall@5"] < 0.5
    saved = json.loads((tmp_path / "training_report.json").read_text())
    assert saved["best_epoch"] == report["best_epoch"]
    # The written directory serves: the successor of the last history item comes first.
    rec = Recommender(GRBundle.load(tmp_path))
    assert rec.recommend(["m5", "m6", "m7"], top_n=1, beam_width=8).items[0].item_id == "m8"


def test_training_saves_codebooks_that_give_back_the_sids(tmp_path):
    # SIDs built from the texts: the saved codebooks turn each item's text back into its SID.
    ds = cyclic_dataset(users=40)
    cfg = TrainConfig(codebook_size=4, hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2,
                      num_kv_heads=1, max_history_items=4, epochs=1, eval_beam_width=10, valid_users=4)
    train(ds, cfg, tmp_path, progress=False)
    codebooks = Codebooks.load(tmp_path)
    assert codebooks.encoder == ENCODER and codebooks.centroids.shape == (3, 4, 384)
    assert np.array_equal(codebooks.encode_texts(ds.texts), GRBundle.load(tmp_path).table.codes)
    # Trained again on a given table, the directory has no centroids for it, so none are left.
    table = ItemTable(4, np.zeros((N, 3), dtype=np.int32), ds.item_ids)
    train(ds, cfg, tmp_path, progress=False, table=table)
    assert Codebooks.load(tmp_path) is None


def test_label_smoothing_loss_by_hand():
    # Smoothed cross-entropy: (1 - e) * -log p(target) + e * mean over the vocabulary of -log p(j), averaged
    # over the positions that have a target.
    logits = torch.tensor([[[2.0, 0.0, -1.0, 0.5], [0.0, 1.0, 0.0, 3.0], [9.0, 9.0, 9.0, 9.0]]])
    targets = torch.tensor([[0, 3, -100]])
    e = 0.2

    def smoothed(row: list[float], target: int) -> float:
        log_z = math.log(sum(math.exp(x) for x in row))
        nll = [log_z - x for x in row]
        return (1 - e) * nll[target] + e * sum(nll) / len(row)

    expected = (smoothed([2.0, 0.0, -1.0, 0.5], 0) + smoothed([0.0, 1.0, 0.0, 3.0], 3)) / 2
    assert next_token_loss(logits, targets, e).item() == pytest.approx(expected, rel=1e-6)
    # Without smoothing it is the plain negative log-likelihood of the target.
    assert next_token_loss(logits[:, :1], targets[:, :1]).item() == pytest.approx(
        math.log(sum(math.exp(x) for x in [2.0, 0.0, -1.0, 0.5])) - 2.0, rel=1e-6)
    # Over an epoch's mean target count: the sum of the targets' losses divided by it, so a batch of 2
    # targets weighs half as much as a batch of 4 would (a per-batch mean would weigh them alike).
    assert next_token_loss(logits, targets, e, tokens_per_batch=4.0).item() == pytest.approx(
        (smoothed([2.0, 0.0, -1.0, 0.5], 0) + smoothed([0.0, 1.0, 0.0, 3.0], 3)) / 4, rel=1e-6)


def frozen_run(tmp_path, **fields) -> dict:
    """The report of a training run whose weights never change (learning rate zero), so that every epoch
    validates alike and none beats the first one validated."""
    ds = cyclic_dataset(users=30)
    table = cyclic_table(ds)
    cfg = TrainConfig(codebook_size=4, hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2,
                      num_kv_heads=1, max_history_items=4, epochs=10, lr=0.0, eval_beam_width=10, **fields)
    return train(ds, cfg, tmp_path, progress=False, table=table)


def test_patience_stops_when_validation_stops_improving(tmp_path):
    # With patience 2 training stops after epoch 3 of 10 and keeps epoch 1.
    report = frozen_run(tmp_path, patience=2, dropout=0.1, label_smoothing=0.1)
    assert [e["epoch"] for e in report["epochs"]] == [1, 2, 3]
    assert report["best_epoch"] == 1


def test_validation_starts_at_valid_from_and_patience_counts_from_there(tmp_path):
    # Validated from epoch 3, epochs 1 and 2 report only a loss, epoch 3 is kept, and patience 2 stops
    # training after epoch 5.
    report = frozen_run(tmp_path, patience=2, valid_from=3)
    assert [e["epoch"] for e in report["epochs"]] == [1, 2, 3, 4, 5]
    assert [("ndcg@10" in e) for e in report["epochs"]] == [False, False, True, True, True]
    assert report["best_epoch"] == 3 and "loss" in report["epochs"][0]
    # Every epoch's own training time, within the run's (which adds validation, the test and saving).
    assert all(e["train_seconds"] >= 0 for e in report["epochs"])
    assert sum(e["train_seconds"] for e in report["epochs"]) <= report["seconds"]


def test_collaborative_dimensions_join_the_text_in_the_sids(tmp_path):
    # With a collaborative weight, k-means ran on [text, weight * co-occurrence of the training part]:
    # the saved codebooks are that wide, know which part is text, and give back every SID from it.
    from grserve.data.collaborative import collaborative_embeddings
    from grserve.data.embeddings import embed_texts
    from grserve.data.split import leave_one_out

    ds = cyclic_dataset(users=40)
    cfg = TrainConfig(codebook_size=4, hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2,
                      num_kv_heads=1, max_history_items=4, epochs=1, eval_beam_width=10, valid_users=4,
                      collab_weight=0.5, collab_dim=8)
    train(ds, cfg, tmp_path, progress=False)
    codebooks = Codebooks.load(tmp_path)
    assert codebooks.centroids.shape == (3, 4, 384 + 8) and codebooks.text_dim == 384
    collab = collaborative_embeddings(list(leave_one_out(ds.sequences).train.values()), N, 8)
    joined = np.concatenate([embed_texts(ds.texts), 0.5 * collab], axis=1)
    assert np.array_equal(codebooks.quantize(joined), GRBundle.load(tmp_path).table.codes)


@pytest.mark.slow
def test_shipped_codebooks_derive_again_and_give_back_every_sid():
    # The embedded model's SIDs came from sklearn's k-means at training time: the independent oracle.
    table = ItemTable.load(DEFAULT_MODEL_DIR)
    codebooks, reproduced = derive_codebooks(load_movielens_100k(), table)
    np.testing.assert_allclose(codebooks.centroids, Codebooks.load(DEFAULT_MODEL_DIR).centroids, atol=1e-6)
    assert reproduced == {"items": len(table), "sid": 1.0, "prefix": [1.0] * 3, "level": [1.0] * 3}


def test_averaged_weights_are_used_inside_the_block_only():
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    from grserve.data.training import averaged_weights
    from grserve.model.config import ModelConfig
    from grserve.model.transformer import Transformer

    model = Transformer(ModelConfig(architecture="LlamaForCausalLM", vocab_size=8, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                    num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=8))
    averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.75), use_buffers=True)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    averaged.update_parameters(model)  # the first update copies; the second averages
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    averaged.update_parameters(model)
    own = {k: v.clone() for k, v in model.state_dict().items()}
    with averaged_weights(model, averaged):
        # 0.75 * (start + 1) + 0.25 * (start + 2) = start + 1.25, every parameter
        for name, p in model.named_parameters():
            torch.testing.assert_close(p, start[name] + 1.25)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p, own[name])


def test_training_with_averaged_weights_learns_the_successor(tmp_path):
    assert successor_run(tmp_path, ema_decay=0.9)["test"]["model"]["recall@5"] > 0.9


def test_bfloat16_training_learns_the_successor_and_saves_float32_weights(tmp_path):
    report = successor_run(tmp_path, train_dtype="bfloat16")
    assert report["test"]["model"]["recall@5"] > 0.9
    bundle = GRBundle.load(tmp_path)
    assert {p.dtype for p in bundle.model.parameters()} == {torch.float32}
    assert report["train_config"]["train_dtype"] == "bfloat16"


def test_auto_train_dtype_is_bfloat16_only_with_native_bf16(monkeypatch):
    for native, expected in ((True, torch.bfloat16), (False, None)):
        monkeypatch.setattr("grserve.data.training.native_bf16", lambda device="cpu", native=native: native)
        assert autocast_dtype("auto") is expected
        assert autocast_dtype("float32") is None and autocast_dtype("bfloat16") is torch.bfloat16
    with pytest.raises(ValueError, match="train_dtype"):
        TrainConfig(train_dtype="float16")


def test_validation_sample_draws_across_the_whole_split():
    from grserve.data.training import validation_sample

    examples = list(range(1000))
    sample = validation_sample(examples, 100, seed=0)
    assert len(sample) == len(set(sample)) == 100 and sample == sorted(sample)
    assert max(sample) > 500  # not the first 100: both halves of the split are drawn from
    assert validation_sample(examples, 100, seed=0) == sample != validation_sample(examples, 100, seed=1)
    assert validation_sample(examples, 0, seed=0) == examples == validation_sample(examples, 5000, seed=0)
