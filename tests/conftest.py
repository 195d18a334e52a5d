"""Fixtures shared by the model, training and study tests: a small corpus, tiny trained
checkpoints, a guard that no training step runs, the "one stderr line and this exit code"
check of a CLI, and moving a layer's projections away from their identity init."""
from typing import Callable, Dict, Sequence

import pytest
import torch

SMALL_CORPUS = b"def f(x):\n    return x + 1\n\nclass A:\n    pass\n" * 300


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> str:
    """Path of a ~15 kB byte corpus of repeated Python lines."""
    path = tmp_path_factory.mktemp("data") / "small.txt"
    path.write_bytes(SMALL_CORPUS)
    return str(path)


@pytest.fixture(scope="session")
def checkpoints(corpus, tmp_path_factory) -> Dict[str, str]:
    """{"fsn", "transformer", "transformer-shift": path}: checkpoint.pt of one-layer ~30k-param
    runs of 3 steps (the last a transformer with ``token_shift``)."""
    from fsn_model import train as train_mod

    paths = {}
    for key, model, extra in (("fsn", "fsn", {}), ("transformer", "transformer", {}),
                              ("transformer-shift", "transformer", {"token_shift": True})):
        out = tmp_path_factory.mktemp(key)
        train_mod.train(train_mod.TrainConfig(model=model, params="30k", data=corpus, steps=3, batch_size=4,
                                              seq_len=32, eval_windows=2, eval_every=3, progress=False,
                                              out=str(out), model_overrides={"n_layers": 1, **extra}))
        paths[key] = str(out / "checkpoint.pt")
    return paths


@pytest.fixture
def forbid_training(monkeypatch) -> Callable[..., None]:
    """``forbid_training()`` (or ``forbid_training(a_monkeypatch_context)``): from then on a
    training step fails the test, so a check that must come first cannot come too late."""
    from fsn_model import train as train_mod

    def no_batches(*args, **kwargs):
        raise AssertionError("a training step ran before the check")

    def forbid(patcher=None) -> None:
        (patcher or monkeypatch).setattr(train_mod, "get_batch", no_batches)

    return forbid


@pytest.fixture
def one_line_error(capsys) -> Callable[..., str]:
    """``one_line_error(main, argv, code=2)``: ``main(argv)`` exits with ``code`` after writing
    exactly one line to stderr, no traceback; returns that line."""
    def check(main: Callable[[Sequence[str]], int], argv: Sequence[str], code: int = 2) -> str:
        with pytest.raises(SystemExit) as e:
            main(list(argv))
        err = capsys.readouterr().err
        assert e.value.code == code, err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        return err

    return check


@pytest.fixture
def perturb() -> Callable[..., None]:
    """``perturb(layer, std=0.3)``: move a FrustratedAttention's projections (those it has)
    away from their identity init."""
    def move(layer, std: float = 0.3) -> None:
        with torch.no_grad():
            for part in (layer.in_proj, layer.out_proj):
                for w in [] if part is None else part.parameters():
                    w.add_(std * torch.randn_like(w))

    return move
