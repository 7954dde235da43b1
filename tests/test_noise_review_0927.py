"""The noise bank and the pipeline's settings (0.9.27's review): every assertion failed
before its fix."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from test_degradation_noise import _photo
from typer.testing import CliRunner

from kgengine.cli import app
from kgengine.degradation import PipelineConfig, load_noise_bank
from kgengine.degradation.noisebank import list_photos
from kgengine.errors import KGEngineError
from kgengine.farm.inputs import expand_inputs


@pytest.fixture()
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(np.round(_photo(i) * 255).astype(np.uint8)).save(folder / f"p{i}.png")
    return folder


def _collect(photos, out, *more: str):
    return CliRunner().invoke(app, ["noise", "collect", str(photos), *more, "-o", str(out),
                                    "--patch", "32", "--min-mean", "30", "--max-mean", "250"])


def test_a_bank_in_the_photo_folder_is_no_input(photos) -> None:
    """``noise collect -o`` the photo folder: degrade, farm and estimate then read
    ``noise_patches.npy`` as an image (and failed it, every run)."""
    assert _collect(photos, photos).exit_code == 0
    assert [p.name for p in expand_inputs([photos])] == ["p0.png", "p1.png"]
    from kgengine.degradation.plan import list_hr_files

    assert [p.name for p in list_hr_files(photos)] == ["p0.png", "p1.png"]


def test_a_damaged_npz_bank_is_one_line(tmp_path) -> None:
    """A truncated ``.npz`` raised ``zipfile.BadZipFile`` through the command (61 lines)."""
    bank = tmp_path / "bank.npz"
    np.savez(bank, patches=np.zeros((2, 8, 8, 3), np.float32))
    bank.write_bytes(bank.read_bytes()[:200])
    with pytest.raises(KGEngineError, match="cannot read noise patches"):
        load_noise_bank(bank)


def test_a_failed_collect_makes_no_folder_and_reads_a_photo_once(photos, tmp_path) -> None:
    """A missing input left an empty ``-o`` folder; a photo named twice (its folder and its
    file) gave it twice the patches."""
    res = _collect(tmp_path / "missing", tmp_path / "out")
    assert res.exit_code == 1 and not (tmp_path / "out").exists()
    assert len(list_photos([photos, photos / "p0.png"])) == 2
    res = _collect(photos, tmp_path / "twice", str(photos / "p0.png"))
    alone = _collect(photos, tmp_path / "once")
    assert res.exit_code == alone.exit_code == 0
    assert load_noise_bank(tmp_path / "twice").fingerprint() == \
        load_noise_bank(tmp_path / "once").fingerprint()


@pytest.mark.parametrize("field,value", [("poisson_peak", (1e-50, 1e-50)),
                                         ("real_scale", (1.0, 4e38))])
def test_settings_that_give_nan_are_refused(field: str, value: tuple) -> None:
    """A peak of 1e-50 rounded to 0 in float32 (0/0: black LR written without a word); a
    real_scale of 3.5e38 gave NaN."""
    with pytest.raises(Exception, match=field):
        PipelineConfig(**{field: value})
