"""python -m transfer.classification.train CONFIG --weights W.safetensors [--data-root ROOT] [--work-dir D] [--tiny]
[key=value ...]: ImageNet-1K fine-tuning or linear probing (CONFIG: transfer/classification/configs/*.yaml).

--tiny: a CPU smoke run of any preset (TINY below, before your own key=value overrides, which win); the protocol
is marked +tiny.
Launch with torchrun / srun for several processes. The run folder (--work-dir, default runs/classification/<config
stem>) auto-resumes; a complete one is left as it is. Writes load_report.json (the weight gate: every backbone
tensor matched, else IncompleteLoadError), config.yaml, metrics.jsonl, tb/, checkpoints/, result.json and done.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

CONFIG_DIR = Path(__file__).parent / "configs"
# --tiny: 2 steps of batch 4 at 64 px, no workers, no repeated augmentation or SyncBN, evaluation at the end only
TINY = ["run.max_steps=2", "run.batch_per_gpu=4", "run.log_interval=1", "run.eval_interval=0", "run.syncbn=false",
        "data.num_workers=0", "data.repeated_aug=1", "data.train_size=64", "data.test_size=64", "data.test_resize=73"]


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("python -m transfer.classification.train", add_help=add_help,
                                description="ImageNet fine-tuning / linear probing of an exported backbone",
                                epilog="example: python -m transfer.classification.train "
                                       "transfer/classification/configs/tiny_finetune_r18.yaml --weights "
                                       "w.safetensors --data-root runs/toy/data/imagenet --work-dir runs/ft")
    p.add_argument("config", help="YAML preset (a path, or a name in transfer/classification/configs/)")
    p.add_argument("--weights", required=True, help="exported backbone .safetensors (or an official A2MIM .pth)")
    p.add_argument("--data-root", help="ImageNet folder with train/ and val/ class folders (sets data.root)")
    p.add_argument("--work-dir", "--out", dest="work_dir",
                   help="run folder (sets run.out_dir; default runs/classification/<config stem>)")
    p.add_argument("--tiny", action="store_true", help="CPU smoke run: " + " ".join(TINY))
    p.add_argument("--force-new", action="store_true",
                   help="the run folder holds a run made from other inputs (or any run): move it aside, start fresh")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. optim.lr=1e-3 run.max_steps=20")
    return p


def resolve_config(name: str, config_dir: Path = CONFIG_DIR) -> Path:
    """A YAML path as given, else <config_dir>/<name>.yaml (a preset name)."""
    path = Path(name)
    if path.is_file() or path.suffix in (".yaml", ".yml"):
        return path
    return config_dir / f"{name}.yaml"


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from pretrain.checkpoint import CheckpointError
    from pretrain.config import ConfigError
    from pretrain.data import DataError
    from pretrain.export_format import ExportFormatError
    from pretrain.fingerprint import InputsChangedError
    from pretrain.runlock import RunLockError
    from pretrain.signals import RunInterrupted
    from transfer.weights import IncompleteLoadError, WeightsFormatError

    config = resolve_config(args.config)
    over = [f"model.weights={args.weights}",
            f"run.out_dir={args.work_dir or Path('runs') / 'classification' / config.stem}"]
    if args.data_root:
        over.append(f"data.root={args.data_root}")
    try:
        from transfer.classification.config import load_config
        cfg = load_config(config, [*over, *(TINY if args.tiny else []), *args.overrides])
        from pretrain.runner import run_loop
        from transfer.classification.task import ClassificationLoop
        from transfer.results import override_markers
        loop = ClassificationLoop(cfg)
        # a changed recipe is never the published protocol
        loop.markers = override_markers(args.overrides) + (["tiny"] if args.tiny else [])
        loop.force_new = args.force_new
        run_dir = run_loop(loop)
    except RunInterrupted as e:            # a stop signal: saved; run the same command again to resume
        print(f"{e}", file=sys.stderr)
        return e.code
    except (ConfigError, DataError, CheckpointError, FloatingPointError, IncompleteLoadError, WeightsFormatError,
            ExportFormatError, FileNotFoundError, RunLockError, InputsChangedError) as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    logging.getLogger("transfer.classification").info("run folder: %s", run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
