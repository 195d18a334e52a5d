"""``fsn-export CHECKPOINT DIR``: an fsn-train checkpoint as a Hugging Face model directory.

The directory holds ``config.json`` (model_type "fsn"), ``model.safetensors`` and a model
card ``README.md`` with the model and training configs and the validation bits per byte
recorded in the checkpoint's log. Load it with ``AutoModelForCausalLM.from_pretrained(DIR)``
after ``import fsn_model.hf``. Needs the ``hf`` extra (transformers).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from .checkpoint import load_model
from .cli import OneLineParser, run_cli
from .fsn import FSNLM


def export(checkpoint: str, out_dir: str, overwrite: bool = False) -> Path:
    """Write the FSN model of ``checkpoint`` as an HF model directory ``out_dir``; returns it.

    Raises:
        FileNotFoundError: no checkpoint.
        ValueError: a refused or invalid checkpoint, a transformer checkpoint (only FSN
            models are exported), or ``out_dir`` not empty (without ``overwrite``).
        ImportError: transformers is not installed.
    """
    from .hf import FSNForCausalLM, FSNHFConfig

    model, ckpt = load_model(checkpoint)
    if not isinstance(model, FSNLM):
        raise ValueError(f"{checkpoint} holds a {ckpt['model_config'].get('name')!r} model; fsn-export writes FSN "
                         f"models (fsn, fsn-meanfield) only")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"DIR {out_dir} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"DIR {out_dir} is not empty (pass --overwrite to write into it)")
    hf = FSNForCausalLM(FSNHFConfig.from_fsn_config(model.config))
    hf.fsn.load_state_dict(model.state_dict())
    hf.save_pretrained(str(out))
    (out / "README.md").write_text(model_card(ckpt, checkpoint), encoding="utf-8")
    return out


def val_bits_per_byte(ckpt: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The last validation record of the checkpoint's log: ``{"step", "bpb"}``, or None."""
    records = ckpt.get("log", {}).get("val") or []
    return dict(records[-1]) if records else None


def model_card(ckpt: Dict[str, Any], checkpoint: str) -> str:
    """The README.md of an exported model: what it is, how to load it, its val bits/byte,
    model and training configs (from the checkpoint)."""
    mc, tc, log = ckpt["model_config"], ckpt.get("train_config", {}), ckpt.get("log", {})
    val = val_bits_per_byte(ckpt)
    corpus = ckpt.get("corpus", {})
    if val is not None:
        val_line = (f"**{val['bpb']:.4f} val bits/byte** at step {val['step']} ({tc.get('eval_windows', '?')} "
                    f"validation windows of {tc.get('seq_len', '?')} bytes, as recorded by fsn-train)")
    else:
        val_line = "no validation bits/byte recorded in the checkpoint"
    return f"""---
library_name: transformers
tags:
- fsn
- byte-level
---

# {mc.get('name', 'fsn')}: a Frustrated Synchronization Network byte LM

Exported by `fsn-export` from `{Path(checkpoint).name}` (step {ckpt.get('step', '?')}, \
{log.get('params', '?')} parameters, corpus {corpus.get('name', '?')} sha256 {str(corpus.get('sha256', '?'))[:12]}).

{val_line}.

Token ids are bytes (0..255): encode text with `list(text.encode("utf-8"))`.

```python
import torch
import fsn_model.hf  # registers model_type "fsn" with AutoModelForCausalLM
from transformers import AutoModelForCausalLM

model = AutoModelForCausalLM.from_pretrained("path/to/this/directory")
ids = torch.tensor([list("def ".encode())])
out = model.generate(ids, max_new_tokens=64, do_sample=True, top_k=20)  # decodes through the phase cache
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


def _main(argv: Sequence[str]) -> int:
    p = OneLineParser(prog="fsn-export", description="Write an fsn-train checkpoint as a Hugging Face model "
                      "directory (config.json, model.safetensors, README.md model card).",
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", help="a checkpoint.pt written by fsn-train (an FSN model)")
    p.add_argument("dir", help="output directory (created; must be empty unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty directory")
    a = p.parse_args(argv)
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise ValueError('fsn-export needs transformers: pip install -e ".[hf]"') from None
    out = export(a.checkpoint, a.dir, a.overwrite)
    print(f"fsn-export: wrote {out} (load it with AutoModelForCausalLM.from_pretrained after import fsn_model.hf)")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console entry point ``fsn-export``."""
    return run_cli("fsn-export", _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
