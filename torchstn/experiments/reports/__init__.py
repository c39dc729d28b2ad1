"""Reports: ``reproduce`` (the paper's tables beside ours), figures of runs, the demo."""
