"""See pyro_vae/model_comparison.py; run with --help for the options."""

from pyro_vae.model_comparison import main

if __name__ == "__main__":
    main()
