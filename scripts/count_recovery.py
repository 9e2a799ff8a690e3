"""See pyro_vae/count_study.py; run with --help for the options."""

from pyro_vae.count_study import count_recovery_main

if __name__ == "__main__":
    count_recovery_main()
