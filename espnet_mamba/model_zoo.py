"""Publishing a packed ESPnet model (zip from ``espnet2.bin.pack``) on the Hugging Face Hub.

The zip is unpacked into a folder that keeps its layout (meta.yaml, exp/.../config.yaml, the
.pth, options), the model card (a README.md packed as an option) is copied to the folder's
root, and the folder goes up with ``HfApi.upload_folder``. ESPnet's model zoo reads such a
repository back with ``Speech2Text.from_pretrained("user/name")``.
"""

import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Optional, Union


class UploadError(RuntimeError):
    """The upload did not happen; the message says why and what to check."""


def stage_packed(packed: Union[str, Path], folder: Union[str, Path]) -> Path:
    """Unpack ``packed`` into ``folder`` with the model card as ``folder/README.md``."""
    packed, folder = Path(packed), Path(folder)
    if not zipfile.is_zipfile(packed):
        raise ValueError(f"{packed} is not a zip made by espnet2.bin.pack")
    with zipfile.ZipFile(packed) as archive:
        names = archive.namelist()
        if "meta.yaml" not in names:
            raise ValueError(f"{packed} has no meta.yaml: not made by espnet2.bin.pack")
        archive.extractall(folder)
    cards = [n for n in names if Path(n).name == "README.md"]
    if not cards:
        raise ValueError(f"{packed} has no model card (README.md packed with --option)")
    if cards[0] != "README.md":
        shutil.copyfile(folder / cards[0], folder / "README.md")
    return folder


def upload_packed(packed: Union[str, Path], repo_id: str, token: Optional[str] = None, private: bool = False) -> str:
    """Create ``repo_id`` (if needed) and upload the unpacked model; returns the commit URL.

    Raises ValueError for a bad zip or repo id, UploadError when the Hub cannot be reached or
    refuses (no network, no token, no permission).
    """
    from huggingface_hub import HfApi

    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"--hf_repo must look like user/name, got {repo_id!r}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = stage_packed(packed, Path(tmp) / "model")
        api = HfApi(token=token)
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            commit = api.upload_folder(
                repo_id=repo_id, folder_path=folder, commit_message=f"Upload {Path(packed).name}"
            )
        except Exception as error:  # the Hub client raises transport, HTTP and auth errors of many types
            raise UploadError(
                f"could not upload {packed} to https://huggingface.co/{repo_id}: "
                f"{type(error).__name__}: {error}. Needs network access to huggingface.co and a token "
                "with write access (`hf auth login` or HF_TOKEN)."
            ) from error
    return str(getattr(commit, "commit_url", commit))
