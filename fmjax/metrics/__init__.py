"""What a run measures and where it goes: metric writers (console, JSONL, TensorBoard, W&B),
throughput and MFU, classification metrics, feature distance and image grids for generators."""
