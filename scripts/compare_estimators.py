"""Estimator comparison (the same as ``pyro-vae compare``); see pyro_vae/compare.py.

    python scripts/compare_estimators.py --dataset mnist-sample --epochs 100 \
        --out runs/compare-mnist-sample
"""

from pyro_vae.compare import main

if __name__ == "__main__":
    main()
