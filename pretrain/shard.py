"""Write an ImageNet-style folder as WebDataset tar shards (layout and index: pretrain/shards.py).

    python -m pretrain.shard ROOT OUT [--shard-size 1000] [--split train] [--seed 0]
    python -m pretrain.shard --reindex OUT          # (re)build OUT/index.{json,npz} from existing shards

ROOT/<split>/<wnid>/* -> OUT/shard-000000.tar ... (<key>.jpg original bytes + <key>.cls + <key>.json) and
OUT/index.json + OUT/index.npz; pre-train on them with data.kind=shards data.root=OUT. Existing shard-*.tar files
in OUT are replaced. Exit status 0 on success, 1 on bad data (the message names the file), 2 on usage errors.
"""
from __future__ import annotations

import argparse
import sys

from pretrain.imageio import DataError


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pretrain.shard", description=__doc__.split("\n")[0])
    ap.add_argument("root", nargs="?", help="ImageNet-style folder (ROOT/<split>/<wnid>/*)")
    ap.add_argument("out", help="output folder for the shards and the index")
    ap.add_argument("--shard-size", type=int, default=1000, help="samples per shard (default 1000, ~110 MB)")
    ap.add_argument("--split", default="train")
    ap.add_argument("--seed", type=int, default=0, help="seed of the permutation that deals samples to shards")
    ap.add_argument("--reindex", action="store_true", help="only index the shards already in OUT")
    args = ap.parse_args(argv)
    if args.shard_size < 1:
        ap.error("--shard-size must be >= 1")
    if not args.reindex and args.root is None:
        ap.error("ROOT is required (or --reindex OUT)")
    from pretrain.shards import index_shards, write_shards
    try:
        if args.reindex:
            rec = index_shards(args.out)
        else:
            rec = write_shards(args.root, args.out, args.shard_size, args.split, args.seed,
                               progress=lambda k, n: print(f"\rshard {k}/{n}", end="", file=sys.stderr, flush=True))
            print(file=sys.stderr)
    except DataError as e:
        print(f"pretrain.shard: {e}", file=sys.stderr)
        return 1
    print(f"{args.out}: {rec['total']} samples in {len(rec['shards'])} shards")
    return 0


if __name__ == "__main__":
    sys.exit(main())
