"""Synthetic handwriting: text lines and whole pages (cheques, prescriptions, homework) with exact ground truth.

- :mod:`fonts`   registry of handwriting-like fonts (Debian packages), character coverage, train/test font split
- :mod:`texts`   text sources per domain (cheque, prescription, homework, hanzi, generic)
- :mod:`render`  the line renderer (per-glyph jitter, slant, elastic warp, ink, paper, scan artefacts) and
                 :class:`~htr_ray.data.synth.render.LineGenerator`, the on-the-fly API for training
- :mod:`strokes` re-rendering of the real IAM-OnDB pen strokes with other pens, slants and scales
- :mod:`pages`   whole pages with printed and handwritten parts and per-line boxes
- :mod:`preview` contact sheets

Nothing here imports Ray; :mod:`htr_ray.generation` is the Ray Data shell.
"""
