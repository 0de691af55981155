"""Datasets: on-disk formats (celeba), a synthetic writer of that format, and the decode-once cache."""
