"""How well `generation.scribble.stroke_mask` finds pencil strokes in phone photos of sketches.

    python benchmarks/sketch_cleanup.py [--seed 0] [--seed 1 ...] [--tolerance 2]

For each degraded photo of tests/generation/sketches.py (line drawings of scikit-image's sample
photos plus a free-hand scribble with varying pencil pressure, on white, off-white, yellowish and
ruled paper, with lighting gradients, soft shadows, grain, blur and JPEG at quality 60–85) it prints
the stroke recall (share of true stroke pixels with a found stroke within `--tolerance` px) and the
false-positive rate (share of paper pixels farther than that from any stroke marked as stroke),
then the median recall and the worst false-positive rate. Targets: median recall ≥ 0.9, every FP
rate ≤ 0.02. `stroke_mask` returns its mask at the photo's resolution, so it is compared as is.

The outside check scores other drawings under other degradations: tune for the general case, not
for these fixtures. Check every change on more than one seed (the seed redraws stroke widths,
darkness, pressure, shadows and the scribble), and look at the masks, not only at the numbers.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from generation.scribble import stroke_mask  # noqa: E402
from tests.generation.sketches import degraded_sketches, false_positive_rate, stroke_recall  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, action="append", help="test-set seed (repeatable; default 0)")
    parser.add_argument("--tolerance", type=float, default=2.0, help="distance in px that still counts as found")
    parser.add_argument("--save", type=Path, help="folder to write each photo and its mask to, for a look")
    args = parser.parse_args()
    failed = False
    for seed in args.seed or [0]:
        recalls, fps = [], []
        print(f"seed {seed}")
        print(f"  {'image':32} {'recall':>7} {'FP rate':>8} {'ms':>6}")
        for name, truth, photo in degraded_sketches(seed):
            start = time.perf_counter()
            found = stroke_mask(photo)
            elapsed = (time.perf_counter() - start) * 1000
            recall = stroke_recall(truth, found, args.tolerance)
            fp = false_positive_rate(truth, found, args.tolerance)
            recalls.append(recall)
            fps.append(fp)
            print(f"  {name:32} {recall:7.3f} {fp:8.4f} {elapsed:6.0f}")
            if args.save:
                from PIL import Image

                args.save.mkdir(parents=True, exist_ok=True)
                photo.save(args.save / f"{seed}-{name}.jpg")
                Image.fromarray(~found).save(args.save / f"{seed}-{name}-mask.png")
        median, worst = statistics.median(recalls), max(fps)
        ok = median >= 0.9 and worst <= 0.02
        failed |= not ok
        print(f"  median recall {median:.3f} (target ≥ 0.9)   worst FP rate {worst:.4f} (target ≤ 0.02)"
              f"   {'ok' if ok else 'MISSED'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
