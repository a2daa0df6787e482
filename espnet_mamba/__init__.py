"""Mamba-HuBERT: HuBERT with Mamba selective state-space blocks, for ESPnet and s3prl.

    import espnet_mamba
    espnet_mamba.list_presets()
    model = espnet_mamba.build_model("mamba_base")
    hs, lens = model.extract_features(wavs, wav_lens)
"""

from espnet_mamba.config import ModelConfig, list_presets, load_config
from espnet_mamba.model import MambaHuBERT, MambaHuBERTForPretraining, build_model

__version__ = "0.1.0"
__all__ = ["MambaHuBERT", "MambaHuBERTForPretraining", "ModelConfig", "build_model", "list_presets", "load_config"]
