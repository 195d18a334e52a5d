"""The op package's map: its docstring and the README beside it name every module, and
every tile configuration comes from ``tile_configs`` in one representation."""
import pkgutil
import sys
from pathlib import Path

import fsn_kernels  # noqa: F401  (the package; its attribute of the same name is the function)
from fsn_kernels.frustrated_attention import tile_configs

PACKAGE = sys.modules["fsn_kernels.frustrated_attention"]
MODULES = sorted(m.name for m in pkgutil.iter_modules(PACKAGE.__path__))


def test_docstring_and_readme_name_every_module():
    readme = (Path(PACKAGE.__file__).parent / "README.md").read_text()
    file_map = readme[readme.index("| layer | files |"):readme.index("## How it runs")]
    assert [m for m in MODULES if f"``{m}``" not in PACKAGE.__doc__] == []
    assert [m for m in MODULES if f"`{m}.py`" not in file_map] == []


def test_every_tile_is_a_tile_config():
    for block_d in (16, 32, 64, 128):
        for nh_p in (1, 2, 4, 8):
            tiles = [tile_configs.token_config(block_d, nh_p), tile_configs.decode_split_config(block_d, nh_p),
                     tile_configs.decode_combine_config(block_d, nh_p)]
            for dot in (0, 1, 2):
                tiles += tile_configs.forward_configs(block_d, nh_p, dot)
                tiles += tile_configs.backward_kv_configs(block_d, nh_p, dot)
                tiles += tile_configs.backward_q_configs(block_d, nh_p, dot)
            assert all(isinstance(t, tile_configs.TileConfig) for t in tiles)
            assert all(t.num_warps in (2, 4, 8) and t.num_stages in (1, 2, 3) for t in tiles)
