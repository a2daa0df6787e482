"""Upload a packed ESPnet model to the Hugging Face Hub (only when asked: needs network + token).

    python -m espnet_mamba.bin.hf_upload --packed packed/model.zip --hf_repo user/name [--private]
"""

import argparse
import sys

from espnet_mamba.model_zoo import UploadError, upload_packed


def main(cmd=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packed", required=True, help="zip from espnet2.bin.pack")
    parser.add_argument("--hf_repo", required=True, help="user/name on the Hub")
    parser.add_argument("--private", action="store_true")
    args = parser.parse_args(cmd)
    try:
        print(upload_packed(args.packed, args.hf_repo, private=args.private))
    except (ValueError, UploadError) as error:
        sys.exit(f"hf_upload: {error}")


if __name__ == "__main__":
    main()
