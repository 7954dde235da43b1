"""The CLI: estimate writes loadable outputs and a report; bad input exits 1 with a message."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from scipy.io import loadmat
from typer.testing import CliRunner

from kgengine import __version__
from kgengine.cli import app
from kgengine.kernel import principal_axes
from kgengine.plotting import kernel_to_rgb

runner = CliRunner()


@pytest.fixture()
def lr_png(tmp_path, sample_hr):
    path = tmp_path / "in" / "photo.png"
    path.parent.mkdir()
    Image.fromarray((sample_hr[:120, :140] * 255).round().astype(np.uint8)).save(path)
    return path


def test_version_and_help():
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"kgengine {__version__}"
    res = runner.invoke(app, ["estimate", "--help"])
    assert res.exit_code == 0 and "--x4" in res.output and "--iters" in res.output


def test_estimate_writes_outputs_that_load_back(tmp_path, lr_png):
    out = tmp_path / "out"
    res = runner.invoke(app, ["estimate", str(lr_png), "-o", str(out), "--x4", "--iters", "12",
                              "--seed", "4", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    k2 = np.load(out / "photo_kernel_x2.npy")
    k4 = np.load(out / "photo_kernel_x4.npy")
    assert k2.shape == (13, 13) and k4.shape == (37, 37)
    assert k2.sum() == pytest.approx(1.0) and k4.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(loadmat(out / "photo_kernel_x2.mat")["Kernel"], k2)
    np.testing.assert_allclose(loadmat(out / "photo_kernel_x4.mat")["Kernel"], k4)
    png = np.asarray(Image.open(out / "photo_kernel.png"))
    assert png.shape == (192 + 30, 2 * 192, 3)  # x2 and x4 side by side, captions under them
    x2_tile = Image.fromarray(kernel_to_rgb(k2, 192 // 13)).resize((192, 192), Image.NEAREST)
    np.testing.assert_array_equal(png[:192, :192], np.asarray(x2_tile))
    assert (png[192:, :192] < 128).any() and (png[192:, 192:] < 128).any()  # captions drawn
    g = np.load(out / "photo_generator.npz")
    assert [g[f"w{i}"].shape for i in range(6)][0] == (64, 1, 7, 7)
    report = json.loads((out / "photo_report.json").read_text())
    for key in ("config", "seed", "environment", "device", "wall_s", "ms_per_iter",
                "final_losses", "kernel_x2", "kernel_x4", "iters"):
        assert key in report, key
    assert report["seed"] == 4 and report["iters"] == 12
    assert report["kernel_x2"]["size"] == [13, 13]
    assert report["kernel_x2"]["sum"] == pytest.approx(1.0)
    assert report["kernel_x2"]["center_of_mass"] == pytest.approx([6.0, 6.0], abs=0.05)
    v1, v2, theta = principal_axes(k2)  # the report describes the saved kernel
    assert report["kernel_x2"]["axes"] == pytest.approx(
        {"var_long": v1, "var_short": v2, "theta_deg": np.degrees(theta)})
    assert set(report["final_losses"]) >= {"g_gan", "d", "bicubic", "sum2one", "sparse"}
    assert not list(out.glob("*.tmp"))


def test_estimate_resumes_and_skips_done(tmp_path, lr_png):
    out = tmp_path / "out"
    args = ["estimate", str(lr_png), "-o", str(out), "--iters", "4", "--device", "cpu"]
    assert runner.invoke(app, args).exit_code == 0
    mtime = (out / "photo_kernel_x2.npy").stat().st_mtime_ns
    res = runner.invoke(app, args)
    assert res.exit_code == 0 and "skip" in res.output
    assert (out / "photo_kernel_x2.npy").stat().st_mtime_ns == mtime
    # a report from before 0.8 (no restart_iters in its config) is still the same settings
    path = out / "photo_report.json"
    report = json.loads(path.read_text())
    del report["config"]["restart_iters"]
    path.write_text(json.dumps(report))
    assert "skip" in runner.invoke(app, args).output
    res = runner.invoke(app, [*args, "--restarts", "2"])
    assert res.exit_code == 0 and "redone" in res.output and "restarts" in res.output


def test_estimate_redoes_a_report_from_before_the_elongation_shrink(tmp_path, lr_png):
    # a 0.8 output kept its kernel's elongation (no elongation_power in its config): 0.9's
    # saved kernel differs, so the rerun redoes it and says why
    out = tmp_path / "out"
    args = ["estimate", str(lr_png), "-o", str(out), "--iters", "4", "--device", "cpu"]
    assert runner.invoke(app, args).exit_code == 0
    path = out / "photo_report.json"
    report = json.loads(path.read_text())
    assert report["config"]["elongation_power"] == 0.4
    del report["config"]["elongation_power"]
    path.write_text(json.dumps(report))
    res = runner.invoke(app, args)
    assert res.exit_code == 0 and "redone" in res.output and "elongation_power" in res.output


def test_estimate_redoes_a_report_from_before_the_width_calibration(tmp_path, lr_png):
    # a 0.9.3 output kept its kernel's width (no width_calibration in its config): 0.9.4's
    # saved kernel differs, so the rerun redoes it and says why; asking for the old
    # behaviour keeps it
    out = tmp_path / "out"
    args = ["estimate", str(lr_png), "-o", str(out), "--iters", "4", "--device", "cpu"]
    assert runner.invoke(app, args).exit_code == 0
    path = out / "photo_report.json"
    report = json.loads(path.read_text())
    assert report["config"]["width_calibration"] is True and report["width"]["prior"] == 0.3
    del report["config"]["width_calibration"], report["config"]["width_prior"]
    path.write_text(json.dumps(report))
    old = runner.invoke(app, [*args, "--set", "width_calibration=false"])
    assert old.exit_code == 0 and "skip" in old.output, old.output
    res = runner.invoke(app, args)
    assert res.exit_code == 0 and "redone" in res.output
    assert "config.width_calibration (stored False, asked True)" in res.output


@pytest.mark.parametrize(("key", "legacy", "now", "flag"), [
    ("elongation_choice", False, True, "elongation_choice=false"),  # 0.9.4: the shrunk kernel
    ("spectral_mix", 0.0, 0.5, "spectral_mix=0"),  # 0.9.5: no spectral mix
    ("spectral_confidence", False, True, "spectral_confidence=false"),  # 0.9.6's confidence
    ("width_refine", False, True, "width_refine=false"),  # 0.9.7: the grid's point
    ("width_release", False, True, "width_release=false"),  # 0.9.9: the full pull
    ("clean_release", False, True, "clean_release=false"),  # 0.9.10: the clean-up's fixed n
])
def test_estimate_redoes_a_report_from_before_a_setting(tmp_path, lr_png, key, legacy, now, flag):
    # an output of an older version has no such key in its config: it is redone, naming the
    # setting; asking for the older behaviour keeps it
    out = tmp_path / "out"
    args = ["estimate", str(lr_png), "-o", str(out), "--iters", "4", "--device", "cpu"]
    assert runner.invoke(app, args).exit_code == 0
    path = out / "photo_report.json"
    report = json.loads(path.read_text())
    assert report["config"][key] == now
    assert report["width"]["elongation_power"] in (0.4, 1.0)
    assert report["spectral"]["weight"] == 0.5 and report["confidence"] is not None
    del report["config"][key]
    path.write_text(json.dumps(report))
    old = runner.invoke(app, [*args, "--set", flag])
    assert old.exit_code == 0 and "skip" in old.output, old.output
    res = runner.invoke(app, args)
    assert res.exit_code == 0 and "redone" in res.output
    assert f"config.{key} (stored {legacy}, asked {now})" in res.output


def test_estimate_redoes_restarts_from_before_the_restarts_clean_up(tmp_path, lr_png):
    # before 0.9.3 each restart was cleaned with n_filtering (no restart_n_filtering in the
    # config): a restarts output is redone, naming it; a one-run output does not depend on it
    out = tmp_path / "out"
    base = ["estimate", str(lr_png), "-o", str(out), "--iters", "4", "--device", "cpu"]
    path = out / "photo_report.json"
    for extra, kept in (([], True), (["--restarts", "2"], False)):
        assert runner.invoke(app, [*base, *extra]).exit_code == 0
        report = json.loads(path.read_text())
        assert report["config"]["restart_n_filtering"] == 70
        del report["config"]["restart_n_filtering"]
        path.write_text(json.dumps(report))
        res = runner.invoke(app, [*base, *extra])
        assert res.exit_code == 0
        assert ("skip" in res.output) == kept, res.output
        assert ("config.restart_n_filtering (stored 50, asked 70)" in res.output) != kept


def test_bad_files_are_reported_and_skipped(tmp_path, lr_png):
    bad = tmp_path / "in" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    tiny = tmp_path / "in" / "tiny.png"
    Image.new("RGB", (40, 30)).save(tiny)
    out = tmp_path / "out"
    res = runner.invoke(app, ["estimate", str(bad), str(tiny), str(lr_png), "-o", str(out),
                              "--iters", "4", "--device", "cpu"])
    assert res.exit_code == 1
    assert f"error: {bad}:" in res.output
    assert f"error: {tiny}: image is 40x30, too small" in res.output
    assert "2 of 3 image(s) failed" in res.output
    assert (out / "photo_kernel_x2.npy").exists()  # the good one still finished


def test_bad_options_exit_1_with_message(tmp_path, lr_png):
    res = runner.invoke(app, ["estimate", str(lr_png), "-o", str(tmp_path), "--set", "nope=1"])
    assert res.exit_code == 1 and "unknown config key 'nope'" in res.output
    res = runner.invoke(app, ["estimate", str(lr_png), "-o", str(tmp_path), "--set", "lr_g=abc"])
    assert res.exit_code == 1 and "lr_g: expected float" in res.output
    for command in (["estimate", str(lr_png)], ["eval", str(tmp_path)]):
        res = runner.invoke(app, [*command, "-o", str(tmp_path / "o"), "--authors-defects",
                                  "--fix-defects"])
        assert res.exit_code == 1, res.output
        assert "--authors-defects and --fix-defects ask for opposite things" in res.output
        assert not (tmp_path / "o").exists()


def test_info_reports_backends():
    res = runner.invoke(app, ["info"])
    assert res.exit_code == 0, res.output
    for word in ("torch:", "onnxruntime:", "numba:", "cupy:", "cuda"):
        assert word in res.output
    assert "networks (cpu): numba" in res.output  # the compiled G/D passes on this CPU
    assert "cuda graph of the step: off (KGENGINE_CUDA_GRAPH=1 captures it on CUDA)" in res.output


def test_python_m_entry_point():
    res = subprocess.run([sys.executable, "-m", "kgengine", "--version"], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == f"kgengine {__version__}"


def test_estimate_restarts_writes_the_combined_kernel_and_confidence(tmp_path, lr_png):
    from kgengine.confidence import confidence_of
    from kgengine.consensus import combine
    from kgengine.kernel import shrink_elongation
    from kgengine.width import scale_kernel

    out = tmp_path / "out"
    res = runner.invoke(app, ["estimate", str(lr_png), "-o", str(out), "--iters", "6",
                              "--restarts", "3", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "photo_report.json").read_text())
    assert report["restarts"]["k"] == 3 and len(report["restarts"]["kernels"]) == 3
    expected = combine([np.asarray(k) for k in report["restarts"]["kernels"]])
    # the last step scales the width by the factor the image chose (report["width"])
    np.testing.assert_allclose(
        np.load(out / "photo_kernel_x2.npy"),
        scale_kernel(shrink_elongation(expected.kernel, 0.4), report["width"]["scale"]),
        atol=1e-12)
    # the restarts' agreement is in the report; the confidence is KernelGAN's kernel against
    # the spectrum's Gaussian (kgengine.confidence), printed
    assert report["restarts"]["agreement"] == pytest.approx(expected.confidence)
    terms = report["confidence_terms"]  # 6 iterations leave G's kernel at about 0 (collapsed)
    assert report["confidence"] == (0.0 if report["collapsed"] else
                                    confidence_of(terms["distance"], terms["elongation"]))
    assert f"confidence {report['confidence']:.3f}" in res.output
    bad = runner.invoke(app, ["estimate", str(lr_png), "-o", str(out), "--restarts", "0"])
    assert bad.exit_code == 1 and "error: --restarts must be at least 1" in bad.output


def test_estimate_says_when_it_compiles_the_kernels_first(tmp_path, lr_png, monkeypatch):
    import kgengine.numba_util as nu

    args = ["estimate", str(lr_png), "-o", str(tmp_path / "out"), "--iters", "3"]
    monkeypatch.setattr(nu, "cold_cache", lambda kernel: True)
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "Numba compiles kgengine's kernels" in res.output
    monkeypatch.setattr(nu, "cold_cache", lambda kernel: False)
    res = runner.invoke(app, [*args, "--force"])
    assert res.exit_code == 0 and "Numba compiles" not in res.output


def test_estimate_batches_give_the_single_runs_files(tmp_path, sample_hr):
    """Three images of two sizes, 300 float32 iterations: trained one at a time, in a batch
    of 2 + 1 and of 3, each image's kernels and report figures are the same bytes (on a CPU
    an image's arithmetic does not depend on its batch)."""
    src = tmp_path / "in"
    src.mkdir()
    crops = {"a": sample_hr[:120, :140], "b": sample_hr[40:160, 20:160], "c": sample_hr[:130]}
    for name, crop in crops.items():
        Image.fromarray((crop * 255).round().astype(np.uint8)).save(src / f"{name}.png")
    outs = {}
    for b in (1, 2, 3):
        out = tmp_path / f"b{b}"
        res = runner.invoke(app, ["estimate", *(str(src / f"{n}.png") for n in crops), "-o",
                                  str(out), "--x4", "--iters", "300", "--seed", "2",
                                  "--batch", str(b), "--device", "cpu"])
        assert res.exit_code == 0, res.output
        assert ("a batch of" in res.output) == (b > 1)
        outs[b] = out
    for n in crops:
        reports = [json.loads((outs[b] / f"{n}_report.json").read_text()) for b in outs]
        assert len({r["confidence"] for r in reports}) == 1
        assert [r["batch_size"] for r in reports] == [1, 1 if n == "c" else 2, 3]
        for kind in ("x2", "x4"):
            files = [(outs[b] / f"{n}_kernel_{kind}.npy").read_bytes() for b in outs]
            assert files[0] == files[1] == files[2], (n, kind)


