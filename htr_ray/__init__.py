"""htr-ray: distributed handwriting recognition.

The core (storage, images, shards, datasets, synth, models, decode, recognizer, metrics) is plain
Python + torch and imports without Ray; the Ray shells (training, transcribe, serving) sit on top.
"""

__version__ = "0.1.0"
