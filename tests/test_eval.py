"""``kgengine eval``: dataset listing, baselines, scoring, resume, report, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.io import loadmat
from typer.testing import CliRunner

from kgengine.accuracy import (
    BICUBIC,
    ISO,
    EvalSettings,
    ResumeMismatchError,
    RunStore,
    baseline_kernels,
    list_dataset,
    load_gt_kernel,
    make_div2krk_like,
    per_image,
    run_eval,
    summary_table,
)
from kgengine.atomic import save_mat
from kgengine.cli import app
from kgengine.errors import KGEngineError
from kgengine.hooks import JobHooks
from kgengine.kernel import (
    analytic_x4,
    bicubic_taps,
    bicubic_taps_x2,
    center_of_mass,
    gaussian_kernel,
)
from kgengine.metrics import PSNR_CAP

ROW_KEYS = {
    "image", "index", "seed", "method", "kernel_psnr", "aligned_kernel_psnr", "aligned_shift",
    "lr_psnr", "lr_offset", "lr_psnr_ceiling", "kernel_canvas", "wall_s", "ms_per_iter",
    "confidence",
}


class FakeEstimator:
    """Seed 0 returns the true kernel, other seeds a delta (a poor estimate); records calls."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, path, *, x4, iters, seed, device, config):
        self.calls.append(
            {"path": path, "x4": x4, "iters": iters, "seed": seed, "device": device,
             "config": config}
        )
        p = Path(path)
        n = p.stem.split("_")[1]
        gt2 = loadmat(p.parents[1] / "gt_k_x2" / f"kernel_{n}.mat")["Kernel"]
        gt4 = loadmat(p.parents[1] / "gt_k_x4" / f"kernel_{n}.mat")["Kernel"]
        if seed == 0:
            k2, k4 = gt2, gt4
        else:
            k2 = np.zeros((13, 13))
            k2[6, 6] = 1.0
            k4 = analytic_x4(k2)
        return SimpleNamespace(
            kernel_x2=k2, kernel_x4=k4 if x4 else None, report={"ms_per_iter": 2.5}
        )


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, sample_hr) -> Path:
    """A 2-image DIV2KRK-layout set made from 128x120 crops of the sample."""
    from kgengine.imageio import write_png

    hr = tmp_path_factory.mktemp("hr")
    write_png(hr / "a.png", sample_hr[:128, :120])
    write_png(hr / "b.png", sample_hr[150:278, 180:300])
    out = tmp_path_factory.mktemp("ds")
    make_div2krk_like(sorted(hr.glob("*.png")), out, seed=0)
    return out


def strict_json(path: Path) -> dict:
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(path.read_text(), parse_constant=refuse)


# ------------------------------------------------------------------------------ pieces
def test_bicubic_taps_match_the_kernel_module():
    np.testing.assert_allclose(bicubic_taps(2), bicubic_taps_x2(), atol=1e-15)
    t4 = bicubic_taps(4)
    assert t4.shape == (16,) and t4.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(t4, t4[::-1])


@pytest.mark.parametrize("scale, iso_shape, bic_shape", [(2, 13, 8), (4, 37, 16)])
def test_baseline_kernels(scale, iso_shape, bic_shape):
    b = baseline_kernels(scale)
    assert b[ISO].shape == (iso_shape, iso_shape)
    assert b[BICUBIC].shape == (bic_shape, bic_shape)
    for k in b.values():
        assert k.sum() == pytest.approx(1.0)
    c = iso_shape // 2
    assert center_of_mass(b[ISO]) == pytest.approx((c, c))
    # the even bicubic kernel sits half a pixel before the convention centre bic_shape // 2
    assert center_of_mass(b[BICUBIC]) == pytest.approx((bic_shape / 2 - 0.5,) * 2)
    if scale == 2:
        np.testing.assert_allclose(b[ISO], gaussian_kernel(13, 1.3))


def test_list_dataset(dataset, tmp_path):
    imgs = list_dataset(dataset, 2)
    assert [i.name for i in imgs] == ["im_1", "im_2"]
    assert imgs[0].hr_path == dataset / "gt" / "im_1.png"
    assert [i.index for i in list_dataset(dataset, 4, ids=[2])] == [2]
    with pytest.raises(KGEngineError, match=r"ids \[5\]"):
        list_dataset(dataset, 2, ids=[5])
    with pytest.raises(KGEngineError, match="no lr_x2/ folder"):
        list_dataset(tmp_path, 2)
    # DIV2KRK's own HR naming, and no HR at all
    d = tmp_path / "krk"
    shutil.copytree(dataset, d)
    (d / "gt" / "im_1.png").rename(d / "gt" / "img_1_gt.png")
    (d / "gt" / "im_2.png").unlink()
    imgs = list_dataset(d, 2)
    assert imgs[0].hr_path == d / "gt" / "img_1_gt.png"
    assert imgs[1].hr_path is None


