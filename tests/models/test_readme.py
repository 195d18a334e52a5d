"""The READMEs' Python snippets that need no GPU and write no files run as written."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _python_blocks(path: Path, after_heading: str):
    """The ```python blocks of ``path`` in the section that starts at ``after_heading``."""
    text = path.read_text(encoding="utf-8")
    start = text.index(after_heading)
    end = text.find("\n#", start + len(after_heading))
    section = text[start: end if end > 0 else len(text)]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


@pytest.mark.parametrize("path,heading", [("README.md", "### Drop-in layer"), ("fsn_model/README.md", "## Layers")])
def test_the_drop_in_layer_snippet_runs(path, heading):
    (block,) = _python_blocks(ROOT / path, heading)
    namespace = {}
    exec(compile(block, f"{path} ({heading})", "exec"), namespace)
    result = namespace.get("h", namespace.get("theta"))
    assert tuple(result.shape) == (2, 16, 256)


@pytest.mark.parametrize("path,heading", [("README.md", "### Decoding"),
                                          ("fsn_kernels/frustrated_attention/README.md", "## Decoding")])
def test_the_decoding_snippets_run(path, heading):
    """The decoding examples (model-level and op-level) run and assert what they claim."""
    (block,) = _python_blocks(ROOT / path, heading)
    exec(compile(block, f"{path} ({heading})", "exec"), {})


def test_the_packed_sequences_snippet_runs():
    """The packed-sequences example runs and its own equality check holds."""
    (block,) = _python_blocks(ROOT / "README.md", "### Packed variable-length sequences")
    namespace = {}
    exec(compile(block, "README.md (packed sequences)", "exec"), namespace)
    assert tuple(namespace["dtheta"].shape) == (1, 1024, 4, 16)
