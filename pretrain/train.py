"""Entry point: python -m pretrain.train --config pretrain/configs/<preset>.yaml key=value ...

Launch with torchrun (--nproc_per_node N) or srun; a run always auto-resumes from run.out_dir, and does nothing
when that folder holds a complete run.
"""
from __future__ import annotations

import argparse
import logging
import sys

from pretrain.checkpoint import CheckpointError
from pretrain.config import ConfigError, load_config
from pretrain.data import DataError
from pretrain.fingerprint import InputsChangedError
from pretrain.runlock import RunLockError
from pretrain.signals import RunInterrupted


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("A2MIM pre-training", add_help=add_help,
                                epilog="example: python -m pretrain.train --config pretrain/configs/tiny_r18.yaml "
                                       "data.root=data/toy run.out_dir=runs/tiny run.max_steps=20")
    p.add_argument("--config", help="YAML preset (pretrain/configs/*.yaml)")
    p.add_argument("--data-root", help="the images (sets data.root)")
    p.add_argument("--work-dir", "--out", dest="work_dir", help="the run folder (sets run.out_dir)")
    p.add_argument("--force-new", action="store_true",
                   help="the run folder holds a run made from other inputs (or any run): move it aside, start fresh")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. optim.lr=1e-3 run.batch_per_gpu=64")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    flags = ([f"data.root={args.data_root}"] if args.data_root else []) + \
        ([f"run.out_dir={args.work_dir}"] if args.work_dir else [])
    try:
        cfg = load_config(args.config, flags + args.overrides)     # key=value overrides come last
        from pretrain.engine import train
        run_dir = train(cfg, force_new=args.force_new)
    except RunInterrupted as e:            # a stop signal: saved; run the same command again to resume
        print(f"{e}", file=sys.stderr)
        return e.code
    except (ConfigError, DataError, CheckpointError, FloatingPointError, RunLockError, InputsChangedError,
            OSError) as e:                 # OSError: e.g. disk full
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    logging.getLogger("pretrain").info("run folder: %s", run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
