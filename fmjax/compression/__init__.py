"""Compression of trained runs: quantization (Qwix), magnitude pruning, and `fmjax compress`."""
