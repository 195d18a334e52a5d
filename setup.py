from setuptools import find_packages, setup

setup(
    name="fsn",
    version="0.1.0",
    description="Triton kernels and PyTorch models for the Frustrated Synchronization Network",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["fsn_kernels", "fsn_kernels.*", "fsn_model", "fsn_model.*"]),
    package_data={"fsn_kernels": ["**/*.md"], "fsn_model": ["**/*.md"]},
    python_requires=">=3.9",
    # torch is not pinned here: on a CPU-only machine install torch==2.13.0 (the CPU
    # build) first, as .ci/run does; an unpinned torch pulls a multi-GB CUDA build.
    install_requires=["torch>=2.4", "triton>=3.2", "numpy", "tqdm", "matplotlib"],
    extras_require={"test": ["pytest", "hypothesis", "pytest-benchmark"],
                    "hf": ["transformers>=5.0", "safetensors"]},
    entry_points={
        "console_scripts": [
            "fsn-train=fsn_model.train:main",
            "fsn-eval=fsn_model.evaluate:main",
            "fsn-generate=fsn_model.generate:main",
            "fsn-copy-depth=fsn_model.copy_depth:main",
            "fsn-compare=fsn_model.compare:main",
            "fsn-sweep=fsn_model.sweep:main",
            "fsn-export=fsn_model.export:main",
        ]
    },
)