@pytest.mark.parametrize("cold, shown", [(True, "empty: the next training compiles"),
                                         (False, "filled (")])
def test_info_says_whether_the_kernels_are_compiled(monkeypatch, cold, shown):
    import kgengine.numba_util as nu

    monkeypatch.setattr(nu, "cold_cache", lambda kernel: cold)
    res = runner.invoke(app, ["info"])
    assert res.exit_code == 0, res.output
    assert f"  disk cache: {shown}" in res.output


def test_estimate_reads_folders_as_their_image_files(tmp_path, sample_hr):
    """A folder IMAGE is its image files in name order (hidden files, other suffixes and,
    with -r, OUTDIR left out): the same runs, kernel files and outputs as the files listed
    one by one; -r adds the sub-folders; an empty folder is a one-line error."""
    src = tmp_path / "photos"
    (src / "sub").mkdir(parents=True)
    crops = {"a": sample_hr[:120, :140], "b": sample_hr[40:160, 20:160]}
    for name, crop in crops.items():
        Image.fromarray((crop * 255).round().astype(np.uint8)).save(src / f"{name}.png")
    Image.fromarray((sample_hr[:100, :100] * 255).round().astype(np.uint8)).save(
        src / "sub" / "c.png")
    (src / "notes.txt").write_text("not an image")
    (src / ".hidden.png").write_bytes(b"not read")
    common = ["--iters", "40", "--seed", "1", "--device", "cpu"]
    listed, folder = tmp_path / "listed", src / "out"  # OUTDIR inside the folder
    res = runner.invoke(app, ["estimate", str(src / "a.png"), str(src / "b.png"), "-o",
                              str(listed), *common])
    assert res.exit_code == 0, res.output
    # a folder and a file in it: the file once
    res = runner.invoke(app, ["estimate", str(src), str(src / "b.png"), "-o", str(folder),
                              *common])
    assert res.exit_code == 0, res.output
    assert "a batch of 2" in res.output
    assert sorted(p.name for p in folder.glob("*_kernel_x2.npy")) == [
        "a_kernel_x2.npy", "b_kernel_x2.npy"]
    for n in crops:
        assert ((folder / f"{n}_kernel_x2.npy").read_bytes()
                == (listed / f"{n}_kernel_x2.npy").read_bytes())
    # -r: the sub-folder too, not OUTDIR's heat maps (a, b are done: skipped)
    res = runner.invoke(app, ["estimate", str(src), "-r", "-o", str(folder), *common])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in folder.glob("*_kernel_x2.npy")) == [
        "a_kernel_x2.npy", "b_kernel_x2.npy", "c_kernel_x2.npy"]
    assert not list(folder.glob("*_kernel_kernel*"))
    (tmp_path / "empty").mkdir()
    res = runner.invoke(app, ["estimate", str(tmp_path / "empty"), "-o", str(folder)])
    assert res.exit_code == 1
    assert "empty: no image files in this folder (-r also reads its sub-folders)" in res.output
    assert res.output.strip().splitlines()[-1] == "1 of 1 image(s) failed"