def test_load_gt_kernel_errors(tmp_path):
    save_mat(tmp_path / "k.mat", {"Other": np.ones((3, 3))})
    with pytest.raises(KGEngineError, match=r"k\.mat: no 'Kernel'"):
        load_gt_kernel(tmp_path / "k.mat")
    (tmp_path / "bad.mat").write_bytes(b"garbage")
    with pytest.raises(KGEngineError, match="bad.mat"):
        load_gt_kernel(tmp_path / "bad.mat")
    save_mat(tmp_path / "ok.mat", {"Kernel": 2 * np.ones((3, 3))})
    assert load_gt_kernel(tmp_path / "ok.mat").sum() == pytest.approx(1.0)


# ------------------------------------------------------------------------------ the job
@pytest.mark.parametrize("scale", [2, 4])
def test_eval_fake_estimator_rows_report_and_grid(dataset, tmp_path, scale):
    fake = FakeEstimator()
    out = tmp_path / "out"
    settings = EvalSettings(scale=scale, seeds=(0, 1), iters=7, device="cpu")
    res = run_eval(dataset, out, settings, estimator=per_image(fake))

    # the estimator got the documented arguments
    assert len(fake.calls) == 4
    call = fake.calls[0]
    assert call["x4"] == (scale == 4) and call["iters"] == 7 and call["device"] == "cpu"
    # the authors' behaviour (defects 1-3) is the default since 0.2
    assert call["config"].iters == 7 and call["config"].authors_bicubic_rgb_sum
    assert Path(call["path"]).parent.name == f"lr_x{scale}"

    disk = strict_json(out / "results.json")
    assert disk["rows"] == json.loads(json.dumps(res["rows"]))
    for key in ("settings", "machine", "rows", "errors", "summary", "eval_wall_s", "n_images"):
        assert key in disk
    rows = disk["rows"]
    assert len(rows) == 2 * (2 + 2)  # per image: 2 baselines + 2 seeds
    for r in rows:
        assert set(r) == ROW_KEYS
        assert r["kernel_canvas"] == (13 if scale == 2 else 37)
    by = {(r["image"], r["method"], r["seed"]): r for r in rows}
    for img in ("im_1", "im_2"):
        perfect = by[(img, "kernelgan", 0)]
        assert perfect["kernel_psnr"] == PSNR_CAP
        assert perfect["aligned_kernel_psnr"] == PSNR_CAP
        assert perfect["lr_psnr"] == pytest.approx(perfect["lr_psnr_ceiling"])
        assert perfect["lr_offset"] == [0, 0]
        assert 50 < perfect["lr_psnr_ceiling"] < 65  # 8-bit quantisation of the LR image
        delta = by[(img, "kernelgan", 1)]
        iso, bic = by[(img, ISO, None)], by[(img, BICUBIC, None)]
        assert delta["kernel_psnr"] < iso["kernel_psnr"]
        assert bic["aligned_kernel_psnr"] > bic["kernel_psnr"]  # half-pixel offset removed
        assert delta["wall_s"] >= 0 and delta["ms_per_iter"] == 2.5

    summ = disk["summary"]
    lost = summ["loses_to_iso"]["kernel_psnr"]
    # seed-mean of (cap, poor) beats the baseline on both images; the delta runs lose
    assert lost["images"] == [] and lost["n_images"] == 2
    assert lost["runs"] == 2 and lost["n_runs"] == 4
    kg = summ["methods"]["kernelgan"]["kernel_psnr"]
    assert kg["n"] == 4 and kg["worst"] < kg["median"] <= PSNR_CAP
    vals = [by[(i, "kernelgan", s)]["kernel_psnr"] for i in ("im_1", "im_2") for s in (0, 1)]
    assert kg["mean"] == pytest.approx(np.mean(vals))
    stds = [np.std([by[(i, "kernelgan", s)]["kernel_psnr"] for s in (0, 1)], ddof=1)
            for i in ("im_1", "im_2")]
    assert summ["seed_std"]["kernel_psnr"] == pytest.approx(np.mean(stds))
    assert summ["methods"][ISO]["kernel_psnr"]["n"] == 2

    report = (out / "report.md").read_text()
    for text in ("## Kernel PSNR", "## Aligned kernel PSNR", "## LR re-synthesis PSNR",
                 "true kernel (ceiling)", "std across seeds", ISO, BICUBIC,
                 "loses to the fixed isotropic σ = 1.3 Gaussian on 0 of 2",
                 "in 2 of 4 (50 %) single runs", "kernels.png", "Machine"):
        assert text in report, text
    assert (out / "kernels.png").stat().st_size > 1000
    table = summary_table([disk])
    assert f"| x{scale} | kernelgan |" in table and "true kernel" in table


