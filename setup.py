from setuptools import find_packages, setup

setup(
    name="fsn",
    version="0.1.0",
    description="Triton kernels and PyTorch models for the Frustrated Synchronization Network",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    # fsn_studies: the study tools (fsn-compare, fsn-sweep); its results/ folder (result files and
    # write-ups) stays in the repository, out of the wheel (no __init__.py there, no package_data)
    packages=find_packages(include=["fsn_kernels", "fsn_kernels.*", "fsn_model", "fsn_model.*", "fsn_studies"]),
    # fsn_cli: the console entry points, light to import (Ctrl-C during start-up is one line)
    py_modules=["fsn_cli"],
    package_data={"fsn_kernels": ["**/*.md"], "fsn_model": ["**/*.md"]},
    python_requires=">=3.9",
    # Floors: triton 3.6, torch 2.11 and transformers 5.0 are tested in CI's second venv
    # (.ci/gpu_stack.sh: the GPU machine's torch, triton and numpy, with the transformers floor:
    # sm_90 compiles, the stock path, models and Hugging Face, the interpreter; aot_check needs
    # triton >= 3.4, whose ASTSource takes constexprs); the main venv tests torch 2.13 and the
    # newest transformers. On a CPU-only machine install torch==2.13.0 (the CPU build) first, as .ci/run
    # does: an unpinned torch pulls a multi-GB CUDA build. Triton < 3.9's interpreter
    # (TRITON_INTERPRET=1, CPU tests) needs numpy < 2.3.
    install_requires=["torch>=2.11", "triton>=3.6", "numpy", "tqdm", "matplotlib"],
    extras_require={"test": ["pytest", "hypothesis", "pytest-benchmark"],
                    "hf": ["transformers>=5.0", "safetensors", "accelerate"]},
    entry_points={
        "console_scripts": [
            "fsn-train=fsn_cli:train",
            "fsn-eval=fsn_cli:evaluate",
            "fsn-generate=fsn_cli:generate",
            "fsn-copy-depth=fsn_cli:copy_depth",
            "fsn-compare=fsn_cli:compare",
            "fsn-sweep=fsn_cli:sweep",
            "fsn-export=fsn_cli:export",
        ]
    },
)
