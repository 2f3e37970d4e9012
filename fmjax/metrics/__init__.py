"""What a run measures and where it goes: metric writers (console, JSONL, TensorBoard),
throughput and MFU, classification metrics, feature distance and image grids for generators."""
