"""The ``transformers`` versions this sub-package supports: the floor check and the name of
the cache argument, which changed within the 5.x releases."""
from __future__ import annotations

import dataclasses
import re

import transformers
from transformers.modeling_outputs import CausalLMOutputWithPast

# The oldest transformers release the tests were run on (setup.py's hf extra says the same).
TRANSFORMERS_FLOOR = "5.0"


def check_version() -> None:
    """ImportError naming the floor when the installed transformers is older."""
    found = tuple(int(x) for x in re.findall(r"\d+", transformers.__version__)[:2])
    if found < tuple(int(x) for x in TRANSFORMERS_FLOOR.split(".")):
        raise ImportError(f"fsn_model.hf needs transformers >= {TRANSFORMERS_FLOOR}, found {transformers.__version__}: "
                          f'pip install -e ".[hf]"')


check_version()

# The name under which this transformers version passes a Cache to forward() and returns
# it in model outputs: "cache" in recent releases, "past_key_values" before.
CACHE_NAME = "cache" if "cache" in {f.name for f in dataclasses.fields(CausalLMOutputWithPast)} else "past_key_values"
