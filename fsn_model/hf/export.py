"""``fsn-export CHECKPOINT DIR``: an fsn-train checkpoint as a Hugging Face model directory.

The directory holds ``config.json``, ``model.safetensors``, the byte-level tokenizer
(``tokenizer_config.json``: :class:`FSNByteTokenizer`, ids = bytes) and a model card
``README.md`` with the model and training configs and the validation bits per byte recorded
in the checkpoint's log. An FSN checkpoint becomes model_type "fsn" (load it with
``AutoModelForCausalLM.from_pretrained(DIR)`` after ``import fsn_model.hf``); a transformer
checkpoint becomes the equivalent ``LlamaForCausalLM`` (same RoPE, SwiGLU, RMSNorm and
untied head; logits equal to float rounding). Needs the ``hf`` extra (transformers).

Everything is checked (checkpoint, log, what the export can express) before anything is
written; the files are written into a temporary directory beside ``DIR`` and moved into
place at the end, so a failed write (a full disk) leaves nothing behind.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from ..checkpoint import load_model
from ..cli import OneLineParser, ReportedOSError, describe_os_error, run_cli
from ..fsn import FSNLM
from ..transformer import TransformerLM


class ExportWriteError(ReportedOSError):
    """The export directory could not be written; one line: the path, the cause, nothing left."""


def export(checkpoint: str, out_dir: str, overwrite: bool = False) -> Path:
    """Write the model of ``checkpoint`` as an HF model directory ``out_dir``; returns it.

    Raises:
        FileNotFoundError: no checkpoint.
        ValueError: a refused or invalid checkpoint (or a malformed log), a model the
            export cannot express, or ``out_dir`` not empty (without ``overwrite``).
        ExportWriteError: a write failed (no space left, permission denied ...); nothing
            of this export is left in or beside ``out_dir``.
        ImportError: transformers is not installed.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"DIR {out_dir} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"DIR {out_dir} is not empty (pass --overwrite to write into it)")
    model, ckpt = load_model(checkpoint)
    check_log(ckpt, checkpoint)
    hf = to_hf(model)
    card = model_card(ckpt, checkpoint, type(hf).__name__)
    from transformers.utils import logging as hf_logging

    from .tokenization_fsn import FSNByteTokenizer

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # one line of output, no progress bars on stderr
    try:
        write_directory(out, lambda tmp: (hf.save_pretrained(str(tmp)), FSNByteTokenizer().save_pretrained(str(tmp)),
                                          (tmp / "README.md").write_text(card, encoding="utf-8")))
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return out


def write_directory(out: Path, write) -> None:
    """``write(tmp)`` into a new temporary directory beside ``out``, then move its files into
    ``out`` (a rename of the whole directory when ``out`` is missing or empty; file by file
    into an existing one). On an OSError the temporary directory is removed and
    :class:`ExportWriteError` names ``out`` and the cause."""
    parent = out.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp", dir=parent))
    except OSError as e:
        raise ExportWriteError(f"cannot write {out}: {describe_os_error(e)}; nothing was written") from None
    try:
        write(tmp)
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        if not out.exists():
            os.replace(tmp, out)
        else:
            for f in sorted(tmp.iterdir()):
                os.replace(f, out / f.name)
    except OSError as e:
        e.filename = e.filename2 = None  # a path inside the temporary directory, removed below
        raise ExportWriteError(f"cannot write {out}: {describe_os_error(e)}; nothing was written") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_log(ckpt: Dict[str, Any], checkpoint: str) -> None:
    """ValueError naming the key when the parts of the checkpoint the model card reads are
    malformed: ``train_config``, ``log``, ``corpus`` dicts (when present), ``log["val"]`` a
    list of ``{"step": int, "bpb": finite number}``."""
    for key in ("model_config", "train_config", "log", "corpus"):
        if key in ckpt and not isinstance(ckpt[key], dict):
            raise ValueError(f"checkpoint {checkpoint}: {key} must be a dict, got {type(ckpt[key]).__name__}")
    records = ckpt.get("log", {}).get("val")
    if records is None:
        return
    if not isinstance(records, list):
        raise ValueError(f"checkpoint {checkpoint}: log['val'] must be a list of validation records, got "
                         f"{type(records).__name__}")
    for i, r in enumerate(records):
        ok = (isinstance(r, dict) and isinstance(r.get("step"), int) and isinstance(r.get("bpb"), (int, float))
              and not isinstance(r.get("bpb"), bool) and math.isfinite(r["bpb"]))
        if not ok:
            raise ValueError(f"checkpoint {checkpoint}: log['val'][{i}] must be {{'step': int, 'bpb': finite "
                             f"number}}, got {r!r:.80}")


def to_hf(model):
    """An :class:`FSNLM` -> ``FSNForCausalLM``; a :class:`TransformerLM` -> ``LlamaForCausalLM``."""
    if isinstance(model, FSNLM):
        from .modeling_fsn import FSNForCausalLM, FSNHFConfig

        hf = FSNForCausalLM(FSNHFConfig.from_fsn_config(model.config))
        hf.fsn.load_state_dict(model.state_dict())
        return hf
    if isinstance(model, TransformerLM):
        return transformer_to_llama(model)
    raise TypeError(f"model must be an FSNLM or a TransformerLM, got {type(model).__name__}")


