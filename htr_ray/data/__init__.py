"""Real data sets into shards, augmentation, lexicons and domain word lists, and synth/ (generated lines and pages)."""
