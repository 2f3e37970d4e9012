"""Model compression: quantization (Qwix) and pruning of trained runs."""
