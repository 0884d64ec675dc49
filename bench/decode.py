"""Decoder benchmark: greedy vs beam vs beam + lexicon vs beam + LM (vs both): CER and ms per line.

Two sources of CTC outputs:

- a real line checkpoint (``--model URI --data SHARDS``): the model's log-probabilities for the held-out
  lines are computed once, then every decoder reads the same outputs (decode time only is measured;
  the model's own time per line is printed apart); the LM is trained on ``--lm-text`` (default: the
  IAM-OnDB lines of *train* forms) and the lexicon is the words of that text (plus the drug list);
- ``--synthetic`` (no trained model needed): log-probabilities simulated from held-out texts (IAM-OnDB
  lines of test forms, and synthetic prescription lines) with a controlled rate of confusable
  characters and faint characters, so that the decoders' gains can be compared. Synthetic figures
  show what the decoders can repair, not what a trained model will get.

    python bench/decode.py --synthetic --lines 300
    python bench/decode.py --model models/iam_line --data work/shards/iam --lines 300

Prints a table and writes JSON (``--out``, default work/bench/decode.json).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from htr_ray.evaluation import metrics  # noqa: E402
from htr_ray.recognition.decode import BeamConfig, Lexicon, beam_search, greedy  # noqa: E402
from htr_ray.recognition.lm import CharNgramLM  # noqa: E402

CONFUSABLE = {
    "a": "oeu", "o": "a0e", "e": "ca", "c": "eo", "l": "1it", "i": "lj1", "t": "lf", "n": "urm", "u": "nv",
    "m": "nw", "r": "vn", "s": "5z", "h": "bk", "b": "h6", "d": "a", "g": "q9y", "q": "g", "y": "gv", "v": "ru",
    "w": "m", "f": "t", "k": "h", "p": "n", "I": "l1", "0": "oO", "1": "l7", "5": "s", "7": "1", "9": "g",
}


def simulate(text: str, charset: str, rng: np.random.Generator, confuse: float = 0.10, faint: float = 0.04) -> np.ndarray:
    """(T, C) log-probabilities a CTC model might give for ``text``: each character peaks on 1-3 frames
    between blank frames; with probability ``confuse`` a look-alike character scores about as high
    (and wins about half the time); with probability ``faint`` the character is barely above the blank."""
    C = len(charset) + 1
    idx = {c: i + 1 for i, c in enumerate(charset)}
    rows = []

    def frame(peaks: dict[int, float]) -> np.ndarray:
        z = rng.normal(0.0, 1.0, C)
        for k, v in peaks.items():
            z[k] += v
        return z

    rows.append(frame({0: rng.uniform(6, 9)}))
    for ch in text:
        k = idx.get(ch)
        if k is None:
            continue
        strength = rng.uniform(5, 10)
        peaks = {k: strength}
        u = rng.random()
        if u < confuse:
            alts = [a for a in CONFUSABLE.get(ch, "") if a in idx] or list(charset)
            alt = idx[alts[int(rng.integers(len(alts)))]]
            peaks[alt] = strength + rng.normal(0.0, 1.0)
        elif u < confuse + faint:
            peaks = {k: strength * 0.5, 0: strength * 0.55}
        for _ in range(int(rng.integers(1, 4))):
            rows.append(frame(peaks))
        for _ in range(int(rng.integers(1, 3))):
            rows.append(frame({0: rng.uniform(5, 9)}))
    z = np.stack(rows)
    return (z - np.logaddexp.reduce(z, axis=1, keepdims=True)).astype(np.float32)


def iam_lines(split: str) -> list[str]:
    from htr_ray.data.synth.texts import _iam_labels_path, iam_form_split

    out = []
    with open(_iam_labels_path(), encoding="utf-8") as fh:
        next(fh, None)
        for row in fh:
            parts = row.rstrip("\n").split("\t")
            if len(parts) >= 3 and parts[2].strip() and iam_form_split(parts[0]) == split:
                out.append(parts[2])
    return out


def _trigrams(text: str) -> set[tuple[str, ...]]:
    w = text.split()
    return {tuple(w[i:i + 3]) for i in range(len(w) - 2)}


def prescription_lines(n: int, seed: int) -> list[str]:
    from htr_ray.data.synth.texts import drug_line, sig_line

    rng = np.random.default_rng(seed)
    return [drug_line(rng) if k % 2 == 0 else sig_line(rng) for k in range(n)]


def lexicon_words(lines: list[str]) -> list[str]:
    from htr_ray.data.synth.texts import DRUGS, FORMS, FREQS, ROUTES

    words = {w.strip(".,;:!?\"'()") for ln in lines for w in ln.split()}
    words |= set(DRUGS) | set(FORMS) | set(ROUTES) | {w for f in FREQS for w in f.split()}
    return sorted(w for w in words if w and any(ch.isalpha() for ch in w))


def run_decoders(cases: list[tuple[str, np.ndarray]], charset: str, lm: CharNgramLM, lexicon: Lexicon,
                 beam_width: int, lm_weight: float, oov_penalty: float, char_bonus: float) -> list[dict]:
    configs = [
        ("greedy", None),
        (f"beam {beam_width}", dict(lexicon=None, lm=None)),
        (f"beam {beam_width} + lexicon", dict(lexicon=lexicon, lm=None)),
        (f"beam {beam_width} + LM", dict(lexicon=None, lm=lm)),
        (f"beam {beam_width} + LM + lexicon", dict(lexicon=lexicon, lm=lm)),
    ]
    refs = [t for t, _ in cases]
    rows = []
    for name, opts in configs:
        hyps, confs = [], []
        t0 = time.perf_counter()
        for _, lp in cases:
            if opts is None:
                d = greedy(lp, charset)
            else:
                d = beam_search(lp, charset, lexicon=opts["lexicon"], lm=opts["lm"],
                                config=BeamConfig(beam_width=beam_width, lm_weight=lm_weight, oov_penalty=oov_penalty,
                                                  char_bonus=char_bonus))
            hyps.append(d.text)
            confs.append(d.confidence)
        secs = time.perf_counter() - t0
        cal = metrics.calibration(confs, refs, hyps, bins=5)
        rows.append({"decoder": name, "cer": metrics.cer(refs, hyps), "wer": metrics.wer(refs, hyps),
                     "ms_per_line": 1000 * secs / max(len(cases), 1), "lines": len(cases),
                     "calibration_spearman": cal["spearman"], "calibration_violations": cal["monotonic_violations"]})
    return rows


def print_table(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    print(f"{'decoder':<30} {'CER':>7} {'WER':>7} {'ms/line':>9}")
    for r in rows:
        print(f"{r['decoder']:<30} {r['cer']:>7.4f} {r['wer']:>7.4f} {r['ms_per_line']:>9.2f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--synthetic", action="store_true", help="simulate CTC outputs from held-out texts")
    ap.add_argument("--model", help="line checkpoint URI (real model outputs)")
    ap.add_argument("--data", help="sample shards URI for --model")
    ap.add_argument("--split", default="test")
    ap.add_argument("--lines", type=int, default=300, help="lines per test set")
    ap.add_argument("--lm-text", help="text file for the LM (default: IAM-OnDB train-form lines + synthetic prescriptions)")
    ap.add_argument("--order", type=int, default=6)
    ap.add_argument("--beam-width", type=int, default=16)
    ap.add_argument("--lm-weight", type=float, default=0.5)
    ap.add_argument("--oov-penalty", type=float, default=None, help="default: 2.0 with an LM, 4.0 without")
    ap.add_argument("--char-bonus", type=float, default=None, help="default: 2.0 with an LM, 0.5 with a lexicon only")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="work/bench/decode.json")
    ap.add_argument("--save-lm", help="only write the LM of IAM-OnDB train-form text (no test-form trigram) "
                                      "to this JSON path, and its text beside it (.txt), then stop")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    # the LM never sees a test sentence: train-form lines sharing any word trigram with a test-form line
    # are left out too (IAM-OnDB forms of different writers can copy the same LOB text)
    test_trigrams = set().union(*[_trigrams(t) for t in iam_lines("test")])
    iam_train = [t for t in iam_lines("train") if not (_trigrams(t) & test_trigrams)]
    if args.save_lm:
        CharNgramLM.train(iam_train, order=args.order).save(args.save_lm)
        Path(args.save_lm).with_suffix(".txt").write_text("\n".join(iam_train) + "\n", encoding="utf-8")
        print(f"wrote {args.save_lm}: order {args.order}, {len(iam_train)} lines of train forms")
        return 0
    train_text = iam_train + prescription_lines(20000, seed=1000 + args.seed)
    if args.lm_text:
        train_text = Path(args.lm_text).read_text(encoding="utf-8").splitlines()
    t0 = time.perf_counter()
    lm = CharNgramLM.train(train_text, order=args.order)
    lm_seconds = time.perf_counter() - t0
    lexicon = Lexicon(lexicon_words(train_text))
    result = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "command": " ".join(sys.argv),
              "machine": f"{platform.machine()}, {os.cpu_count()} cpus", "lm_order": args.order,
              "lm_train_seconds": round(lm_seconds, 2), "lexicon_words": len(lexicon), "sets": {}}
    rng = np.random.default_rng(args.seed)

    if args.model:
        from htr_ray.io import shards
        from htr_ray.evaluation.evaluate import expand_row
        from htr_ray.recognition.recognizer import Recognizer

        rec = Recognizer.from_uri(args.model)
        charset = "".join(rec.charset)
        items = []
        for row in shards.iter_rows(args.data, args.split):
            items.extend(it for it in expand_row(row) if it.get("gray") is not None)
            if len(items) >= args.lines:
                break
        items = items[: args.lines]
        t0 = time.perf_counter()
        lps, _ = rec.log_probs([it["gray"] for it in items])
        model_ms = 1000 * (time.perf_counter() - t0) / max(len(items), 1)
        cases = [(it["truth"], lp) for it, lp in zip(items, lps) if lp is not None]
        rows = run_decoders(cases, charset, lm, lexicon, args.beam_width, args.lm_weight, args.oov_penalty,
                            args.char_bonus)
        result["sets"]["model"] = {"model": args.model, "data": args.data, "model_ms_per_line": model_ms, "rows": rows}
        print_table(f"{args.model} on {args.data} [{args.split}], {len(cases)} lines (model {model_ms:.1f} ms/line)", rows)
    if args.synthetic or not args.model:
        charset = "".join(sorted({ch for t in train_text for ch in t}))
        tests = {"iam_test_forms": iam_lines("test")[: args.lines],
                 "prescriptions": prescription_lines(args.lines, seed=2000 + args.seed)}
        for name, texts in tests.items():
            cases = [(t, simulate(t, charset, rng)) for t in texts if all(ch in charset for ch in t)]
            rows = run_decoders(cases, charset, lm, lexicon, args.beam_width, args.lm_weight, args.oov_penalty,
                                args.char_bonus)
            result["sets"][f"synthetic_{name}"] = {"rows": rows, "frames_per_line": float(np.mean([len(lp) for _, lp in cases]))}
            print_table(f"synthetic outputs, {name}: {len(cases)} lines", rows)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
