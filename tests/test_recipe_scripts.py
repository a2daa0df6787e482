"""The shell helpers every recipe sources (egs2/TEMPLATE/utils/stage_funcs.sh): the check of
--stage/--stop_stage, the .done markers with their settings, and packing under a hidden name."""

import subprocess
from pathlib import Path

import pytest

STAGE_FUNCS = Path(__file__).resolve().parents[1] / "egs2/TEMPLATE/utils/stage_funcs.sh"


def bash(script: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", f"set -euo pipefail; . '{STAGE_FUNCS}'; {script}"], cwd=cwd,
                          capture_output=True, text=True)  # fmt: skip


@pytest.mark.parametrize("stage, stop_stage", [("5a", "8"), ("", "8"), ("1", "x")])
def test_a_stage_that_is_not_a_number_stops_the_recipe(tmp_path, stage, stop_stage):
    """Else every `[ ${stage} -le N ]` fails inside its `if`, nothing runs, and the recipe exits 0."""
    result = bash(f"stage='{stage}'; stop_stage='{stop_stage}'; check_stages; echo ran", tmp_path)
    assert result.returncode == 1 and "ran" not in result.stdout
    assert "--stage and --stop_stage must be stage numbers" in result.stderr
    assert bash("stage=3; stop_stage=10; check_stages; echo ran", tmp_path).stdout == "ran\n"


def test_done_marks_hold_the_settings_their_stage_ran_with(tmp_path):
    script = """mark_done data 'docs 5'
    done_mark data 'docs 5' && echo same
    done_mark data 'docs 10' || echo other
    mark_done exp; done_mark exp && echo plain"""
    assert bash(script, tmp_path).stdout.split() == ["same", "other", "plain"]


def test_a_pack_cut_short_leaves_no_zip_under_the_final_name(tmp_path):
    """espnet2.bin.pack writes its zip in place: a failure mid-pack must not leave a zip that a
    re-run takes as finished, nor one that `packed/*.zip` finds."""
    (tmp_path / "packed").mkdir()
    fake_pack = 'python() { echo partial > "${@: -1}"; [ "${FAIL}" = 0 ]; }'
    failed = bash(f"{fake_pack}; FAIL=1 pack_zip asr packed/model.zip --asr_train_config c.yaml", tmp_path)
    assert failed.returncode != 0 and not (tmp_path / "packed/model.zip").exists()
    assert bash("for zip in packed/*.zip; do [ -f \"${zip}\" ] && echo found; done; true", tmp_path).stdout == ""
    assert bash(f"{fake_pack}; FAIL=0 pack_zip asr packed/model.zip", tmp_path).returncode == 0
    assert (tmp_path / "packed/model.zip").read_text() == "partial\n"
    assert sorted(p.name for p in (tmp_path / "packed").iterdir()) == ["model.zip"]  # the partial one renamed
