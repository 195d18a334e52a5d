"""Result files: the final validation figure is written as ``final_val_bits_per_byte``; files
written as ``final_val_bpc`` before the rename stay readable by every reader."""
import pytest

from fsn_studies import compare, sweep
from fsn_studies.records import FINAL_VAL, final_val


def _run(key, value, seed=0, model="fsn"):
    return {"model": model, "trial": f"{model} lr=0.01", "knobs": {}, "lr": 0.01, "params": 1000, "seed": seed,
            "tokens": 64, "final_train_bpb": 2.0, "epochs": 0.1, key: value}


def test_final_val_reads_the_new_and_the_old_key():
    assert FINAL_VAL == "final_val_bits_per_byte"
    assert final_val({"final_val_bits_per_byte": 1.5}) == 1.5
    assert final_val({"final_val_bpc": 2.5}) == 2.5
    with pytest.raises(KeyError, match="final_val_bits_per_byte"):
        final_val({"model": "fsn"})


def test_summaries_and_tables_read_old_and_new_records_alike():
    runs = [_run("final_val_bpc", 2.0, seed=0), _run(FINAL_VAL, 3.0, seed=1)]
    s = sweep.summarise(runs)["fsn lr=0.01"]
    assert (s["mean"], s["min"], s["seeds"]) == (2.5, 2.0, [0, 1])
    assert "| 2.0000 |" in sweep.tables(runs, sweep.summarise(runs), 1)
    assert compare._summary([dict(r, model="fsn") for r in runs])["fsn"]["mean"] == 2.5
