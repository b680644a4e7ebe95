"""The A²MIM-vs-bare train-step benchmark runs end to end on a tiny case and writes its JSON."""
import json

import pytest

from benchmarks.perf import pretrain_step

TINY = ["--models", "resnet18", "--precisions", "fp32", "--batch", "2", "--size", "64", "--threads", "1"]


def test_pretrain_step_timing_channels_last(tmp_path):
    out = tmp_path / "perf.json"
    pretrain_step.main(TINY + ["--iters", "2", "--warmup", "0", "--no-memory", "--channels-last", "--out", str(out)])
    res = json.loads(out.read_text())
    (row,) = res["results"]
    assert row["model"] == "resnet18" and len(row["a2mim_all_s"]) == len(row["bare_all_s"]) == 2
    assert row["a2mim_s"] > 0 and row["bare_s"] > 0 and row["cpu_time_ratio"] > 0
    assert row["time_ratio"] == pytest.approx(row["a2mim_s"] / row["bare_s"])
    assert res["config"]["channels_last"] is True


@pytest.mark.slow
def test_pretrain_step_memory_subprocesses():
    res = pretrain_step.main(TINY + ["--iters", "1", "--warmup", "0"])
    (row,) = res["results"]
    # A²MIM holds at least the decoder (512 -> 32*32*3 1x1 conv: 1.57 M params) more: params+grad+2 AdamW states
    decoder_mb = (512 * 3072 + 3072) * 4 * 4 / 2 ** 20
    assert row["a2mim_peak_mb"] - row["bare_peak_mb"] > 0.8 * decoder_mb
    assert row["mem_ratio"] > 1.0


def test_pretrain_step_convnext_tiny_is_a_default_and_runs(tmp_path):
    assert pretrain_step.DEFAULT_MODELS == ("resnet50", "convnext_tiny", "vit_base")
    out = tmp_path / "perf.json"
    res = pretrain_step.main(["--models", "convnext_tiny", "--precisions", "fp32", "--batch", "2", "--size", "64",
                              "--threads", "1", "--iters", "1", "--warmup", "0", "--no-memory", "--out", str(out)])
    (row,) = json.loads(out.read_text())["results"]
    assert row["model"] == "convnext_tiny" and row == json.loads(json.dumps(res["results"][0]))
    assert row["cpu_time_ratio"] == pytest.approx(row["a2mim_cpu_s"] / row["bare_cpu_s"])


def test_pretrain_step_refuses_an_unknown_preset(capsys):
    with pytest.raises(SystemExit):
        pretrain_step.main(["--models", "convnext_t"])
    assert "invalid choice: 'convnext_t'" in capsys.readouterr().err
