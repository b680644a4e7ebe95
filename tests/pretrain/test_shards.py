"""WebDataset shards (pretrain/shards.py, python -m pretrain.shard): the standard layout, the index, per-rank reading,
mid-epoch resume, bad shards - and, on the toy world, sharded and folder runs seeing the same samples each epoch."""
from __future__ import annotations

import hashlib
import json
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.toydata import write_imagenet
from imgfactory import CONFIGS
from pretrain.data import DataError, ResumableDistributedSampler, build_transform, list_images
from pretrain.masking import BlockMaskGenerator
from pretrain.shard import main as shard_main
from pretrain.shards import ShardImageDataset, ShardIndex, ShardSampler, write_shards

pytestmark = pytest.mark.usefixtures("one_torch_thread")
N_PER_CLASS = 5          # 8 toy classes -> 40 training images


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """The toy world's ImageNet folder (benchmarks.toydata's writer, 32 px) and its shards of 7 (6 shards, the
    last one of 5: uneven on purpose)."""
    base = tmp_path_factory.mktemp("toy")
    write_imagenet(base / "imagenet", size=32, seed=0, n_train=N_PER_CLASS, n_val=1)
    assert shard_main([str(base / "imagenet"), str(base / "shards"), "--shard-size", "7"]) == 0
    return base / "imagenet", base / "shards"


def test_shards_are_standard_webdataset_tars_of_the_original_bytes(toy):
    root, out = toy
    paths = list_images(root, "imagenet_folder")
    rec = json.loads((out / "index.json").read_text())
    assert rec["total"] == len(paths) == 40 and [s["count"] for s in rec["shards"]] == [7] * 5 + [5]
    assert rec["classes"] == sorted({Path(p).parent.name for p in paths})
    seen = {}
    for s in rec["shards"]:
        with tarfile.open(out / s["name"]) as tar:
            names = tar.getnames()
            assert len(names) == 3 * s["count"]
            for n in names:
                key, ext = n.split(".", 1)
                assert ext in ("jpg", "cls", "json") and len(key) == 9 and key.isdigit()
            for n in names[::3]:
                key = n.split(".")[0]
                meta = json.loads(tar.extractfile(f"{key}.json").read())
                src = root / "train" / meta["path"]
                assert meta["index"] == int(key) and paths[int(key)] == str(src)
                assert tar.extractfile(n).read() == src.read_bytes()       # the original bytes, not re-encoded
                assert int(tar.extractfile(f"{key}.cls").read()) == rec["classes"].index(meta["wnid"])
                seen[int(key)] = s["name"]
    assert sorted(seen) == list(range(40))
    assert len({tuple(sorted(Path(paths[i]).parent.name for i, n in seen.items() if n == s["name"]))
                for s in rec["shards"]}) > 1          # dealt in a permutation: the shards mix the classes


def test_the_webdataset_library_reads_the_shards(toy):
    wds = pytest.importorskip("webdataset", reason="webdataset not installed (pip install .[shards])")
    root, out = toy
    urls = sorted(str(p) for p in out.glob("shard-*.tar"))
    got = {k: (img.size, cls) for k, img, cls in
           wds.WebDataset(urls, shardshuffle=False).decode("pil").to_tuple("__key__", "jpg", "cls")}
    assert len(got) == 40 and all(size == (32, 32) for size, _ in got.values())


def test_reindex_rebuilds_the_same_index(toy, tmp_path):
    _, out = toy
    copy = tmp_path / "s"
    copy.mkdir()
    for p in out.glob("shard-*.tar"):
        (copy / p.name).write_bytes(p.read_bytes())
    assert shard_main(["--reindex", str(copy)]) == 0
    a, b = np.load(out / "index.npz"), np.load(copy / "index.npz")
    assert all(np.array_equal(a[k], b[k]) for k in ("shard", "offset", "size", "label"))


def _keys(sampler) -> list[int]:
    return [i for i, _ in sampler]


