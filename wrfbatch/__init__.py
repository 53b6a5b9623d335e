"""wrfbatch: run WRF simulations on a Slurm cluster behind the Cloudrun REST API."""

__version__ = "0.1.0"
