"""ASR training through ESPnet's ASR task, with ``encoder: mamba_hubert`` registered.

    python -m espnet_mamba.bin.asr_train --config conf/train_asr.yaml ...

Takes every option of ``python -m espnet2.bin.asr_train``.
"""

from espnet_mamba.espnet.tasks import MambaASRTask


def main(cmd=None):
    MambaASRTask.main(cmd=cmd)


if __name__ == "__main__":
    main()
