"""Metrics (CER, WER, calibration), evaluation of a model on shards, reports and the domain checks."""
