"""Decoder benchmark on a real line model: greedy vs beam vs beam + LM (CER, WER, speed), the tuning
of the beam options on VAL lines, and the compiled search against the Python one (same run, same
lines). ``--synthetic`` keeps the older simulated-output comparison (no model needed).

    # tune on val, then measure on test (held-out forms) with the model's shipped LM:
    python bench/decode.py --model models/en_line_crnn_small --data ../shared/data/iam_ondb_lines --tune
    # measure only, with the model's own "decoding" defaults:
    python bench/decode.py --model models/en_line_crnn_small --data ../shared/data/iam_ondb_lines
    python bench/decode.py --synthetic --lines 300

The data is read with the training loader and its split rule (``htr_ray.training.loop.load_rows``):
an IAM-style folder (labels.tsv) or sample shards. The LM is the model's (``model.json`` ``decoding.lm``)
unless ``--lm`` names another; build one with ``python -m htr_ray.recognition.lm`` (see
docs/decoding.md). Prints tables and writes JSON (``--out``, default work/bench/decode.json).
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


def iam_lines(split: str, data: str | None = None) -> list[str]:
    from htr_ray import paths
    from htr_ray.training.loop import load_rows

    return [r["text"] for r in load_rows(data or str(paths.shared_data() / "iam_ondb_lines"), split)
            if r.get("text", "").strip()]


def _trigrams(text: str) -> set[tuple[str, ...]]:
    w = text.split()
    return {tuple(w[i:i + 3]) for i in range(len(w) - 2)}


def prescription_lines(n: int, seed: int) -> list[str]:
    from htr_ray.data.synth.texts import drug_line, sig_line

    rng = np.random.default_rng(seed)
    return [drug_line(rng) if k % 2 == 0 else sig_line(rng) for k in range(n)]


def lexicon_words(lines: list[str]) -> list[str]:
    from htr_ray.data.lexicons import DRUGS, FORMS, FREQS, ROUTES

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
    print(f"{'decoder':<48} {'CER':>7} {'WER':>7} {'decode ms/line':>15} {'lines/s e2e':>12} {'CPU ms/line e2e':>16}")
    for r in rows:
        ms = r.get("ms_per_line", r.get("decode_ms_per_line_cpu"))
        e2e, cpu = r.get("lines_per_s_end_to_end"), r.get("end_to_end_cpu_ms_per_line")
        print(f"{r['decoder']:<48} {r['cer']:>7.4f} {r['wer']:>7.4f} {ms:>15.2f} {'' if e2e is None else f'{e2e:.1f}':>12} "
              f"{'' if cpu is None else f'{cpu:.2f}':>16}")


def _score(refs: list[str], hyps: list[str]) -> dict:
    return {"cer": metrics.cer(refs, hyps), "wer": metrics.wer(refs, hyps)}


def tune(cases: list[tuple[str, np.ndarray]], charset: str, lm, base: dict, weights, bonuses, widths) -> list[dict]:
    """Grid over lm_weight x char_bonus at the base beam width, then the beam width at the best pair;
    CER on the given (val) lines. Returns every row, best first."""
    refs = [t for t, _ in cases]
    rows = []
    for w in weights:
        for b in bonuses:
            cfg = BeamConfig(**{**base, "lm_weight": w, "char_bonus": b})
            hyps = [beam_search(lp, charset, lm=lm, config=cfg).text for _, lp in cases]
            rows.append({"beam_width": cfg.beam_width, "lm_weight": w, "char_bonus": b, **_score(refs, hyps)})
            print(f"  val: beam {cfg.beam_width} lm_weight {w} char_bonus {b}: CER {rows[-1]['cer']:.4f} "
                  f"WER {rows[-1]['wer']:.4f}", flush=True)
    best = min(rows, key=lambda r: (r["cer"], r["wer"]))
    for bw in widths:
        if bw == best["beam_width"]:
            continue
        cfg = BeamConfig(**{**base, "beam_width": bw, "lm_weight": best["lm_weight"], "char_bonus": best["char_bonus"]})
        hyps = [beam_search(lp, charset, lm=lm, config=cfg).text for _, lp in cases]
        rows.append({"beam_width": bw, "lm_weight": best["lm_weight"], "char_bonus": best["char_bonus"], **_score(refs, hyps)})
        print(f"  val: beam {bw} lm_weight {best['lm_weight']} char_bonus {best['char_bonus']}: CER {rows[-1]['cer']:.4f} "
              f"WER {rows[-1]['wer']:.4f}", flush=True)
    # the smallest beam within 0.0005 CER of the best: speed for nothing is not worth it
    top = min(r["cer"] for r in rows)
    near = [r for r in rows if r["cer"] <= top + 0.0005 and r["lm_weight"] == best["lm_weight"]
            and r["char_bonus"] == best["char_bonus"]]
    chosen = min(near, key=lambda r: (r["beam_width"], r["cer"]))
    return [chosen] + [r for r in sorted(rows, key=lambda r: (r["cer"], r["wer"])) if r is not chosen]


def model_bench(args, result: dict) -> None:
    import torch

    from htr_ray.io import images, storage
    from htr_ray.recognition.decode import make_decoder
    from htr_ray.recognition.lm import load_lm
    from htr_ray.recognition.recognizer import Recognizer
    from htr_ray.training.loop import load_rows

    torch.set_num_threads(args.threads)
    rec = Recognizer.from_uri(args.model)
    charset = "".join(rec.charset)
    decoding = dict(rec.meta.get("decoding") or {})
    lm_uri = args.lm or (storage.join(args.model, decoding["lm"]) if decoding.get("lm") else None)
    if not lm_uri:
        raise SystemExit("no LM: give --lm, or a model whose model.json names one under decoding.lm")
    t0 = time.perf_counter()
    lm = load_lm(lm_uri)
    result["lm"] = {"uri": lm_uri, "load_seconds": round(time.perf_counter() - t0, 3), "order": lm.order,
                    "states": int(len(lm.backoff)), "bytes": len(storage.read_bytes(lm_uri)), "source": lm.source}
    beam_opts = dict(decoding.get("beam_options") or {})
    for k in ("beam_width", "lm_weight", "char_bonus"):
        if getattr(args, k) is not None:
            beam_opts[k] = getattr(args, k)
    print(f"LM {lm_uri}: order {lm.order}, {len(lm.backoff)} states, loaded in {result['lm']['load_seconds']} s")

    def lines(split: str):
        rows = [r for r in load_rows(args.data, split) if r.get("image") and r.get("text", "").strip()]
        rows = rows[: args.lines] if args.lines else rows
        grays = [images.decode_gray(r["image"]) for r in rows]
        return [r["text"] for r in rows], grays

    if args.tune:
        refs, grays = lines("val")
        lps, _ = rec.log_probs(grays)
        cases = [(t, lp) for t, lp in zip(refs, lps) if lp is not None]
        print(f"tuning on {len(cases)} val lines (never test)")
        rows = tune(cases, charset, lm, {k: v for k, v in beam_opts.items() if k in BeamConfig.__dataclass_fields__},
                    args.weights, args.bonuses, args.widths)
        chosen = rows[0]
        beam_opts.update({k: chosen[k] for k in ("beam_width", "lm_weight", "char_bonus")})
        result["tuning"] = {"split": "val", "lines": len(cases), "chosen": chosen, "rows": rows}
        print(f"chosen on val: {json.dumps(chosen)}")

    refs, grays = lines(args.split)
    t0 = time.perf_counter()
    lps, _ = rec.log_probs(grays)
    model_s = time.perf_counter() - t0
    cases = [(t, lp) for t, lp in zip(refs, lps) if lp is not None]
    n = len(cases)
    greedy_rate = greedy_cpu = None
    decoders = [("greedy", "greedy", None, {}),
                (f"beam {beam_opts.get('beam_width', 16)}", "beam", None, {}),
                (f"beam {beam_opts.get('beam_width', 16)} + LM", "beam", lm, {}),
                (f"beam {beam_opts.get('beam_width', 16)} + LM, Python search (before)", "beam", lm, {"engine": "python"})]
    rows = []
    for name, kind, use_lm, extra in decoders:
        opts = {**beam_opts, **extra} if kind == "beam" else {}
        if kind == "beam" and use_lm is None:
            opts = {k: v for k, v in opts.items() if k not in ("lm_weight", "char_bonus", "oov_penalty")}
        dec = make_decoder(kind, charset, lm=use_lm, **opts)
        dec(cases[0][1])  # compile / warm up
        c0, w0 = time.process_time(), time.perf_counter()
        hyps = [dec(lp).text for _, lp in cases]
        dec_cpu, dec_wall = time.process_time() - c0, time.perf_counter() - w0
        row = {"decoder": name, **_score([t for t, _ in cases], hyps), "lines": n,
               "decode_ms_per_line_cpu": 1000 * dec_cpu / n, "decode_ms_per_line_wall": 1000 * dec_wall / n,
               "options": opts}
        if extra.get("engine") != "python" and args.e2e:
            # end to end: the recogniser (pre-processing, network on --threads threads, decoding) on the
            # same lines; wall lines/s depends on the machine's load, CPU ms per line much less
            rec.decode = dec
            c0, w0 = time.process_time(), time.perf_counter()
            rec.recognize(grays)
            e2e, e2e_cpu = len(grays) / (time.perf_counter() - w0), 1000 * (time.process_time() - c0) / len(grays)
            if kind == "greedy":
                greedy_rate, greedy_cpu = e2e, e2e_cpu
            row.update({"lines_per_s_end_to_end": e2e, "end_to_end_cpu_ms_per_line": e2e_cpu,
                        "end_to_end_cpu_vs_greedy": e2e_cpu / greedy_cpu if greedy_cpu else None})
        rows.append(row)
        print(f"{name:<48} CER {row['cer']:.4f} WER {row['wer']:.4f}  decode {row['decode_ms_per_line_cpu']:6.2f} ms/line "
              f"(CPU)  end to end {row.get('lines_per_s_end_to_end', float('nan')):6.1f} lines/s, "
              f"{row.get('end_to_end_cpu_ms_per_line', float('nan')):6.2f} CPU ms/line", flush=True)
    # end-to-end speed again, the decoders interleaved for --speed-repeats rounds (a shared machine's load
    # drifts: interleaving gives each decoder the same conditions); medians
    speed: dict[str, list[tuple[float, float]]] = {}
    decs = {r["decoder"]: make_decoder("greedy" if r["decoder"] == "greedy" else "beam", charset,
                                       lm=lm if "LM" in r["decoder"] else None, **r["options"])
            for r in rows if "Python" not in r["decoder"]}
    sample = grays[:: max(1, len(grays) // args.speed_lines)][: args.speed_lines] if args.speed_lines else grays
    for _ in range(args.speed_repeats):
        for name, dec in decs.items():
            rec.decode = dec
            c0, w0 = time.process_time(), time.perf_counter()
            rec.recognize(sample)
            speed.setdefault(name, []).append((len(sample) / (time.perf_counter() - w0),
                                               1000 * (time.process_time() - c0) / len(sample)))
    if speed:
        g = float(np.median([w for w, _ in speed["greedy"]]))
        for r in rows:
            if r["decoder"] in speed:
                r["interleaved_lines_per_s"] = [round(w, 1) for w, _ in speed[r["decoder"]]]
                r["interleaved_median_lines_per_s"] = float(np.median([w for w, _ in speed[r["decoder"]]]))
                r["interleaved_median_vs_greedy"] = r["interleaved_median_lines_per_s"] / g
                r["interleaved_median_cpu_ms_per_line"] = float(np.median([c for _, c in speed[r["decoder"]]]))
                r["interleaved_lines"] = len(sample)
                print(f"{r['decoder']:<48} interleaved x{args.speed_repeats} on {len(sample)} lines: median {r['interleaved_median_lines_per_s']:.1f} "
                      f"lines/s ({r['interleaved_median_vs_greedy']:.2f} x greedy), "
                      f"{r['interleaved_median_cpu_ms_per_line']:.2f} CPU ms/line", flush=True)
    result["sets"]["model"] = {"model": args.model, "data": args.data, "split": args.split, "lines": n,
                               "threads": args.threads, "network_lines_per_s": len(grays) / model_s,
                               "beam_options": beam_opts, "rows": rows}
    print_table(f"{args.model} on {args.data} [{args.split}], {n} lines", rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--synthetic", action="store_true", help="simulate CTC outputs from held-out texts")
    ap.add_argument("--model", help="line checkpoint URI (real model outputs)")
    ap.add_argument("--data", help="IAM-style folder or sample shards for --model (default: the shared IAM-OnDB lines)")
    ap.add_argument("--split", default="test", help="the split measured (tuning always reads val)")
    ap.add_argument("--lines", type=int, default=0, help="lines per split (0: all)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for the network")
    ap.add_argument("--lm", help="LM file (.npz or .json); default: the model's decoding.lm")
    ap.add_argument("--speed-repeats", type=int, default=3, help="rounds of interleaved end-to-end timing")
    ap.add_argument("--speed-lines", type=int, default=150, help="lines (spread over the split) timed per round")
    ap.add_argument("--no-e2e", dest="e2e", action="store_false", help="skip the first end-to-end pass per decoder")
    ap.add_argument("--tune", action="store_true", help="choose lm_weight, char_bonus and beam width on val lines")
    ap.add_argument("--weights", type=float, nargs="+", default=[0.5, 0.6, 0.7])
    ap.add_argument("--bonuses", type=float, nargs="+", default=[1.0, 1.5, 2.0])
    ap.add_argument("--widths", type=int, nargs="+", default=[4, 8, 16, 32])
    ap.add_argument("--beam-width", dest="beam_width", type=int, default=None)
    ap.add_argument("--lm-weight", dest="lm_weight", type=float, default=None)
    ap.add_argument("--char-bonus", dest="char_bonus", type=float, default=None)
    ap.add_argument("--order", type=int, default=6, help="--synthetic: LM order")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="work/bench/decode.json")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    result = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "command": " ".join(sys.argv),
              "machine": f"{platform.machine()}, {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f} at start",
              "sets": {}}
    if args.model:
        if not args.data:
            from htr_ray import paths

            args.data = str(paths.shared_data() / "iam_ondb_lines")
        model_bench(args, result)
    if args.synthetic or not args.model:
        synthetic_bench(args, result)
    result["load_average_at_end"] = os.getloadavg()[0]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out} (load average {os.getloadavg()[0]:.1f})")
    return 0


def synthetic_bench(args, result: dict) -> None:
    """Simulated CTC outputs from held-out texts (IAM-OnDB test forms, generated prescriptions); the LM
    is trained on train-form text (no line sharing a word trigram with a test line) + generated
    prescriptions."""
    lines = args.lines or 300
    test_trigrams = set().union(*[_trigrams(t) for t in iam_lines("test", args.data)])
    iam_train = [t for t in iam_lines("train", args.data) if not (_trigrams(t) & test_trigrams)]
    train_text = iam_train + prescription_lines(20000, seed=1000 + args.seed)
    t0 = time.perf_counter()
    lm = CharNgramLM.train(train_text, order=args.order)
    result["lm_train_seconds"] = round(time.perf_counter() - t0, 2)
    lexicon = Lexicon(lexicon_words(train_text))
    rng = np.random.default_rng(args.seed)
    charset = "".join(sorted({ch for t in train_text for ch in t}))
    tests = {"iam_test_forms": iam_lines("test", args.data)[:lines],
             "prescriptions": prescription_lines(lines, seed=2000 + args.seed)}
    for name, texts in tests.items():
        cases = [(t, simulate(t, charset, rng)) for t in texts if all(ch in charset for ch in t)]
        rows = run_decoders(cases, charset, lm, lexicon, args.beam_width or 16, args.lm_weight or 0.5, None,
                            args.char_bonus)
        result["sets"][f"synthetic_{name}"] = {"rows": rows, "frames_per_line": float(np.mean([len(lp) for _, lp in cases]))}
        print_table(f"synthetic outputs, {name}: {len(cases)} lines", rows)


if __name__ == "__main__":
    raise SystemExit(main())
