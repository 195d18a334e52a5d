"""Shared pytest configuration for tests/ and benchmarks/.

Without a CUDA device the real Triton kernels run on the CPU under Triton's
interpreter; TRITON_INTERPRET must be set before triton is imported, so it is decided
here from the device nodes, before torch (which may import triton) is loaded.

The stock path's per-token work runs eagerly in tests (``FSN_STOCK_COMPILE=off`` unless
set): compiling costs tens of seconds per shape family, and the tests that exercise the
compiled form turn it on themselves."""
import os

if "TRITON_INTERPRET" not in os.environ and not os.path.exists("/dev/nvidiactl"):
    os.environ["TRITON_INTERPRET"] = "1"
os.environ.setdefault("FSN_STOCK_COMPILE", "off")

from hypothesis import settings  # noqa: E402

# Few examples, no deadline; derandomized in CI so a CI run is reproducible.
settings.register_profile("ci", max_examples=6, deadline=None, derandomize=True, print_blob=True)
settings.register_profile("dev", max_examples=10, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))
