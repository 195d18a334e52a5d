"""The HF swap trial (``python -m fsn_studies.hf_swap``) at a toy budget: it trains the three
models per seed and writes their validation losses; bad input is one line, exit 2."""
import json

import pytest

pytest.importorskip("transformers")

from fsn_studies import hf_swap  # noqa: E402


def test_the_trial_writes_one_finite_result_per_model_and_seed(tmp_path):
    out = tmp_path / "trial.json"
    argv = ["--steps", "2", "--seeds", "0", "--batch-size", "2", "--seq-len", "16", "--dim", "16", "--n-layers", "1",
            "--n-heads", "2", "--hidden", "16", "--eval-windows", "2", "--warmup", "1", "--out", str(out)]
    assert hf_swap.main(argv) == 0
    result = json.loads(out.read_text())
    assert [(r["model"], r["seed"]) for r in result["runs"]] == [(m, 0) for m in hf_swap.MODELS]
    assert all(0 < r["val_loss_nats"] < 10 for r in result["runs"])
    assert set(result["summary"]) == set(hf_swap.MODELS)


def test_bad_input_is_one_line(tmp_path, one_line_error):
    assert "--steps" in one_line_error(hf_swap.main, ["--steps", "0", "--out", str(tmp_path / "x.json")])
