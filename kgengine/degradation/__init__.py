"""Degrade a folder of HR images with a kernel pool into LR/HR training pairs (onnxruntime).

What :func:`degrade_folder` does, and the choices it makes:

- **Inputs**: the image files directly in ``hr_dir`` (not sub-folders; suffixes
  :data:`IMAGE_SUFFIXES`), read with :func:`kgengine.imageio.read_image` as float32 RGB.
  Two files with the same stem (``a.png``, ``a.jpg``) are refused up front, since both
  would write ``lr/a.png``.
- **Pairs align exactly**: each HR image is cropped (top-left kept) to ``H - H % s`` by
  ``W - W % s`` before degrading, so ``LR size = HR size / s``. When a crop was needed the
  cropped HR is written to ``out_dir/hr/<stem>.png`` (8-bit PNG) and the manifest's ``hr``
  points there; otherwise ``hr`` is the original file (no copy), unless ``copy_hr``
  (``--copy-hr``) asks for every HR in ``hr/`` (a paired ``hr/``, ``lr/`` folder).
- **Kernel and noise per image** depend only on ``(seed, HR file name)`` through SHA-256
  (:func:`kernel_row`, :func:`noise_seed`), so adding or removing files never changes the
  kernel or the noise of the others, and the batch size or provider does not either.
  Noise: ``lr += sigma * N(0,1)``, the unit noise being
  ``np.random.default_rng(noise_seed).standard_normal((3, h, w), dtype=np.float32)``.
- **Batching**: images of equal (cropped) size are stacked into batches of up to
  ``batch``; every other size runs in its own batches (no padding, no resizing).
- **HR size limit**: both cropped sides must exceed the pool's kernel size (ONNX reflect
  padding, see :mod:`kgengine.export.degraders`); smaller images are reported as failures.
- **Outputs**: ``out_dir/lr/<stem>.png`` (8-bit, written atomically), ``out_dir/manifest.jsonl``
  (one JSON object per pair: everything needed to rebuild it, see :func:`rebuild_lr`;
  relative paths are relative to ``out_dir``) and ``out_dir/degrade_settings.json``.
- **Resume**: a file whose manifest entry and output files exist is skipped. The manifest
  is appended after each batch and rewritten (sorted) at the end. A rerun into an
  ``out_dir`` that holds pairs made with another HR folder, seed, noise, scale, pool
  content, pipeline, noise patches or ``copy_hr`` is refused (a folder without pairs does
  not pin the settings of the run that left it). The entry of an HR file no longer listed
  that claims a listed file's pair (renamed within its stem, ``a.png`` -> ``a.PNG``) is
  removed with its files, and the listed file's pair made again; the pair of an HR file
  removed from the folder otherwise stays.
- **Checks first**: every argument, the pool, the HR folder, ``out_dir`` and the provider
  are checked before ``out_dir`` is created or written; scales are 2 or 4 (KernelGAN's).
- **File names** that are not valid UTF-8 work: hashed as their raw bytes, written to the
  manifest as ``\\udcNN`` JSON escapes (ASCII lines; Python reads the exact name back) and
  shown as ``\\xNN`` in messages.
- **Bad files**: a file that cannot be read (or is too small) is reported through
  ``hooks.item_finished(name, "failed", line)``, the line naming the file, and skipped; the
  others finish. The report lists the failures; the ``degrade`` command then exits with 1.
- **Pipeline** (``pipeline=PipelineConfig(...)``, ``kgengine degrade --pipeline FILE.toml``
  or any pipeline flag): instead of the ONNX degrader, the CPU pipeline of
  :mod:`~kgengine.degradation.pipeline` (pool kernel -> strided downscale -> optional second
  round, Gaussian/Poisson/real noise, JPEG, in a fixed or per-image shuffled order), every
  random choice drawn from ``(seed, file name)``; each manifest entry records the config
  and the draws, and :func:`rebuild_pair` rebuilds the 8-bit LR exactly. The same pipeline
  runs in training loops as the ``torch.nn.Module``
  :class:`~kgengine.degradation.module.Degrader` and the Dataset
  :class:`~kgengine.degradation.module.PairDataset`.
- **Interrupted runs**: one job per output folder (a lock), and temporary files of a killed
  run are removed at the next start (:mod:`~kgengine.degradation.folder`).

Modules: :mod:`~kgengine.degradation.plan` (files, per-image draws, crops, size batches),
:mod:`~kgengine.degradation.runner` (session, batches, writing pairs),
:mod:`~kgengine.degradation.manifest` (manifest, resume guard, :func:`rebuild_lr`),
:mod:`~kgengine.degradation.job` (:func:`degrade_folder`), and for the pipeline:
:mod:`~kgengine.degradation.config` (:class:`PipelineConfig`, TOML),
:mod:`~kgengine.degradation.draws` (per-image random choices),
:mod:`~kgengine.degradation.stages` (each stage's equation),
:mod:`~kgengine.degradation.pipeline` (:class:`Pipeline`, :func:`rebuild_pair`),
:mod:`~kgengine.degradation.pipeline_runner` (the offline job),
:mod:`~kgengine.degradation.noisebank` (real-noise patches, ``kgengine noise collect``),
:mod:`~kgengine.degradation.module` (:class:`Degrader`, :class:`PairDataset`).
"""

from __future__ import annotations

from kgengine.degradation.config import STAGES, PipelineConfig, build_config, load_config
from kgengine.degradation.draws import Draws, draw
from kgengine.degradation.job import degrade_folder
from kgengine.degradation.manifest import (
    MANIFEST,
    RESUME_KEYS,
    SETTINGS,
    read_manifest,
    rebuild_lr,
)
from kgengine.degradation.module import Degrader, PairDataset
from kgengine.degradation.noisebank import NoiseBank, collect_noise, load_noise_bank
from kgengine.degradation.pipeline import Pipeline, rebuild_pair
from kgengine.degradation.plan import (
    IMAGE_SUFFIXES,
    PairPlan,
    crop_to_scale,
    kernel_row,
    list_hr_files,
    noise_seed,
    unit_noise,
)
from kgengine.degradation.runner import DegradeReport

__all__ = [
    "IMAGE_SUFFIXES",
    "MANIFEST",
    "RESUME_KEYS",
    "SETTINGS",
    "STAGES",
    "DegradeReport",
    "Degrader",
    "Draws",
    "NoiseBank",
    "PairDataset",
    "PairPlan",
    "Pipeline",
    "PipelineConfig",
    "build_config",
    "collect_noise",
    "crop_to_scale",
    "degrade_folder",
    "draw",
    "kernel_row",
    "list_hr_files",
    "load_config",
    "load_noise_bank",
    "noise_seed",
    "read_manifest",
    "rebuild_lr",
    "rebuild_pair",
    "unit_noise",
]