def test_eval_resumes_and_refuses_other_settings(dataset, tmp_path):
    out = tmp_path / "out"
    settings = EvalSettings(scale=2, seeds=(0, 1), iters=7)
    first = run_eval(dataset, out, settings, estimator=per_image(FakeEstimator()))
    again = FakeEstimator()
    second = run_eval(dataset, out, settings, estimator=per_image(again))
    assert again.calls == []
    assert second["rows"] == first["rows"]
    (out / "runs" / "im_2_seed1.json").unlink()
    third = FakeEstimator()
    run_eval(dataset, out, settings, estimator=per_image(third))
    assert [(Path(c["path"]).name, c["seed"]) for c in third.calls] == [("im_2.png", 1)]
    with pytest.raises(ResumeMismatchError, match="iters"):
        run_eval(dataset, out, EvalSettings(scale=2, seeds=(0,), iters=8),
                 estimator=per_image(FakeEstimator()))
    with pytest.raises(ResumeMismatchError, match="kernelgan-fixed"):
        run_eval(dataset, out, EvalSettings(scale=2, seeds=(0,), iters=7, fix_defects=True),
                 estimator=per_image(FakeEstimator()))


def test_eval_refuses_runs_of_another_image_of_the_same_name(dataset, tmp_path):
    """Before 0.9.25 a run was known by its name only: another dataset evaluated into the same
    OUTDIR resumed the first dataset's kernels and scored them against its own truth."""
    from kgengine.farm.seeds import content_hash

    out = tmp_path / "out"
    settings = EvalSettings(scale=2, seeds=(0,), iters=7)
    run_eval(dataset, out, settings, estimator=per_image(FakeEstimator()))
    run = json.loads((out / "runs" / "im_2_seed0.json").read_text())
    assert run["lr_sha256"] == content_hash(dataset / "lr_x2" / "im_2.png")
    other = tmp_path / "other"
    shutil.copytree(dataset, other)
    lr = other / "lr_x2" / "im_2.png"
    old = content_hash(lr)
    from PIL import Image

    Image.fromarray(np.asarray(Image.open(lr))[::-1].copy()).save(lr)
    before = {f.name: f.read_bytes() for f in (out / "runs").iterdir()}
    with pytest.raises(ResumeMismatchError, match=(
            rf"im_2_seed0.json: made from another image than {lr} \(sha256 {old[:12]}, now "
            rf"{content_hash(lr)[:12]}: another dataset's output folder, or the image "
            r"changed\); use another output folder")):
        run_eval(other, out, settings, estimator=per_image(FakeEstimator()))
    assert {f.name: f.read_bytes() for f in (out / "runs").iterdir()} == before
    res = fresh_eval_calls(other, tmp_path / "fresh")
    assert res == 2  # a fresh folder estimates both images
    # a run stored before 0.9.25 has no hash: resumed, as then
    del run["lr_sha256"]
    (out / "runs" / "im_2_seed0.json").write_text(json.dumps(run))
    again = FakeEstimator()
    run_eval(dataset, out, settings, estimator=per_image(again))
    assert again.calls == []


def fresh_eval_calls(dataset: Path, out: Path) -> int:
    """How many runs a fresh evaluation of ``dataset`` into ``out`` estimates."""
    fake = FakeEstimator()
    run_eval(dataset, out, EvalSettings(scale=2, seeds=(0,), iters=7), estimator=per_image(fake))
    return len(fake.calls)


def test_authors_and_fixed_variants_are_passed_and_labelled(dataset, tmp_path):
    fake = FakeEstimator()
    res = run_eval(dataset, tmp_path / "o", EvalSettings(seeds=(0,), iters=5, ids=(1,),
                   authors_defects=True), estimator=per_image(fake))
    cfg = fake.calls[0]["config"]
    assert cfg.authors_bicubic_rgb_sum and cfg.authors_noise_accumulates
    assert cfg.authors_d_init_ignored and cfg.iters == 5
    assert {r["method"] for r in res["rows"]} == {"kernelgan", ISO, BICUBIC}
    fixed = FakeEstimator()
    res = run_eval(dataset, tmp_path / "f", EvalSettings(seeds=(0,), iters=5, ids=(1,),
                   fix_defects=True), estimator=per_image(fixed))
    cfg = fixed.calls[0]["config"]
    assert not (cfg.authors_bicubic_rgb_sum or cfg.authors_noise_accumulates
                or cfg.authors_d_init_ignored)
    assert {r["method"] for r in res["rows"]} == {"kernelgan-fixed", ISO, BICUBIC}


