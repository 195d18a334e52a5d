"""Packed documents: boundaries from a separator, an FSN whose logits on a packed row equal
each document run alone, and training with --pack-documents."""
import pytest
import torch

from fsn_kernels.testing import backend_params
from fsn_model import build_model
from fsn_model.data import document_boundaries, separator_bytes
from fsn_model.train import TrainConfig, main, train, validate


def test_document_boundaries_split_at_the_separator_and_at_window_ends():
    x = torch.tensor([list(b"ab\n\ncd\n\nef"), list(b"\n\nxyz\n\n\n\nq")])  # (2, 10)
    cu, crosses = document_boundaries(x, b"\n\n")
    # row 0: "ab\n\n" | "cd\n\n" | "ef"; row 1: "\n\n" | "xyz\n\n" | "\n\n" | "q"
    assert cu.dtype == torch.int32
    assert cu.tolist() == [0, 4, 8, 10, 12, 17, 19, 20]
    assert crosses[0].nonzero().flatten().tolist() == [3, 7]
    assert crosses[1].nonzero().flatten().tolist() == [1, 6, 8]


def test_separator_escapes_and_empty():
    assert separator_bytes("\\n\\n") == b"\n\n"
    assert separator_bytes("<|end|>") == b"<|end|>"
    with pytest.raises(ValueError, match="non-empty"):
        separator_bytes("")


@pytest.mark.parametrize("overrides", [{}, {"token_shift": True}, {"projections": True},
                                       {"projections": True, "token_shift": True},
                                       {"projections": True, "projected_heads": 1}])
@pytest.mark.parametrize("backend", backend_params())
def test_fsn_logits_on_packed_documents_equal_each_document_alone(backend, overrides):
    torch.manual_seed(0)
    model = build_model("fsn", 20000, n_layers=2, backend=backend, **overrides).eval()
    docs = [torch.randint(0, 256, (n,)) for n in (9, 1, 23, 14)]
    packed = torch.cat(docs)[None]
    cu = torch.tensor([0, 9, 10, 33, 47], dtype=torch.int32)
    with torch.no_grad():
        logits = model(packed, cu_seqlens=cu)
        for doc, a, b in zip(docs, cu[:-1].tolist(), cu[1:].tolist()):
            alone = model(doc[None])
            torch.testing.assert_close(logits[:, a:b], alone, atol=2e-5, rtol=1e-5)


def test_training_with_packed_documents(tmp_path):
    data = tmp_path / "docs.txt"
    data.write_bytes(b"".join(b"document %d says hello.\n\n" % i for i in range(400)))
    log = train(TrainConfig(model="fsn", params="30k", data=str(data), steps=6, batch_size=4, seq_len=32,
                            eval_windows=2, eval_every=6, progress=False, pack_documents="\\n\\n",
                            model_overrides={"n_layers": 2}, out=str(tmp_path / "run")))
    assert len(log["train"]) == 6 and all(r["loss"] == r["loss"] for r in log["train"])
    assert log["train_config"]["pack_documents"] == "\\n\\n"


def test_pack_documents_is_refused_for_the_transformer_and_when_empty(tmp_path, capsys):
    with pytest.raises(ValueError, match="transformer"):
        validate(TrainConfig(model="transformer", pack_documents="\\n"))
    with pytest.raises(ValueError, match="non-empty"):
        validate(TrainConfig(pack_documents=""))
    with pytest.raises(SystemExit) as stop:
        main(["--model", "transformer", "--pack-documents", "\\n", "--out", str(tmp_path / "r")])
    assert stop.value.code == 2
    assert "pack_documents" in capsys.readouterr().err
