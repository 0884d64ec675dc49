"""htr-ray: distributed handwriting recognition.

Laid out by task (docs/DESIGN.md has the module map); each folder depends only on those above it:

    io/           storage URIs, image decoding, sample shards
    data/         ingest of real formats, augmentation, lexicons, synth/ (generated lines and pages)
    models/       architectures by name, self-describing checkpoints, charset
    recognition/  recognizer, decoders, character LM, export
    evaluation/   metrics, evaluate, reports, domain checks
    training/     the one-process training loop
    layout/       page image -> lines (line finders), printed vs handwritten
    pages/        the page reader, result containers, ALTO / PAGE-XML / hOCR
    distributed/  the Ray shells: runtime, train, transcribe, serve, generation

Everything but ``distributed/`` imports and runs without Ray.
"""

__version__ = "0.1.0"
