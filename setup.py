"""espnet-mamba: Mamba-HuBERT for ESPnet and s3prl."""

from setuptools import setup

setup(
    name="espnet-mamba",
    version="0.1.0",
    description="Mamba-HuBERT: Mamba-based speech self-supervised models as an ESPnet/s3prl plugin",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.12,<3.13",
    packages=[
        "espnet_mamba",
        "espnet_mamba.ops",
        "espnet_mamba.nn",
        "espnet_mamba.espnet",
        "espnet_mamba.bin",
        "espnet_mamba.analysis",
        "espnet_mamba.presets",
        "s3prl_upstream",
    ],
    package_data={"espnet_mamba.presets": ["*.yaml"]},
    install_requires=[
        "torch==2.11.0",
        "torchaudio==2.11.0",
        "espnet==202611",
        "espnet_model_zoo",
        "s3prl==0.4.18",
        "tensorboard",
        "tensorboardX",
        "scikit-learn",
        "jiwer",
        "matplotlib",
        "PyYAML",
        # s3prl's SUPERB downstreams import these without declaring them
        "editdistance",
        "dtw-python",
        "lxml",
        "h5py",
        "sox",
    ],
    extras_require={
        "cuda": ["mamba-ssm==2.3.2.post1", "causal-conv1d==1.7.0"],
        "test": ["pytest"],
    },
)
