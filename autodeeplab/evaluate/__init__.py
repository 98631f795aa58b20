"""The evaluate stage: a checkpoint's mIoU table, single-scale or multi-scale with flip."""
