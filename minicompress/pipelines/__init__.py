"""Compression jobs for pretrained models (the digits job is `minicompress.pipeline`)."""
