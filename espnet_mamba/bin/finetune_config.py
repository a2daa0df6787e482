"""Write the ASR training config that fine-tunes a pretrained Mamba-HuBERT.

    python -m espnet_mamba.bin.finetune_config --asr_config conf/train_asr.yaml \
        --pretrained ../ssl1/packed/model.zip --out exp/asr/train_config.yaml --unpack_dir exp/pretrained

See :mod:`espnet_mamba.finetuning`: the SSL model's encoder_conf goes into the config and
``init_param`` points at its weights, so the trained ASR model needs no SSL file.
"""

import argparse
import sys

from espnet_mamba.finetuning import write_finetune_config


def main(cmd=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--asr_config", required=True, help="ASR training config (encoder: mamba_hubert)")
    parser.add_argument("--pretrained", required=True, help="packed SSL zip, SSL exp dir, or SSL .pth")
    parser.add_argument("--out", required=True, help="the fine-tuning config to write")
    parser.add_argument("--unpack_dir", required=True, help="where a packed zip is unpacked")
    args = parser.parse_args(cmd)
    try:
        print(write_finetune_config(args.asr_config, args.pretrained, args.out, args.unpack_dir))
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"finetune_config: {error}")


if __name__ == "__main__":
    main()
