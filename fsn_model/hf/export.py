"""``fsn-export CHECKPOINT DIR``: an fsn-train checkpoint as a Hugging Face model directory.

The directory holds ``config.json``, ``model.safetensors`` and a model card ``README.md``
with the model and training configs and the validation bits per byte recorded in the
checkpoint's log. An FSN checkpoint becomes model_type "fsn" (load it with
``AutoModelForCausalLM.from_pretrained(DIR)`` after ``import fsn_model.hf``); a transformer
checkpoint becomes the equivalent ``LlamaForCausalLM`` (same RoPE, SwiGLU, RMSNorm and
untied head; logits equal to float rounding). Needs the ``hf`` extra (transformers).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from ..checkpoint import load_model
from ..cli import OneLineParser, run_cli
from ..fsn import FSNLM
from ..transformer import TransformerLM


def export(checkpoint: str, out_dir: str, overwrite: bool = False) -> Path:
    """Write the model of ``checkpoint`` as an HF model directory ``out_dir``; returns it.

    Raises:
        FileNotFoundError: no checkpoint.
        ValueError: a refused or invalid checkpoint, or ``out_dir`` not empty (without
            ``overwrite``).
        ImportError: transformers is not installed.
    """
    model, ckpt = load_model(checkpoint)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"DIR {out_dir} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"DIR {out_dir} is not empty (pass --overwrite to write into it)")
    hf = to_hf(model)
    hf.save_pretrained(str(out))
    (out / "README.md").write_text(model_card(ckpt, checkpoint, type(hf).__name__), encoding="utf-8")
    return out


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
        title, load = "a Frustrated Synchronization Network byte LM", (
            'import fsn_model.hf  # registers model_type "fsn" with AutoModelForCausalLM\n')
        how = "decodes through the phase cache"
    else:
        title, load, how = f"the fsn_model transformer baseline as a {architecture}", "", "decodes through a KV cache"
    return f"""---
library_name: transformers
tags:
- fsn
- byte-level
---

# {mc.get('name', 'fsn')}: {title}

Exported by `fsn-export` from `{Path(checkpoint).name}` ({origin}).

{val_line}.

Token ids are bytes (0..255): encode text with `list(text.encode("utf-8"))`.

```python
import torch
{load}from transformers import AutoModelForCausalLM

model = AutoModelForCausalLM.from_pretrained("path/to/this/directory")
ids = torch.tensor([list("def ".encode())])
out = model.generate(ids, max_new_tokens=64, do_sample=True, top_k=20)  # {how}
print(bytes(out[0].tolist()).decode("utf-8", errors="replace"))
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
