"""Copy depth (fsn_model/README.md, "Copy depth") on hand-made strings with known depths."""
import numpy as np

from fsn_model.copy_depth import BIN_NAMES, NEW, bin_index, copy_depths, format_table, loss_by_bin


def test_known_depths():
    #                          a    b    c    a  b  c  d    a  b  c  d
    assert copy_depths(b"abcabcdabcd").tolist() == [NEW, NEW, NEW, 0, 1, 2, NEW, 0, 1, 2, 3]
    assert copy_depths(b"aaaa").tolist() == [NEW, 0, 1, 2]  # x[t-k..t] ends earlier at t-1
    assert copy_depths(b"xyzy").tolist() == [NEW, NEW, NEW, 0]  # "zy" never seen: depth 0
    assert copy_depths(b"").tolist() == []


def test_depth_is_capped_at_32():
    d = copy_depths(b"a" * 50)
    assert d[0] == NEW and d[33] == 32 and d[49] == 32 and d[10] == 9
    period = bytes(range(40)) * 2
    d = copy_depths(period)
    assert (d[:40] == NEW).all() and d[40] == 0 and d[72] == 32
    assert d[79] == 32  # uncapped it would be 39


def test_bins_and_pooling():
    depths = np.array([NEW, 0, 1, 2, 3, 4, 7, 8, 15, 16, 23, 24, 32])
    assert bin_index(depths).tolist() == [6, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    losses = np.arange(len(depths), dtype=float)
    res = loss_by_bin(losses, depths)
    assert list(res) == BIN_NAMES
    assert res["new"] == {"count": 1, "bits": 0.0} and res["0-1"] == {"count": 2, "bits": 1.5}
    assert res["24-32"]["bits"] == 11.5
    table = format_table({"a": res, "b": res})
    assert table.count("\n") == len(BIN_NAMES) + 1 and "| new | 1 |" in table


def test_an_empty_bin_says_no_data_in_the_table_and_is_null_in_json():
    import json

    depths = np.array([NEW, 0, 1, 2])  # nothing deeper than 2: bins 4-7 .. 24-32 are empty
    res = loss_by_bin(np.array([1.0, 2.0, 3.0, 4.0]), depths)
    assert res["8-15"] == {"count": 0, "bits": None}
    table = format_table({"a": res, "b": res})
    assert "| 8-15 | 0 | no data | no data |" in table and "nan" not in table
    assert json.loads(json.dumps(res))["24-32"]["bits"] is None  # strict JSON, no NaN token
