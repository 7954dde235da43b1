"""The training-time degradation in ``DataLoader`` workers (0.9.27's review): epochs reach
persistent workers, a ``Degrader`` in workers draws per worker, errors keep their type, and
file names that would share draws are refused. Every assertion failed before its fix."""

from __future__ import annotations

import functools
import pickle

import numpy as np
import pytest
import torch
from test_degradation_module import NO_JPEG_CFG, data  # noqa: F401 (a fixture)
from torch.utils.data import DataLoader

from kgengine.degradation import Degrader, PairDataset
from kgengine.errors import BadImageError, KGEngineError, OutputError


def _epochs(ds: PairDataset, loader: DataLoader, epochs: int) -> list[dict[str, np.ndarray]]:
    out = []
    for e in range(epochs):
        ds.set_epoch(e)
        out.append({k: lr.numpy() for batch in loader
                    for k, lr in zip(batch["key"], batch["lr"], strict=True)})
    return out


def test_set_epoch_reaches_persistent_workers(data) -> None:  # noqa: F811
    """Persistent workers kept their copy of epoch 0 and drew it again every epoch."""
    hr_dir, pool = data
    ds = PairDataset(hr_dir, pool, NO_JPEG_CFG, seed=7, patch=32)
    alone = _epochs(ds, DataLoader(ds, batch_size=2), 3)
    workers = DataLoader(ds, batch_size=2, num_workers=2, persistent_workers=True)
    together = _epochs(ds, workers, 3)
    assert [sorted(e) for e in together] == [sorted(e) for e in alone]
    assert sorted(together[1])[0].endswith("@1")
    for got, want in zip(together, alone, strict=True):
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
    assert ds.epoch == 2


def _degrade_batch(degrader: Degrader, batch: list[torch.Tensor]) -> torch.Tensor:
    return degrader(torch.stack(batch))


def test_a_degrader_in_workers_draws_per_worker(data) -> None:  # noqa: F811
    """Each worker started with the module's call count: two workers drew the same
    degradations, and every epoch the same again."""
    hr_dir, pool = data
    degrader = Degrader(pool, NO_JPEG_CFG, seed=7)
    hr = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))

    def run(items: list[torch.Tensor]) -> list[torch.Tensor]:
        torch.manual_seed(3)  # the workers' seeds come from torch's generator
        loader = DataLoader(items, batch_size=2, num_workers=2,  # partial: any start method
                            collate_fn=functools.partial(_degrade_batch, degrader))
        return list(loader)

    first, second = run(list(hr)), run(list(hr))
    for a, b in zip(first, second, strict=True):  # reproducible with torch's seed
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # the same two HR images in each worker's first batch: two draws, not one
    b0, b1 = run([hr[0], hr[1]] * 2)
    assert not torch.equal(b0, b1)


def test_a_bad_image_in_a_worker_raises_its_own_type(data, tmp_path) -> None:  # noqa: F811
    """torch raises a worker's error again as ``type(message)``: BadImageError needed two
    arguments, so a loop's ``except BadImageError`` missed it (a RuntimeError came)."""
    hr_dir, pool = data
    bad = tmp_path / "bad.png"
    bad.write_bytes((hr_dir / "a.png").read_bytes()[:200])
    ds = PairDataset([bad], pool, NO_JPEG_CFG)
    with pytest.raises(BadImageError, match="bad.png"):
        next(iter(DataLoader(ds, num_workers=1)))
    for err in (BadImageError("/x/a.png", "truncated"), OutputError("/x/out", "disk full", 28)):
        back = pickle.loads(pickle.dumps(err))
        assert (type(back), str(back), back.path, back.reason) == (
            type(err), str(err), err.path, err.reason)


def test_files_that_would_share_draws_are_refused(data, tmp_path) -> None:  # noqa: F811
    """``000/0.png`` and ``001/0.png`` got one draw (the name is the key); a float patch
    failed later in slicing; a file given as the folder was "no such folder"."""
    hr_dir, pool = data
    for sub in ("000", "001"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "0.png").write_bytes((hr_dir / "a.png").read_bytes())
    with pytest.raises(KGEngineError, match="same file name"):
        PairDataset([tmp_path / "000" / "0.png", tmp_path / "001" / "0.png"], pool)
    with pytest.raises(ValueError, match="patch"):
        PairDataset(hr_dir, pool, patch=32.0)
    with pytest.raises(KGEngineError, match="is a file, not a folder"):
        PairDataset(hr_dir / "a.png", pool)