def test_one_bad_image_is_reported_and_skipped(dataset, tmp_path):
    d = tmp_path / "ds"
    shutil.copytree(dataset, d)
    (d / "lr_x2" / "im_2.png").write_bytes(b"truncated")
    messages: list[str] = []
    res = run_eval(d, tmp_path / "o", EvalSettings(seeds=(0,), iters=3),
                   estimator=per_image(FakeEstimator()), hooks=JobHooks(log=messages.append))
    assert {r["image"] for r in res["rows"]} == {"im_1"}
    assert res["errors"][0]["image"] == "im_2" and "im_2.png" in res["errors"][0]["error"]
    assert messages and "im_2" in messages[0]
    assert "## Skipped images" in (tmp_path / "o" / "report.md").read_text()
    # every image bad: the job fails with the first error
    (d / "lr_x2" / "im_1.png").write_bytes(b"")
    save_mat(d / "gt_k_x2" / "kernel_1.mat", {"Nope": np.ones((3, 3))})
    with pytest.raises(KGEngineError, match="every image failed"):
        run_eval(d, tmp_path / "o2", EvalSettings(seeds=(0,), iters=3),
                 estimator=per_image(FakeEstimator()))


def test_eval_without_hr_images_skips_resynthesis(dataset, tmp_path):
    d = tmp_path / "ds"
    shutil.copytree(dataset, d)
    shutil.rmtree(d / "gt")
    res = run_eval(d, tmp_path / "o", EvalSettings(seeds=(0,), iters=3),
                   estimator=per_image(FakeEstimator()))
    assert all(r["lr_psnr"] is None and r["lr_psnr_ceiling"] is None for r in res["rows"])
    assert "not measured" in (tmp_path / "o" / "report.md").read_text()


# ------------------------------------------------------------------------------ CLI
def test_eval_command(dataset, tmp_path, monkeypatch):
    import kgengine.accuracy.job as job

    fake = StoppingFake()  # the command runs KernelGAN, which takes stop (default auto)
    monkeypatch.setattr(job, "default_estimator", lambda: per_image(fake))
    runner = CliRunner()
    out = tmp_path / "o"
    res = runner.invoke(app, ["eval", str(dataset), "-o", str(out), "--scale", "4",
                              "--seeds", "0,1", "--ids", "2", "--iters", "9", "--device", "cpu",
                              "--fix-defects"])
    assert res.exit_code == 0, res.output
    assert "kernelgan-fixed-stopauto" in res.output
    assert [c["stop"] for c in fake.calls] == ["auto", "auto"]
    data = strict_json(out / "results.json")
    assert {r["image"] for r in data["rows"]} == {"im_2"}
    assert data["settings"]["seeds"] == [0, 1] and data["settings"]["scale"] == 4
    assert [c["seed"] for c in fake.calls] == [0, 1]
    assert all(c["x4"] and c["iters"] == 9 and c["device"] == "cpu" for c in fake.calls)
    assert not fake.calls[0]["config"].authors_noise_accumulates


@pytest.mark.parametrize(
    "args, message",
    [
        (["--scale", "3"], "--scale must be 2 or 4"),
        (["--seeds", "a,b"], "--seeds: expected integers"),
        (["--ids", "7"], "no image for ids [7]"),
    ],
)
def test_eval_command_errors(dataset, tmp_path, args, message):
    res = CliRunner().invoke(app, ["eval", str(dataset), "-o", str(tmp_path / "o"), *args])
    assert res.exit_code == 1
    assert message in res.output


def test_eval_command_missing_dataset(tmp_path):
    res = CliRunner().invoke(app, ["eval", str(tmp_path / "none"), "-o", str(tmp_path / "o")])
    assert res.exit_code == 1
    assert "no lr_x2/ folder" in res.output


def test_parse_int_list():
    from kgengine.commands.eval import parse_int_list

    assert parse_int_list("0,1,2", "x") == (0, 1, 2)
    assert parse_int_list("1-3, 7,2", "x") == (1, 2, 3, 7)
    with pytest.raises(KGEngineError):
        parse_int_list(",", "x")


