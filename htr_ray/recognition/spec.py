"""The recognizer spec: everything that decides how a line image becomes text, in one dataclass.

Every job config (transcribe, evaluate, demo, the benchmarks) and the Serve app embed a
:class:`RecognizerSpec`, and every runtime builds its recognizer with :meth:`RecognizerSpec.build`,
so a line gives the same text in the bulk job, over HTTP and in evaluation. As a job's flags
(:func:`htr_ray.config.build_parser` flattens embedded dataclasses) the fields keep their own names:
``--model``, ``--decoder``, ``--lm``, ``--beam-width`` ...

Unset fields (``None``) take the model's own defaults: a checkpoint's ``model.json`` may name, under
``"decoding"``, the LM shipped beside it and the decoder settings it was tuned with.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from htr_ray import config, paths

DEFAULT_LINE_MODEL = paths.shipped_model("en_line_crnn_small", env="HTR_LINE_MODEL")


@dataclass
class RecognizerSpec:
    """How lines are read: model, backend, device, decoder and its options."""

    model: str = config.field(DEFAULT_LINE_MODEL, help="line recognizer: checkpoint or exported model URI")
    backend: str = config.field("torch", help="torch, onnx or torchscript (an exported model dir picks its own)")
    quantize: str = config.field(None, help="int8: dynamic quantisation (onnx/torch backends)")
    device: str = config.field("cpu", help="cpu or cuda")
    threads: int = config.field(None, help="intra-op threads of the model (default: the process's setting)")
    decoder: str = config.field(None, help="CTC decoder: greedy or beam (default: the model's own, else greedy)")
    lexicon: str = config.field(None, help="word list URI (one word a line) that steers beam search")
    lm: str = config.field(None, help="character n-gram LM (JSON) URI for beam search; 'none' for no LM "
                                      "(default: the LM the model names, when the decoder is beam)")
    beam_width: int = config.field(None, help="beam width (default: the model's, else 16)")
    lm_weight: float = config.field(None, help="weight of the LM log-probability in the beam score")
    char_bonus: float = config.field(None, help="beam score bonus per character")
    oov_penalty: float = config.field(None, help="beam score penalty per word not in the lexicon")
    lexicon_mode: str = config.field(None, help="favour or constrain (only lexicon words)")
    width_bucket: int = config.field(32, help="lines are padded to a multiple of this width (px); the same "
                                              "value everywhere gives the same text everywhere")
    batch_size: int = config.field(32, help="lines per model call")

    BEAM_OPTIONS = ("lm_weight", "char_bonus", "oov_penalty", "lexicon_mode", "beam_width")

    def beam_options(self) -> dict:
        return {k: getattr(self, k) for k in self.BEAM_OPTIONS if getattr(self, k) is not None}

    def replace(self, **changes) -> "RecognizerSpec":
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def resolved(self, meta: dict) -> "RecognizerSpec":
        """This spec with every decoding choice made, given the model's ``model.json`` (``meta``).

        Unset fields take the model's ``"decoding"`` defaults, then the library's: ``decoder`` (else
        greedy); ``lm``: the LM file the model names beside itself when the decoder is beam, else
        ``"none"``; beam options. An exported directory runs with its own backend unless one is asked
        for. Building the result gives the same recogniser as building this spec; a report can say
        exactly how lines were read (:mod:`htr_ray.evaluation.evaluate`)."""
        from htr_ray.io import storage

        defaults = dict(meta.get("decoding") or {})
        decoder = self.decoder or defaults.get("decoder") or "greedy"
        lm = self.lm
        if lm is None and decoder == "beam" and defaults.get("lm"):
            lm = storage.join(self.model, defaults["lm"])
        changes = {"decoder": decoder, "lm": "none" if lm in (None, "") else lm}
        for name, value in (defaults.get("beam_options") or {}).items():
            if name in self.BEAM_OPTIONS and getattr(self, name) is None:
                changes[name] = value
        if str(meta.get("format", "")).startswith("htr-ray-export") and self.backend in (None, "torch"):
            changes.update(backend=None, quantize=None)  # the export's own backend and quantisation
        return self.replace(**changes)

    def build(self):
        """The :class:`~htr_ray.recognition.recognizer.Recognizer` this spec describes."""
        from htr_ray.recognition.recognizer import Recognizer

        return Recognizer.from_spec(self)


# How the bulk job, Serve and the demo read lines unless told otherwise: ONNX Runtime int8 on one thread
# (1.9x torch's lines/s at the same CER on held-out lines, and a Serve replica without torch stays under
# 500 MB), decoder and LM as the model's model.json says. One value, so that a line reads the same in
# every runtime. GPU actors of the bulk job switch to torch on cuda (transcribe.actor_spec).
PAGE_READING_DEFAULT = RecognizerSpec(backend="onnx", quantize="int8", threads=1)
