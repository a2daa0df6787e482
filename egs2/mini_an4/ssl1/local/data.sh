#!/usr/bin/env bash
# mini_an4 from the archive inside the espnet wheel -> data/{train,dev,test} (Kaldi style).
set -euo pipefail
archive=$(python -c 'import egs3.mini_an4, pathlib; print(pathlib.Path(egs3.mini_an4.__file__).parent / "esp2_asr" / "downloads.tar.gz")')
python local/prepare_mini_an4.py --archive "${archive}" --download_dir downloads --data_dir data