# ------------------------------------------------------------------------------ real run
def test_eval_with_the_real_estimator(tmp_path, sample_hr):
    pytest.importorskip("kgengine.api", reason="the KernelGAN estimator is not available")
    from kgengine.imageio import write_png

    hr = tmp_path / "hr"
    write_png(hr / "a.png", sample_hr[:200, :200])
    ds = tmp_path / "ds"
    make_div2krk_like([hr / "a.png"], ds, seed=0)
    res = run_eval(ds, tmp_path / "o", EvalSettings(seeds=(0,), iters=12, device="cpu"))
    assert res["errors"] == []
    rows = {r["method"]: r for r in res["rows"]}
    est = rows["kernelgan"]
    assert len(np.asarray(json.loads((tmp_path / "o/runs/im_1_seed0.json").read_text())
                          ["kernel"])) == 13
    assert 0 < est["kernel_psnr"] < PSNR_CAP
    assert est["aligned_kernel_psnr"] >= est["kernel_psnr"]
    assert est["lr_psnr"] <= est["lr_psnr_ceiling"] + 1e-9
    assert est["wall_s"] > 0 and est["ms_per_iter"] > 0


# ------------------------------------------------------------------------------ restarts
class ConfidentFake(FakeEstimator):
    """:class:`FakeEstimator` that takes ``restarts`` and reports a confidence: high (0.9)
    for the true kernel of seed 0, low (0.25, 0.4, ...) for the poor estimates."""

    def __call__(self, path, *, x4, iters, seed, device, config, restarts=1):
        res = super().__call__(path, x4=x4, iters=iters, seed=seed, device=device,
                               config=config)
        self.calls[-1]["restarts"] = restarts
        res.confidence = 0.9 if seed == 0 else 0.1 + 0.15 * seed
        return res


def test_eval_restarts_are_passed_and_recorded(dataset, tmp_path):
    from scipy.stats import spearmanr

    fake = ConfidentFake()
    out = tmp_path / "out"
    settings = EvalSettings(scale=2, seeds=(0, 1, 2), iters=7, restarts=3)
    res = run_eval(dataset, out, settings, estimator=per_image(fake))
    assert [c["restarts"] for c in fake.calls] == [3] * 6
    est = [r for r in res["rows"] if r["method"] == "kernelgan-restarts3"]
    assert len(est) == 6
    assert [r["confidence"] for r in est] == [0.9, 0.25, 0.4] * 2
    assert all(r["confidence"] is None for r in res["rows"] if r["method"] in (ISO, BICUBIC))
    run = json.loads((out / "runs" / "im_1_seed1.json").read_text())
    assert run["restarts"] == 3 and run["confidence"] == 0.25
    corr = strict_json(out / "results.json")["summary"]["confidence_vs_accuracy"]
    rho, p = spearmanr([r["confidence"] for r in est], [r["aligned_kernel_psnr"] for r in est])
    assert corr["n"] == 6 and corr["metric"] == "aligned_kernel_psnr"
    assert corr["rho"] == pytest.approx(rho, abs=1e-12) and corr["rho"] > 0
    assert corr["p_value"] == pytest.approx(p, abs=1e-12)
    report = (out / "report.md").read_text()
    assert "## Confidence vs accuracy" in report and f"ρ = {rho:.3f}" in report
    assert "n = 6" in report and "restarts per run: 3" in report


def test_eval_refuses_to_resume_with_another_restarts_value(dataset, tmp_path):
    out = tmp_path / "out"
    run_eval(dataset, out, EvalSettings(seeds=(0,), iters=7, restarts=2),
             estimator=per_image(ConfidentFake()))
    again = ConfidentFake()
    run_eval(dataset, out, EvalSettings(seeds=(0,), iters=7, restarts=2),
             estimator=per_image(again))
    assert again.calls == []  # resumed
    for k in (1, 3):
        with pytest.raises(ResumeMismatchError, match="restarts"):
            run_eval(dataset, out, EvalSettings(seeds=(0,), iters=7, restarts=k),
                     estimator=per_image(ConfidentFake()))
    # the identity itself, apart from the method label, holds restarts
    store = RunStore(out, {**EvalSettings(iters=7, restarts=2).run_identity(), "restarts": 5})
    with pytest.raises(ResumeMismatchError, match="'restarts': 5"):
        store.load(list_dataset(dataset, 2)[0], 0)
    with pytest.raises(KGEngineError, match="restarts must be at least 1, got 0"):
        run_eval(dataset, tmp_path / "o2", EvalSettings(seeds=(0,), restarts=0),
                 estimator=per_image(ConfidentFake()))