def transformer_to_llama(model: TransformerLM):
    """The ``LlamaForCausalLM`` equal to ``model`` (float32, eval mode): the fused qkv and
    SwiGLU weights split into Llama's projections, RMSNorm eps the float32 eps that
    ``nn.RMSNorm`` uses by default, RoPE base 10000 in the same half-split layout."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    c = model.config
    if c.token_shift:
        raise ValueError("the transformer was trained with token_shift=true (its MLP reads the previous token), "
                         "which LlamaForCausalLM cannot express; fsn-export refuses it rather than write a "
                         "different model")
    eps = torch.finfo(torch.float32).eps
    cfg = LlamaConfig(vocab_size=c.vocab_size, hidden_size=c.dim, intermediate_size=c.hidden,
                      num_hidden_layers=c.n_layers, num_attention_heads=c.n_heads, num_key_value_heads=c.n_heads,
                      hidden_act="silu", rms_norm_eps=eps, tie_word_embeddings=False, attention_bias=False,
                      mlp_bias=False, bos_token_id=None, eos_token_id=None, pad_token_id=None,
                      rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    for norm in [model.norm] + [n for b in model.blocks for n in (b.norm1, b.norm2)]:
        if norm.eps is not None:
            raise ValueError(f"RMSNorm eps {norm.eps} is not the default this exporter assumes")
    sd = {"model.embed_tokens.weight": model.embed.weight, "model.norm.weight": model.norm.weight,
          "lm_head.weight": model.head.weight}
    for i, b in enumerate(model.blocks):
        q, k, v = b.attn.qkv.weight.chunk(3, dim=0)
        gate, up = b.mlp.w13.weight.chunk(2, dim=0)
        p = f"model.layers.{i}."
        sd.update({p + "input_layernorm.weight": b.norm1.weight, p + "post_attention_layernorm.weight": b.norm2.weight,
                   p + "self_attn.q_proj.weight": q, p + "self_attn.k_proj.weight": k,
                   p + "self_attn.v_proj.weight": v, p + "self_attn.o_proj.weight": b.attn.proj.weight,
                   p + "mlp.gate_proj.weight": gate, p + "mlp.up_proj.weight": up,
                   p + "mlp.down_proj.weight": b.mlp.w2.weight})
    llama = LlamaForCausalLM(cfg)
    llama.load_state_dict({k: v.detach().float().contiguous() for k, v in sd.items()}, strict=True)
    return llama.eval()


def val_bits_per_byte(ckpt: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The last validation record of the checkpoint's log: ``{"step", "bpb"}``, or None."""
    records = ckpt.get("log", {}).get("val") or []
    return dict(records[-1]) if records else None


def model_card(ckpt: Dict[str, Any], checkpoint: str, architecture: str = "FSNForCausalLM") -> str:
    """The README.md of an exported model: what it is, how to load it, its val bits/byte,
    model and training configs (from the checkpoint)."""
    mc, tc, log = ckpt["model_config"], ckpt.get("train_config", {}), ckpt.get("log", {})
    val = val_bits_per_byte(ckpt)
    corpus = ckpt.get("corpus", {})
    origin = (f"step {ckpt.get('step', '?')}, {_thousands(log.get('params', '?'))} parameters, corpus "
              f"{corpus.get('name', '?')} sha256 {str(corpus.get('sha256', '?'))[:12]}")
    if val is not None:
        val_line = (f"**{val['bpb']:.4f} val bits/byte** at step {val['step']} ({tc.get('eval_windows', '?')} "
                    f"validation windows of {tc.get('seq_len', '?')} bytes, as recorded by fsn-train)")
    else:
        val_line = "no validation bits/byte recorded in the checkpoint"
    if architecture == "FSNForCausalLM":
        title, how = "a Frustrated Synchronization Network byte LM", "decodes through the phase cache"
        note = "`import fsn_model.hf` registers model_type \"fsn\" and the byte tokenizer with the Auto classes."
    else:
        title, how = f"the fsn_model transformer baseline as a {architecture}", "decodes through a KV cache"
        note = ("The model loads with transformers alone; the byte tokenizer (`FSNByteTokenizer`) needs "
                "`import fsn_model.hf` (without it, encode with `list(text.encode(\"utf-8\"))`).")
    return f"""---
library_name: transformers
tags:
- fsn
- byte-level
---

# {mc.get('name', 'fsn')}: {title}

Exported by `fsn-export` from `{Path(checkpoint).name}` ({origin}).

{val_line}.

Token ids are bytes (0..255): the tokenizer saved here (`FSNByteTokenizer`) encodes text as
`list(text.encode("utf-8"))` and decodes any bytes back exactly. {note}

```python
import fsn_model.hf
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

tokenizer = AutoTokenizer.from_pretrained("path/to/this/directory")
model = AutoModelForCausalLM.from_pretrained("path/to/this/directory")
ids = tokenizer("def ", return_tensors="pt").input_ids
out = model.generate(ids, max_new_tokens=64, do_sample=True, top_k=20)  # {how}
print(tokenizer.decode(out[0]))
print(pipeline("text-generation", model="path/to/this/directory")("def ", max_new_tokens=64))
```

## Model config

```json
{json.dumps(mc, indent=1)}
```

## Training config

```json
{json.dumps(tc, indent=1)}
```
"""


def _thousands(n: Any) -> str:
    return f"{n:,}" if isinstance(n, int) else str(n)


def _main(argv: Sequence[str]) -> int:
    p = OneLineParser(prog="fsn-export", description="Write an fsn-train checkpoint as a Hugging Face model "
                      "directory (config.json, model.safetensors, README.md model card).",
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", help="a checkpoint.pt written by fsn-train (FSN -> model_type fsn, "
                   "transformer -> Llama)")
    p.add_argument("dir", help="output directory (created; must be empty unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty directory")
    a = p.parse_args(argv)
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise ValueError('fsn-export needs transformers: pip install -e ".[hf]"') from None
    out = export(a.checkpoint, a.dir, a.overwrite)
    print(f"fsn-export: wrote {out} (load it with AutoModelForCausalLM.from_pretrained; for FSN, import "
          f"fsn_model.hf first)")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console entry point ``fsn-export``."""
    return run_cli("fsn-export", _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
