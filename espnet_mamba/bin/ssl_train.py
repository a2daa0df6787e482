"""HuBERT-style pretraining through ESPnet's SSL task, with ``mamba_hubert`` registered.

    python -m espnet_mamba.bin.ssl_train --config conf/train_ssl.yaml ...

Takes every option of ``python -m espnet2.bin.ssl_train``.
"""

from espnet_mamba.espnet.tasks import MambaSSLTask


def main(cmd=None):
    MambaSSLTask.main(cmd=cmd)


if __name__ == "__main__":
    main()
