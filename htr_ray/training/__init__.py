"""The one-process training loop (data, contexts, fit), which Ray Train runs unchanged on each worker."""
