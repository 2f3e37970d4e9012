"""The floor of `eval/feature_distance` for a dataset: real images against real images.

Compares `--num` training images (drawn with `--seed`) with the whole eval split, in the features
of the same cached classifier the VAE and GAN evals use, so a generator's distance can be read
against it (a perfect generator would score about this, not 0, at these sample sizes).

    python tools/feature_distance_floor.py --data digits [--binarize] [--num 360] [--seed 0]
"""

import argparse

import numpy as np

from fmjax.data.digits import Digits
from fmjax.metrics import feature_distance


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits", choices=["digits"])
    parser.add_argument("--binarize", action="store_true")
    parser.add_argument("--num", type=int, default=360)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    arrays = Digits(binarize=args.binarize).pipeline(0).arrays
    net = feature_distance.load_or_train(args.data, arrays)
    pick = np.random.default_rng(args.seed).choice(len(arrays.x_train), args.num, replace=False)
    distance = net.distance(arrays.x_train[pick], arrays.x_eval)
    print(f"{args.data}{' (binarized)' if args.binarize else ''}: real/real feature distance "
          f"{distance:.3f} ({args.num} train vs {len(arrays.x_eval)} eval images; classifier "
          f"test accuracy {net.test_accuracy:.3f})")


if __name__ == "__main__":
    main()
