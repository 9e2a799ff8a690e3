"""Speed measurements against the peers (see README.md here); not installed with pyro-vae."""
