"""Seconds to write one volume as a DICOM CT series (``prdit sample --format dicom``, ``prdit convert``)
and to read it back, at 128³ and 256³ (int16 HU, one file per slice).

    python benchmarks/dicom_write.py
    python benchmarks/dicom_write.py --sizes 64,128,256 --repeats 5
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from prdit.data.dicom_writer import read_dicom_series, write_dicom_series
from prdit.data.io import Volume


def main() -> None:
    """Print the median write and read time and the series size per volume size."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="128,256", help="Volume sizes G (G³ voxels), comma-separated.")
    parser.add_argument("--repeats", type=int, default=3, help="Writes per size; the median is reported.")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    for size in (int(s) for s in args.sizes.split(",")):
        volume = Volume(rng.integers(-1024, 2000, (size, size, size)).astype(np.int16))
        writes, reads = [], []
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(args.repeats):
                folder = Path(tmp) / f"series_{r}"
                start = time.perf_counter()
                write_dicom_series(volume, folder, key="benchmark", model_name="benchmark", model_digest="0" * 64,
                                   seed=0, index=r)
                writes.append(time.perf_counter() - start)
                start = time.perf_counter()
                read_dicom_series(folder)
                reads.append(time.perf_counter() - start)
            megabytes = sum(p.stat().st_size for p in (Path(tmp) / "series_0").iterdir()) / 1e6
        print(f"{size}³: write {np.median(writes):.2f} s, read {np.median(reads):.2f} s (median of {args.repeats}), "
              f"{size} files, {megabytes:.1f} MB")


if __name__ == "__main__":
    main()
