"""Correspondence classification on synthetic two-view data (paper Sec. 5.5, Table 6).

Trains CNNNet and CNNNet+N3 on the same sequence of synthetic sets, then prints mAP at 5°/10°/20°
for No Net, CNNNet and CNNNet+N3 on the test split. Any option of ``n3 sets`` works here, e.g.

    OMP_NUM_THREADS=1 nice -n 10 python examples/sets/correspondences.py --steps 300 --out runs/sets-pilot
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout without installing

from n3cli.sets.train import main  # noqa: E402

if __name__ == "__main__":
    main(sys.argv[1:])