def test_runs_stored_before_restarts_resume_as_one_restart(dataset, tmp_path):
    out = tmp_path / "out"
    first = run_eval(dataset, out, EvalSettings(seeds=(0,), iters=7),
                     estimator=per_image(FakeEstimator()))
    assert first["summary"]["confidence_vs_accuracy"] is None  # no confidences
    assert "## Confidence vs accuracy" not in (out / "report.md").read_text()
    for f in (out / "runs").glob("*.json"):  # as written before restarts existed
        run = json.loads(f.read_text())
        del run["restarts"], run["confidence"]
        f.write_text(json.dumps(run))
    again = FakeEstimator()
    second = run_eval(dataset, out, EvalSettings(seeds=(0,), iters=7),
                      estimator=per_image(again))
    assert again.calls == [] and second["rows"] == first["rows"]
    with pytest.raises(ResumeMismatchError):
        run_eval(dataset, out, EvalSettings(seeds=(0,), iters=7, restarts=2),
                 estimator=per_image(ConfidentFake()))


def test_spearman_figure_equals_scipy():
    from scipy.stats import spearmanr

    from kgengine.accuracy import confidence_correlation

    rng = np.random.default_rng(5)
    conf = rng.random(12).round(1)  # ties in both variables
    psnr = (30 + 10 * conf + rng.normal(0, 2, 12)).round(0)
    rows = [{"method": "kg", "confidence": float(c), "aligned_kernel_psnr": float(v)}
            for c, v in zip(conf, psnr, strict=True)]
    rows += [{"method": "kg", "confidence": None, "aligned_kernel_psnr": 99.0},  # K = 1 run
             {"method": ISO, "confidence": None, "aligned_kernel_psnr": 0.0},
             {"method": "other", "confidence": 0.0, "aligned_kernel_psnr": 99.0}]
    got = confidence_correlation(rows, "kg")
    rho, p = spearmanr(conf, psnr)
    assert got == {"metric": "aligned_kernel_psnr", "n": 12, "rho": pytest.approx(rho),
                   "p_value": pytest.approx(p)}
    assert confidence_correlation(rows[12:], "kg") is None  # no confidences: not reported
    constant = [{**r, "confidence": 0.5} for r in rows[:5]]
    assert confidence_correlation(constant, "kg") == {
        "metric": "aligned_kernel_psnr", "n": 5, "rho": None, "p_value": None}
    assert confidence_correlation(rows[:2], "kg")["rho"] is None  # too few runs


def test_kernelgan_estimator_passes_restarts(monkeypatch):
    import kgengine.api
    from kgengine.accuracy import kernelgan_estimator
    from kgengine.config import KernelGANConfig

    seen: dict = {}

    def fake_estimate_kernels(images, **kw):
        seen.update(kw, images=images)
        return ["result"] * len(images)

    monkeypatch.setattr(kgengine.api, "estimate_kernels", fake_estimate_kernels)
    out = kernelgan_estimator([("a.png", 4), ("b.png", 5)], x4=False, iters=3, device="cpu",
                              config=KernelGANConfig(), restarts=3)
    assert out == ["result", "result"]
    assert seen["restarts"] == 3 and seen["seeds"] == [4, 5] and seen["images"] == ["a.png",
                                                                                   "b.png"]


def test_eval_command_restarts(dataset, tmp_path, monkeypatch):
    import kgengine.accuracy.job as job

    fake = ConfidentFake()
    monkeypatch.setattr(job, "default_estimator", lambda: per_image(fake))
    runner = CliRunner()
    res = runner.invoke(app, ["eval", str(dataset), "-o", str(tmp_path / "o"), "--seeds",
                              "0,1", "--iters", "5", "--restarts", "2", "--stop", "full"])
    assert res.exit_code == 0, res.output
    assert [c["restarts"] for c in fake.calls] == [2] * 4
    assert "kernelgan-restarts2" in res.output and "Spearman" in res.output
    assert strict_json(tmp_path / "o" / "results.json")["settings"]["restarts"] == 2
    res = runner.invoke(app, ["eval", str(dataset), "-o", str(tmp_path / "o2"),
                              "--restarts", "0"])
    assert res.exit_code == 1 and "error: --restarts must be at least 1, got 0" in res.output


# ------------------------------------------------------------------------------ --stop
class StoppingFake(FakeEstimator):
    """:class:`FakeEstimator` that takes ``stop`` and records it."""

    def __call__(self, path, *, x4, iters, seed, device, config, stop="full"):
        res = super().__call__(path, x4=x4, iters=iters, seed=seed, device=device,
                               config=config)
        self.calls[-1]["stop"] = stop
        return res


