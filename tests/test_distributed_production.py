"""Sharded mass production (calogan.distributed.production) on a Dask LocalCluster of 2 workers.

One production, with a worker killed while it writes a shard, must end complete and hold the
showers of a one-process ``calogan generate`` with the same options, bit for bit; a rerun
must skip the finished shards and remake an unfinished one; the folder reads as one sample.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time

import numpy as np
import pytest
import torch

from calogan.checkpoint import save_checkpoint
from calogan.cli import main
from calogan.io import inspect, read_showers
from calogan.models import build_model
from calogan.models.base import ConditionSpec
from calogan.shards import MANIFEST, ShardError, plan_shards, read_manifest, write_manifest
from calogan.transforms import ShowerTransform, TransformConfig
from conftest import toy_showers

distributed = pytest.importorskip("distributed", reason="the distributed extra (dask[distributed]) is not installed")
from calogan.distributed.production import ProductionError, ProductionSpec, produce  # noqa: E402

N, SHARDS, BATCH, SEED = 60000, 6, 2000, 11


@pytest.fixture
def checkpoint(tmp_path, toy_geometry):
    data = toy_showers(toy_geometry, n=40, seed=5)
    t = ShowerTransform.fit(TransformConfig(), data.cells, data.e_inc)
    model = build_model("wgan", data.geometry, ConditionSpec.from_data(data), t, {"critic_hidden": [8], "latent_dim": 4})
    model.prepare(data)
    return save_checkpoint(tmp_path / "best.pt", model.eval(), step=1, data_attrs={"convention": "active", "particle": "e+"})


def test_plan_shards_starts_every_shard_at_a_batch_boundary():
    assert plan_shards(60000, 6, align=2000) == [(k * 10000, 10000) for k in range(6)]
    assert plan_shards(7, 4, align=3) == [(0, 3), (3, 3), (6, 1)]  # three batches: three shards
    plan = plan_shards(10**7, 64, align=10000)
    assert sum(c for _, c in plan) == 10**7 and all(a % 10000 == 0 for a, _ in plan) and {c for _, c in plan} == {150000, 160000}


def _kill_first_writer(folder, killed: list, stop: threading.Event) -> None:
    """Kill (SIGKILL) the first worker seen writing a shard: its temporary names its pid."""
    while not stop.is_set():
        for p in folder.glob(".shard-*.tmp.h5") if folder.is_dir() else []:
            m = re.match(r"\.shard-\d+\.h5\.(?:[0-9a-f]{6}-)?(\d+)-", p.name)
            if m:
                os.kill(int(m.group(1)), signal.SIGKILL)
                killed.append((int(m.group(1)), p.name))
                return
        time.sleep(0.005)


@pytest.mark.slow
def test_a_production_survives_a_killed_worker_equals_one_process_and_reruns_only_what_is_missing(tmp_path, checkpoint, capsys):
    torch.set_num_threads(1)
    ref = tmp_path / "one.h5"
    assert main(["generate", "--model", str(checkpoint), "-n", str(N), "--batch-size", str(BATCH), "--seed", str(SEED)]
                + ["--threads", "1", "--no-progress", "-o", str(ref)]) == 0  # fmt: skip
    expected = read_showers(ref)
    out = tmp_path / "out"
    spec = ProductionSpec.create(checkpoint, n=N, shards=SHARDS, seed=SEED, batch_size=BATCH, threads=1)

    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=50) as cluster,
        distributed.Client(cluster) as client,
    ):
        killed, stop = [], threading.Event()
        killer = threading.Thread(target=_kill_first_writer, args=(out, killed, stop))
        killer.start()
        try:
            result = produce(spec, out, client)
        finally:
            stop.set()
            killer.join()
        assert killed, "no worker was caught writing a shard"
        assert killed[0][0] not in client.run(os.getpid).values()  # that worker died; the nanny started a new one
        # peak memory of the live workers: the restarted one may not be back yet when the last
        # shard finishes on the other (a loaded machine takes seconds to start a worker)
        assert result.produced == SHARDS and result.skipped == 0 and len(result.peak_rss) in (1, 2)
        assert not list(out.glob(".*.tmp.h5"))  # the killed writer's temporary is gone

        manifest = read_manifest(out)
        assert [(s.start, s.count, s.seed) for s in manifest.shards] == [(a, c, SEED) for a, c in plan_shards(N, SHARDS, align=BATCH)]
        assert all(s.done and s.bytes == (out / s.file).stat().st_size for s in manifest.shards)
        got = read_showers(out)
        assert np.array_equal(got.cells, expected.cells) and np.array_equal(got.e_inc, expected.e_inc)  # bit for bit

        # an interrupted production: shard 2 unfinished, a dead writer's temporary beside it
        mtimes = {s.file: (out / s.file).stat().st_mtime_ns for s in manifest.shards}
        shard = manifest.shards[2]
        (out / shard.file).unlink()
        (out / f".{shard.file}.12345-abcd.tmp.h5").write_bytes(b"half")
        write_manifest(out, manifest.with_shard(shard.__class__(**{**shard.__dict__, "sha256": None, "bytes": None})))
        with pytest.raises(ShardError, match=r"1 of 6 shards are unfinished \(first: shard-00002.h5\)"):
            inspect(out)
        again = produce(spec, out, client)
        assert (again.produced, again.skipped) == (1, SHARDS - 1)
        assert {s.file: (out / s.file).stat().st_mtime_ns for s in read_manifest(out).shards if s.index != 2} == {
            k: v for k, v in mtimes.items() if k != shard.file
        }
        remade = read_manifest(out).shards[2]  # the same showers again (HDF5 need not lay them out byte for byte alike)
        assert np.array_equal(read_showers(out / remade.file).cells, expected.cells[remade.start : remade.start + remade.count])
        assert not list(out.glob(".*.tmp.h5"))

        # --verify: checksums recomputed on the workers; a shard changed on disk (same size) is made again
        path = out / manifest.shards[4].file
        raw = bytearray(path.read_bytes())
        raw[-100] ^= 0xFF
        path.write_bytes(bytes(raw))
        checked = produce(spec, out, client, verify=True)
        assert (checked.produced, checked.skipped) == (1, SHARDS - 1)
        assert path.read_bytes() != bytes(raw) and np.array_equal(read_showers(out).cells, expected.cells)

        with pytest.raises(ProductionError, match="seed: 11 there, 12 now"):
            produce(ProductionSpec.create(checkpoint, n=N, shards=SHARDS, seed=12, batch_size=BATCH), out, client)

    # the folder is one sample for every reader
    assert np.array_equal(read_showers(out, start=9000, stop=21000).cells, expected.cells[9000:21000])
    info = inspect(out)
    assert info.n == N and info.attrs["shards"] == SHARDS and "shard_index" not in info.attrs
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    assert f"{N}" in capsys.readouterr().out
    assert json.loads((out / MANIFEST).read_text())["n_showers"] == N


def test_shards_of_a_reference_files_conditions_are_the_one_process_run(tmp_path, checkpoint, toy_geometry):
    """--energy-from: every shard reads its range of the reference file (here made in-process, no cluster)."""
    from dataclasses import asdict

    from calogan.distributed.production import produce_shard
    from calogan.io import write_showers
    from calogan.shards import Shard

    torch.set_num_threads(1)
    reference = write_showers(tmp_path / "ref.h5", toy_showers(toy_geometry, n=230, seed=8))
    assert main(["generate", "--model", str(checkpoint), "--energy-from", str(reference), "--batch-size", "50"]
                + ["--seed", "4", "--threads", "1", "--no-progress", "-o", str(tmp_path / "one.h5")]) == 0  # fmt: skip
    spec = ProductionSpec.create(checkpoint, shards=3, seed=4, batch_size=50, energy_from=reference)
    assert spec.n == 230
    folder = tmp_path / "shards"
    folder.mkdir()
    plan = plan_shards(spec.n, spec.shards, align=spec.batch_size)
    parts = [Shard(k, f"shard-{k}.h5", a, c, 4) for k, (a, c) in enumerate(plan)]
    done = [produce_shard(spec.to_dict(), str(folder), asdict(s))[0] for s in parts]
    assert [d["count"] for d in done] == [c for _, c in plan] and all(d["sha256"] for d in done)
    got = np.concatenate([read_showers(folder / s.file).cells for s in parts])
    assert np.array_equal(got, read_showers(tmp_path / "one.h5").cells)
    # a shard file already there, complete and of this production, is kept as it is
    before = (folder / parts[1].file).stat().st_mtime_ns
    assert produce_shard(spec.to_dict(), str(folder), asdict(parts[1]), done[1]["sha256"]) == (done[1], False)
    assert (folder / parts[1].file).stat().st_mtime_ns == before
