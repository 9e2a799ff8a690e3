"""See pyro_vae/studies.py; run with --help for the options."""

from pyro_vae.studies import ae_vs_vae_main

if __name__ == "__main__":
    ae_vs_vae_main()
