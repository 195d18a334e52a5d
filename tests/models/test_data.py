"""Byte data (fsn_model/README.md, "Data"): splits, enwik8 detection, deterministic batches, default corpus."""
import numpy as np
import pytest

from fsn_model.data import eval_windows, get_batch, load_corpus


def test_generic_file_split_90_5_5(tmp_path):
    f = tmp_path / "text.txt"
    f.write_bytes(bytes(range(256)) * 40)  # 10240 bytes
    c = load_corpus(str(f))
    assert c.splits == {"train": (0, 9216), "val": (9216, 9728), "test": (9728, 10240)}
    assert c.name == "text.txt" and len(c.sha256) == 64
    assert c.split("val")[0] == 9216 % 256


def test_file_named_enwik8_is_detected(tmp_path):
    f = tmp_path / "enwik8"
    f.write_bytes(b"x" * 20000)  # a truncated enwik8 keeps the 90/5/5 proportions
    c = load_corpus(str(f))
    assert c.name == "enwik8" and c.splits["val"] == (18000, 19000)


def test_missing_file_raises():
    with pytest.raises(FileNotFoundError):
        load_corpus("/nonexistent/enwik8")


def test_batches_deterministic_and_shifted():
    data = np.arange(5000, dtype=np.int64) % 251
    x1, y1 = get_batch(data, 4, 16, seed=3, step=7)
    x2, y2 = get_batch(data, 4, 16, seed=3, step=7)
    x3, _ = get_batch(data, 4, 16, seed=3, step=8)
    xr, _ = get_batch(data, 4, 16, seed=3, step=7, rank=1)
    assert x1.shape == (4, 16) and (x1 == x2).all() and (y1 == y2).all()
    assert not (x1 == x3).all() and not (x1 == xr).all()
    assert (x1[:, 1:] == y1[:, :-1]).all()
    w = eval_windows(data, 16, 5)
    assert w.shape == (5, 17) and w[0, 0] == 0
    assert w[-1, -1] == data[-1], "the last byte of a split must be reachable"


def test_every_byte_of_a_split_can_be_a_target():
    data = np.arange(20, dtype=np.int64)
    last_targets = {int(get_batch(data, 8, 16, seed=0, step=s)[1].max()) for s in range(50)}
    assert 19 in last_targets


def test_eval_windows_refuses_to_return_fewer_than_asked():
    data = np.arange(40, dtype=np.int64)
    assert eval_windows(data, 16, 24).shape == (24, 17)  # starts 0..23: exactly enough
    with pytest.raises(ValueError, match="eval_windows"):
        eval_windows(data, 16, 25)
    with pytest.raises(ValueError, match="eval_windows"):
        eval_windows(data, 16, 0)


def test_default_corpus_is_python_stdlib():
    c = load_corpus(None)
    assert c.name == "pystdlib" and len(c.data) > 1_000_000
    assert b"def " in bytes(c.data[:100000])
    assert load_corpus(None).sha256 == c.sha256


def test_full_size_enwik8_gets_the_standard_split_and_text8_does_not(tmp_path):
    """A 100,000,000-byte file (sparse: no real disk) is enwik8 only if it looks like it."""
    wiki = tmp_path / "wiki.xml"
    with open(wiki, "wb") as f:
        f.write(b"<mediawiki xmlns")
        f.truncate(100_000_000)
    c = load_corpus(str(wiki))
    assert c.name == "enwik8"
    assert c.splits == {"train": (0, 90_000_000), "val": (90_000_000, 95_000_000), "test": (95_000_000, 100_000_000)}
    text8 = tmp_path / "text8"
    with open(text8, "wb") as f:
        f.write(b" anarchism originated")
        f.truncate(100_000_000)
    assert load_corpus(str(text8)).name == "text8"
