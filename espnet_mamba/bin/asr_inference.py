"""Offline decoding with ESPnet's ``asr_inference``, with ``encoder: mamba_hubert`` registered.

Takes every option of ``python -m espnet2.bin.asr_inference``.
"""

import espnet_mamba.espnet.tasks  # noqa: F401  (registers mamba_hubert)
from espnet2.bin.asr_inference import main as espnet_main


def main(cmd=None):
    espnet_main(cmd)


if __name__ == "__main__":
    main()
