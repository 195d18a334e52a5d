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
    (block,) = _python_blocks(ROOT / "fsn_kernels/frustrated_attention/README.md", "## Packed sequences")
    namespace = {}
    exec(compile(block, "op README (packed sequences)", "exec"), namespace)
    assert tuple(namespace["out"].shape) == (1, 1024, 4, 16)


STUDIES = ROOT / "fsn_studies" / "results"


@pytest.mark.parametrize("study,n_rows", [("250k/STUDY-250k.md", 67), ("prose-250k/STUDY-prose-250k.md", 64),
                                          ("1M/STUDY-1M.md", 42), ("token-shift/STUDY-token-shift.md", 23)])
def test_each_study_trial_table_matches_its_result_files(study, n_rows):
    """Each row of a study's trial table is a run of the result file it links to."""
    import json

    from fsn_studies.records import final_val

    doc = STUDIES / study
    text = doc.read_text(encoding="utf-8")
    rows = re.findall(r"^\| (fsn|fsn-meanfield|transformer) \| [^|]+ \| ([\d.]+) \| (\d) \| ([\d.]+) \| ([\d,]+) \| "
                      r"\[[\w-]+\]\(((?:\.\./[\w-]+/)?[\w.-]+)\.md\) \|$", text, flags=re.M)
    assert len(rows) == n_rows
    for model, lr, seed, bpb, tokens, stem in rows:
        runs = json.loads((doc.parent / f"{stem}.json").read_text(encoding="utf-8"))["runs"]
        assert any(r["model"] == model and r["seed"] == int(seed) and r["lr"] == float(lr)
                   and f"{final_val(r):.4f}" == bpb and r["tokens"] == int(tokens.replace(",", ""))
                   for r in runs), (model, lr, seed, bpb, stem)
