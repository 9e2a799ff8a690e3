"""Training speed side by side (the same as ``pyro-vae bench``); see pyro_vae/benchmark.py.

python scripts/benchmark.py --dataset fashion-mnist --rounds 5 --out runs/bench
"""

import sys

from pyro_vae.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