def test_eval_stop_is_passed_labelled_and_part_of_the_identity(dataset, tmp_path):
    out = tmp_path / "out"
    fake = StoppingFake()
    res = run_eval(dataset, out, EvalSettings(seeds=(0,), iters=7, stop="auto"),
                   estimator=per_image(fake))
    assert [c["stop"] for c in fake.calls] == ["auto", "auto"]
    assert {r["method"] for r in res["rows"]} >= {"kernelgan-stopauto"}
    assert "(stop: auto)" in (out / "report.md").read_text()
    with pytest.raises(ResumeMismatchError, match="stop"):
        run_eval(dataset, out, EvalSettings(seeds=(0,), iters=7),
                 estimator=per_image(StoppingFake()))
    # the default does not pass ``stop``: an estimator without it still works
    plain = run_eval(dataset, tmp_path / "o2", EvalSettings(seeds=(0,), iters=7),
                     estimator=per_image(FakeEstimator()))
    assert {r["method"] for r in plain["rows"]} >= {"kernelgan"}
    with pytest.raises(KGEngineError, match="stop: expected full or auto, got 'soon'"):
        run_eval(dataset, tmp_path / "o3", EvalSettings(seeds=(0,), stop="soon"),
                 estimator=per_image(FakeEstimator()))


def test_runs_stored_before_stop_resume_as_full(dataset, tmp_path):
    out = tmp_path / "out"
    first = run_eval(dataset, out, EvalSettings(seeds=(0,), iters=7),
                     estimator=per_image(FakeEstimator()))
    for f in (out / "runs").glob("*.json"):  # as written before --stop existed
        run = json.loads(f.read_text())
        del run["stop"]
        f.write_text(json.dumps(run))
    again = FakeEstimator()
    second = run_eval(dataset, out, EvalSettings(seeds=(0,), iters=7),
                      estimator=per_image(again))
    assert again.calls == [] and second["rows"] == first["rows"]


@pytest.mark.parametrize("stored, expected", [(None, 40), (60, 60)])
def test_runs_stored_before_the_clean_up_changed_are_refused(dataset, tmp_path, stored, expected):
    # runs of kgengine <= 0.4 were cleaned with n_filtering = 40 (not recorded), 0.5.0's with 60;
    # 0.5.1's default is 50, so a resumed store would mix two clean-ups: refused, naming the
    # stored value
    out = tmp_path / "out"
    run_eval(dataset, out, EvalSettings(seeds=(0,), iters=7), estimator=per_image(FakeEstimator()))
    assert EvalSettings().run_identity()["n_filtering"] == 50
    for f in (out / "runs").glob("*.json"):
        run = json.loads(f.read_text())
        assert run["n_filtering"] == 50
        if stored is None:  # as written before n_filtering was recorded
            del run["n_filtering"]
        else:
            run["n_filtering"] = stored
        f.write_text(json.dumps(run))
    with pytest.raises(ResumeMismatchError, match=f"'n_filtering': {expected}"):
        run_eval(dataset, out, EvalSettings(seeds=(0,), iters=7),
                 estimator=per_image(FakeEstimator()))


def test_restarts_identity_names_the_restarts_clean_up():
    # a run's identity holds the clean-up n it was finished with: restarts use
    # restart_n_filtering (since 0.9.3), so 0.9.2's restarts runs (50) are not resumed into
    assert EvalSettings(restarts=4).run_identity()["n_filtering"] == 70
    assert EvalSettings(restarts=1).run_identity()["n_filtering"] == 50


def test_runs_stored_before_the_elongation_shrink_are_refused(dataset, tmp_path):
    # runs of kgengine <= 0.8 kept the kernel's elongation (elongation_power 1, not recorded)
    out = tmp_path / "out"
    run_eval(dataset, out, EvalSettings(seeds=(0,), iters=7), estimator=per_image(FakeEstimator()))
    for f in (out / "runs").glob("*.json"):
        run = json.loads(f.read_text())
        assert run["elongation_power"] == 0.4
        del run["elongation_power"]
        f.write_text(json.dumps(run))
    with pytest.raises(ResumeMismatchError, match="'elongation_power': 1.0"):
        run_eval(dataset, out, EvalSettings(seeds=(0,), iters=7),
                 estimator=per_image(FakeEstimator()))


