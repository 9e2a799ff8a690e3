"""See pyro_vae/studies.py; run with --help for the options."""

from pyro_vae.studies import beta_sweep_main

if __name__ == "__main__":
    beta_sweep_main()