def test_each_rank_reads_its_own_run_of_shards_and_all_ranks_step_together(toy):
    index = ShardIndex(toy[1])
    for world in (1, 2, 3, 4):
        samplers = [ShardSampler(index, world, r, seed=3) for r in range(world)]
        for s in samplers:
            s.set_epoch(2)
        keys = [_keys(s) for s in samplers]
        assert {len(k) for k in keys} == {40 // world}                       # same samples -> same steps (DDP)
        flat = [i for k in keys for i in k]
        assert len(set(flat)) == len(flat) == 40 // world * world           # at most once per epoch
        shards = [s.shards_of_rank() for s in samplers]
        for r in range(world - 1):                                           # contiguous blocks: neighbours share
            assert len(set(shards[r]) & set(shards[r + 1])) <= 1             # at most the boundary shard
        seq = samplers[0].epoch_sequence()
        runs = [int(index.shard[i]) for i in seq]
        assert sum(a != b for a, b in zip(runs, runs[1:])) == 5             # the epoch reads each shard in one run
    a = ShardSampler(index, 1, 0, seed=3)
    a.set_epoch(0)
    b = ShardSampler(index, 1, 0, seed=3)
    b.set_epoch(1)
    assert _keys(a) != _keys(b) and sorted(_keys(a)) == sorted(_keys(b)) == list(range(40))


def test_resume_mid_epoch_continues_at_the_very_next_sample(toy):
    index = ShardIndex(toy[1])
    s = ShardSampler(index, 2, 1, seed=0)
    s.set_epoch(4)
    full = list(s)
    s.set_epoch(4, offset=13)
    assert list(s) == full[13:] and len(s) == 20 - 13
    with pytest.raises(ValueError, match="offset 21 outside"):
        s.set_epoch(4, offset=21)


def _digest(x: torch.Tensor, m: torch.Tensor) -> str:
    return hashlib.sha256(x.numpy().tobytes() + m.numpy().tobytes()).hexdigest()


@pytest.mark.parametrize("backend", ["pil", "torchcodec"])
def test_sharded_and_folder_runs_see_the_same_samples_each_epoch(toy, tmp_path, backend):
    """Two real pre-training runs (ResNet-18, 2 epochs, one persistent worker) on the toy world, one from the
    folder, one from its shards: every epoch the model gets the same multiset of (pixels, mask) samples."""
    if backend == "torchcodec":
        pytest.importorskip("torchcodec.decoders", reason="torchcodec not installed (pip install .[gpu_data])")
    from pretrain.config import load_config
    from pretrain.engine import Trainer, run_loop

    root, out = toy
    seen: dict[str, dict[int, Counter]] = {}

    class Recording(Trainer):
        def compute_loss(self, batch, micro):
            img, mask, skipped = batch
            x, m, _ = self._model_input(img, mask)
            epoch = self.step // self.plan.steps_per_epoch
            seen[self.cfg.data.kind].setdefault(epoch, Counter()).update(_digest(a, b) for a, b in zip(x, m))
            return super().compute_loss(batch, micro)

    for kind, data_root in (("imagenet_folder", root), ("shards", out)):
        seen[kind] = {}
        cfg = load_config(CONFIGS / "tiny_r18.yaml", [
            f"data.root={data_root}", f"data.kind={kind}", f"data.backend={backend}", "data.num_workers=1",
            "model.input_size=32", "run.batch_per_gpu=8", "schedule.epochs=2", "run.log_interval=5",
            "run.image_interval=0", "run.tensorboard=false", "run.export_at_end=false", "run.ckpt_interval=100",
            f"run.out_dir={tmp_path / kind}"])
        run_loop(Recording(cfg))
    folder, sharded = seen["imagenet_folder"], seen["shards"]
    assert sorted(folder) == sorted(sharded) == [0, 1]
    for epoch in (0, 1):
        assert sum(folder[epoch].values()) == 40 and len(folder[epoch]) == 40
        assert folder[epoch] == sharded[epoch], f"epoch {epoch}: different samples"
    assert folder[0] != folder[1]                        # new crops and masks each epoch


def test_missing_truncated_and_unindexed_shards_fail_naming_the_file(toy, tmp_path, capsys):
    _, out = toy
    with pytest.raises(DataError, match=r"no index.json .*python -m pretrain.shard ROOT OUT"):
        ShardIndex(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    for p in out.iterdir():
        (bad / p.name).write_bytes(p.read_bytes())
    (bad / "shard-000002.tar").unlink()
    with pytest.raises(DataError, match=r"shard shard-000002.tar is missing \(index.json lists 6 shards\)"):
        ShardIndex(bad)
    (bad / "shard-000002.tar").write_bytes((out / "shard-000002.tar").read_bytes()[:5000])
    with pytest.raises(DataError, match=r"shard-000002.tar: 5000 bytes, index.json says \d+ \(truncated"):
        ShardIndex(bad)
    assert shard_main(["--reindex", str(bad)]) == 1
    assert "shard-000002.tar: not a readable tar shard (ReadError" in capsys.readouterr().err
    assert shard_main([str(tmp_path / "nope"), str(tmp_path / "o")]) == 1
    assert "nope/train not found" in capsys.readouterr().err


def test_a_corrupt_member_is_a_counted_skip_replaced_from_the_same_shard(toy, tmp_path):
    _, out = toy
    bad = tmp_path / "bad"
    bad.mkdir()
    for p in out.iterdir():
        (bad / p.name).write_bytes(p.read_bytes())
    index = ShardIndex(bad)
    victim = int(index.members[1][2])                        # a sample of shard 1: overwrite its JPEG with zeros
    blob = bytearray((bad / "shard-000001.tar").read_bytes())
    off, size = int(index.offset[victim]), int(index.size[victim])
    blob[off:off + size] = bytes(size)
    (bad / "shard-000001.tar").write_bytes(bytes(blob))
    ds = ShardImageDataset(index, build_transform(32, (0.8, 1), (0.75, 4 / 3), 0.5, output="uint8"),
                           BlockMaskGenerator(32, 16, 16, 0.5), seed=0, skip_budget=5)
    with pytest.warns(UserWarning, match=rf"skipping image: .*shard-000001.tar:{victim:09d}: unreadable image"):
        x, mask, skipped = ds[(victim, 0)]
    assert x.shape == (3, 32, 32) and len(skipped) == 1 and f"shard-000001.tar:{victim:09d}" in skipped[0]
    # the replacement comes from the same shard, deterministically
    repl = ds.replacement(victim, np.random.default_rng(0))
    assert int(index.shard[repl]) == 1
    with pytest.warns(UserWarning):
        again = ds[(victim, 0)]
    assert torch.equal(again[0], x)


def test_folder_sampler_and_shard_sampler_agree_on_sizes(toy):
    index = ShardIndex(toy[1])
    for world in (1, 3):
        f = ResumableDistributedSampler(40, world, 0)
        s = ShardSampler(index, world, 0)
        assert len(f) == len(s) == 40 // world


def test_write_shards_refuses_a_bad_shard_size(toy, tmp_path):
    with pytest.raises(ValueError, match="--shard-size must be >= 1"):
        write_shards(toy[0], tmp_path / "o", shard_size=0)
