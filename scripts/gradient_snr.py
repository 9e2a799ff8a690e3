"""Gradient SNR of the IWAE estimators as K grows; see pyro_vae/gradient_snr.py.

python scripts/gradient_snr.py --out runs/gradient_snr
"""

from pyro_vae.gradient_snr import main

if __name__ == "__main__":
    main()
