"""See pyro_vae/studies.py; run with --help for the options."""

from pyro_vae.studies import posterior_collapse_main

if __name__ == "__main__":
    posterior_collapse_main()