def test_runs_stored_before_the_width_calibration_are_refused(dataset, tmp_path):
    # runs of kgengine <= 0.9.3 kept the kernel's width (no width_prior recorded): a run's
    # identity holds the calibration's prior, None when it is off
    assert EvalSettings().run_identity()["width_prior"] == 0.3
    out = tmp_path / "out"
    run_eval(dataset, out, EvalSettings(seeds=(0,), iters=7), estimator=per_image(FakeEstimator()))
    for f in (out / "runs").glob("*.json"):
        run = json.loads(f.read_text())
        assert run["width_prior"] == 0.3
        del run["width_prior"]
        f.write_text(json.dumps(run))
    with pytest.raises(ResumeMismatchError, match="'width_prior': None"):
        run_eval(dataset, out, EvalSettings(seeds=(0,), iters=7),
                 estimator=per_image(FakeEstimator()))


@pytest.mark.parametrize(("key", "legacy", "now"), [
    ("elongation_choice", False, True),  # runs of 0.9.4 kept the shrunk kernel
    ("spectral_mix", 0.0, 0.5),  # runs of 0.9.5 had no spectral mix
    ("spectral_confidence", False, True),  # runs of 0.9.6: the restarts' agreement
    ("width_refine", False, True),  # runs of 0.9.7: the calibration's grid point
    ("width_release", False, True),  # runs of 0.9.9: the calibration's full pull
    ("clean_release", False, True),  # runs of 0.9.10: the clean-up's fixed n
])
def test_runs_stored_before_a_setting_are_refused(dataset, tmp_path, key, legacy, now):
    # an older version's runs have no such key: a run's identity holds it
    assert EvalSettings().run_identity()[key] == now
    out = tmp_path / "out"
    run_eval(dataset, out, EvalSettings(seeds=(0,), iters=7), estimator=per_image(FakeEstimator()))
    for f in (out / "runs").glob("*.json"):
        run = json.loads(f.read_text())
        assert run[key] == now
        del run[key]
        f.write_text(json.dumps(run))
    with pytest.raises(ResumeMismatchError, match=f"'{key}': {legacy!r}"):
        run_eval(dataset, out, EvalSettings(seeds=(0,), iters=7),
                 estimator=per_image(FakeEstimator()))


def test_kernelgan_estimator_passes_stop(monkeypatch):
    import kgengine.api
    from kgengine.accuracy import kernelgan_estimator
    from kgengine.config import KernelGANConfig

    seen: dict = {}
    monkeypatch.setattr(kgengine.api, "estimate_kernels",
                        lambda images, **kw: seen.update(kw) or [None] * len(images))
    kernelgan_estimator([("a.png", 4)], x4=False, iters=3, device="cpu",
                        config=KernelGANConfig(), stop="auto")
    assert seen["stop"] == "auto"


def test_eval_command_stop(dataset, tmp_path, monkeypatch):
    import kgengine.accuracy.job as job

    fake = StoppingFake()
    monkeypatch.setattr(job, "default_estimator", lambda: per_image(fake))
    res = CliRunner().invoke(app, ["eval", str(dataset), "-o", str(tmp_path / "o"), "--seeds",
                                   "0", "--iters", "5", "--stop", "auto"])
    assert res.exit_code == 0, res.output
    assert [c["stop"] for c in fake.calls] == ["auto", "auto"]
    assert strict_json(tmp_path / "o" / "results.json")["settings"]["stop"] == "auto"
    res = CliRunner().invoke(app, ["eval", str(dataset), "-o", str(tmp_path / "o2"),
                                   "--stop", "later"])
    assert res.exit_code == 1 and "error: --stop: expected full or auto, got 'later'" in res.output


@pytest.mark.parametrize("extra, chunks", [([], [3]), (["--batch", "1"], [1, 1, 1]),
                                           (["--restarts", "4"], [2, 1])])
def test_eval_command_batches_runs_on_a_cpu_by_default(dataset, tmp_path, monkeypatch, extra,
                                                       chunks):
    """0.9.16: ``--batch`` 0 (the default) hands the estimator 8 // K runs at a time on a CPU
    (results the same bytes at any batch size there)."""
    import kgengine.accuracy.job as job

    class Fake(FakeEstimator):  # takes restarts and stop
        def __call__(self, path, *, restarts=1, stop="full", **kwargs):
            return super().__call__(path, **kwargs)

    sizes: list[int] = []
    inner = per_image(Fake())

    def estimator(jobs, **kwargs):
        sizes.append(len(jobs))
        return inner(jobs, **kwargs)

    monkeypatch.setattr(job, "default_estimator", lambda: estimator)
    res = CliRunner().invoke(app, ["eval", str(dataset), "-o", str(tmp_path / "o"), "--ids",
                                   "2", "--iters", "9", "--device", "cpu", *extra])
    assert res.exit_code == 0, res.output
    assert sizes == chunks
