"""Whole synthetic pages: a cheque, a prescription pad and a homework sheet.

Each page has printed parts (form labels, rules, boxes, a logo, in a plain font) and handwritten parts
(one writer per page, drawn with :func:`htr_ray.data.synth.render.render_ink`), then a scanned look: paper
tone, shadow, skew, blur, noise, JPEG. The ground truth is one entry per HANDWRITTEN line, in reading
order: ``{"text": ..., "bbox": [x0, y0, x1, y1]}`` (pixels of the returned image, boxes hug the ink).

>>> gray, lines = render_page("cheque", seed=0)
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np
from PIL import Image, ImageDraw

from htr_ray.data.synth import fonts, render, texts

log = logging.getLogger(__name__)

PAGE_DOMAINS = ("cheque", "prescription", "homework")
BANKS = ("First Federal Bank", "Riverside Savings", "Union Trust Co.", "Maple Credit Union", "Citizens National Bank",
         "Harbor Community Bank", "Northern Mutual", "Pioneer State Bank")
CLINICS = ("Parkview Family Clinic", "Riverside Medical Group", "St. Luke's Health Centre", "Lakeside Pediatrics",
           "Greenfield Medical Practice", "Northgate Internal Medicine", "Sunrise Urgent Care")
STREETS = ("Main St.", "Oak Avenue", "Elm Street", "High Street", "Park Road", "Church Lane", "Maple Drive")
SCHOOLS = ("Green Valley Elementary", "Westfield Primary School", "Lincoln Middle School", "St. Mary's School",
           "Oakwood Academy")
SUBJECTS = ("Math", "Spelling", "Reading", "Science", "Math & Spelling", "English", "Arithmetic", "Chinese")


@dataclass
class PageSample:
    image: np.ndarray
    lines: list[dict]
    domain: str
    split: str
    font: str
    meta: dict = field(default_factory=dict)
    # with ``PageGenerator.sample(i, with_masks=True)``: where the printed and the handwritten ink are
    # (uint8 0/1, pixels of ``image``), the labels for training the printed-text filter
    masks: dict | None = None

    @property
    def text(self) -> str:
        return "\n".join(line["text"] for line in self.lines)


class _Page:
    """A page being composed: printed layer (PIL, white = no ink) + handwriting coverage (float)."""

    def __init__(self, w: int, h: int, rng: np.random.Generator, face: fonts.FontFace, split: str, cjk_face=None):
        self.w, self.h, self.rng, self.face, self.split, self.cjk_face = w, h, rng, face, split, cjk_face
        self.printed = Image.new("L", (w, h), 255)
        self.draw = ImageDraw.Draw(self.printed)
        self.hand = np.zeros((h, w), np.float32)
        self.lines: list[dict] = []
        reg = fonts.registry()
        pf = reg.printed or [f for f in reg.faces if "latin" in f.scripts]
        self.sans = [f.path for f in pf if "Sans" in f.path] or [pf[0].path]
        self.serif = [f.path for f in pf if "Serif" in f.path] or self.sans
        self.print_shade = int(rng.integers(0, 90))
        # one writer per page: size, slant and jitter shared by every line
        self.size = 3 * int(rng.integers(15, 21))  # 45-60 px fonts: x-height about 2.5-3.5 mm at 150 dpi
        self.style = render.Style.sample(rng, clean_fraction=0.0)
        self.style.size = self.size
        self.style.margin_x = self.style.margin_y = 0

    def font(self, size: int, bold: bool = False, serif: bool = False):
        paths = self.serif if serif else self.sans
        bolds = [p for p in paths if "Bold" in p]
        plain = [p for p in paths if "Bold" not in p] or paths
        return fonts.load((bolds or plain)[0] if bold else plain[0], size)

    def text(self, xy, s: str, size: int = 22, bold: bool = False, serif: bool = False, shade: int | None = None, anchor="ls"):
        self.draw.text(xy, s, font=self.font(size, bold, serif), fill=self.print_shade if shade is None else shade, anchor=anchor)

    def rule(self, x0, y, x1, shade: int | None = None, width: int = 2):
        self.draw.line([(x0, y), (x1, y)], fill=self.print_shade if shade is None else shade, width=width)

    def handwrite(self, s: str, x: int, baseline: int, max_w: int, *, cjk: bool = False, face=None) -> None:
        """Write ``s`` with its baseline on ``baseline`` starting near ``x``, shrunk to fit ``max_w``."""
        s = " ".join(s.split())
        face = face or (self.cjk_face if cjk else self.face)
        need = set(s.replace(" ", ""))
        if not need <= fonts.coverage(face.path, need):
            # this hand lacks a glyph (e.g. "÷"): another writer of the same split fills the line in
            alts = fonts.registry().covering(s, "test" if self.split == "test" else "train", "cjk" if cjk else "latin")
            if not alts:
                raise ValueError(f"no {self.split} font draws every character of {s!r}")
            face = render._pick_face(self.rng, alts)
        style = render.Style(**{**self.style.__dict__})
        style.size = self.size if not cjk else int(self.size * 0.9)
        style.jitter = self.style.jitter
        style.shear = self.style.shear + float(self.rng.normal(0, 0.03))
        style.angle = float(self.rng.normal(0, 0.6))
        layer = render.render_ink(s, face, self.rng, style)
        a, base = layer.alpha, layer.baseline
        if a.shape[1] > max_w:
            f = max_w / a.shape[1]
            a = cv2.resize(a, (max_w, max(1, int(round(a.shape[0] * f)))), interpolation=cv2.INTER_AREA)
            base *= f
        x = int(x + self.rng.integers(0, 12))
        y = int(round(baseline - base - self.rng.uniform(0, 4)))
        box, _ = self.put_ink(a, x, y)
        if box is None:
            raise ValueError(f"handwritten line {s!r} has no ink")
        self.lines.append({"text": s, "bbox": box})

    def put_ink(self, a: np.ndarray, x: int, y: int) -> tuple[list[int] | None, int]:
        """Add ink coverage ``a`` to the handwriting layer with its top left near (x, y), kept 2 px
        inside the page: (the box of its ink, or None when it has none; the y it was put at)."""
        h, w = a.shape
        x = min(max(x, 2), self.w - w - 2)
        y = min(max(y, 2), self.h - h - 2)
        region = self.hand[y:y + h, x:x + w]
        np.maximum(region, a, out=region)
        rows = np.flatnonzero(a.max(axis=1) > 0.15)
        cols = np.flatnonzero(a.max(axis=0) > 0.15)
        if rows.size == 0:
            return None, y
        return [x + int(cols[0]), y + int(rows[0]), x + int(cols[-1]) + 1, y + int(rows[-1]) + 1], y

    def logo(self, cx: int, cy: int, r: int, kind: int, letters: str = "") -> None:
        d, shade = self.draw, self.print_shade
        if kind == 0:
            d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=shade, width=4)
            if letters:
                self.text((cx, cy), letters, size=int(r * 0.9), bold=True, serif=True, anchor="mm")
        elif kind == 1:  # medical cross
            t = r // 3
            d.rectangle([cx - t, cy - r, cx + t, cy + r], fill=shade)
            d.rectangle([cx - r, cy - t, cx + r, cy + t], fill=shade)
        elif kind == 2:  # shield / book
            d.polygon([(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], outline=shade, width=4)
            if letters:
                self.text((cx, cy - r // 4), letters[:1], size=int(r * 0.9), bold=True, anchor="mm")
        else:  # sun / star
            for k in range(8):
                ang = k * math.pi / 4
                d.line([(cx, cy), (cx + r * math.cos(ang), cy + r * math.sin(ang))], fill=shade, width=3)
            d.ellipse([cx - r // 2, cy - r // 2, cx + r // 2, cy + r // 2], fill=255, outline=shade, width=3)

    def finish(self) -> np.ndarray:
        """Ink on paper, then scan: returns the gray page; line boxes follow the skew."""
        rng, h, w = self.rng, self.h, self.w
        img = ink_on_paper(self, rng)
        # skew, with a grey scanner bed showing at the corners; a third of the pages also get a slight
        # perspective (a page photographed rather than scanned)
        angle = float(rng.normal(0, 0.8))
        m = np.vstack([cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0), [0, 0, 1]])
        if rng.random() < 0.33:
            src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
            jitter = rng.uniform(-0.015, 0.015, (4, 2)) * (w, h)
            m = cv2.getPerspectiveTransform(src, (src + jitter).astype(np.float32)) @ m
        bed = float(rng.uniform(150, 240))
        img = cv2.warpPerspective(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=bed)
        self.masks = {name: cv2.warpPerspective(layer, m, (w, h), flags=cv2.INTER_NEAREST)
                      for name, layer in (("printed", (np.asarray(self.printed, np.float32) < 0.6 * 255.0).astype(np.uint8)),
                                          ("hand", (self.hand > 0.3).astype(np.uint8)))}
        for line in self.lines:
            x0, y0, x1, y1 = line["bbox"]
            corners = np.float32([[[x0, y0], [x1, y0], [x1, y1], [x0, y1]]])
            t = cv2.perspectiveTransform(corners, m)[0]
            line["bbox"] = [max(0, int(math.floor(t[:, 0].min()))), max(0, int(math.floor(t[:, 1].min()))),
                            min(w, int(math.ceil(t[:, 0].max()))), min(h, int(math.ceil(t[:, 1].max())))]
        if rng.random() < 0.6:
            img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 1.0))
        img += rng.standard_normal((h, w)).astype(np.float32) * rng.uniform(1, 7)
        out = np.clip(img, 0, 255).astype(np.uint8)
        if rng.random() < 0.5:
            ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(40, 92))])
            out = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
        return out


# --------------------------------------------------------------------------------------------- layouts


def _cheque(p: _Page) -> None:
    rng, d = p.rng, p.draw
    f = texts.cheque_fields(rng)
    W, H = p.w, p.h
    p.size = 3 * int(p.size * 1.2 / 3)  # a cheque is written larger relative to its fields
    # security background and border
    light = int(rng.integers(215, 240))
    for k in range(-H, W, int(rng.integers(14, 30))):
        d.line([(k, H), (k + H, 0)], fill=light, width=1)
    d.rectangle([10, 10, W - 11, H - 11], outline=p.print_shade, width=3)
    bank = texts._choice(rng, BANKS)
    p.logo(70, 75, 38, int(rng.integers(4)), "".join(w[0] for w in bank.split()[:2]))
    p.text((125, 70), bank, size=30, bold=True, serif=bool(rng.random() < 0.5))
    p.text((125, 100), f"{int(rng.integers(1, 999))} {texts._choice(rng, STREETS)}", size=17)
    number = int(rng.integers(100, 9999))
    p.text((W - 160, 60), f"No. {number}", size=22, bold=True)
    # date
    p.text((W - 520, 165), "DATE", size=20)
    p.rule(W - 450, 170, W - 60)
    p.handwrite(f["date"], W - 440, 162, 380)
    # payee + amount box
    p.text((40, 275), "PAY TO THE", size=18)
    p.text((40, 298), "ORDER OF", size=18)
    p.rule(150, 300, W - 360)
    p.handwrite(f["payee"], 170, 292, W - 540)
    p.text((W - 330, 298), "$", size=34, bold=True)
    d.rectangle([W - 300, 240, W - 50, 312], outline=p.print_shade, width=2)
    p.handwrite(f["amount"], W - 290, 295, 230)
    # amount in words
    p.rule(40, 400, W - 200)
    p.text((W - 180, 400), "DOLLARS", size=20)
    p.handwrite(f["words"], 50, 392, W - 270)
    # memo and signature
    p.text((40, H - 120), "MEMO", size=18)
    p.rule(120, H - 115, 620)
    p.handwrite(f["memo"], 130, H - 122, 480)
    p.rule(W - 560, H - 115, W - 60)
    p.text((W - 560, H - 92), "AUTHORIZED SIGNATURE", size=13)
    sig_faces = fonts.registry().faces_for("test" if p.split == "test" else "train", "latin")
    p.handwrite(f["signature"], W - 540, H - 122, 460, face=render._pick_face(rng, sig_faces))
    micr = f"{int(rng.integers(10**8, 10**9))}: {int(rng.integers(10**9, 10**10))}: {number:04d}"
    p.text((200, H - 30), micr, size=26, shade=20)


def _prescription(p: _Page) -> None:
    rng, d = p.rng, p.draw
    f = texts.prescription_fields(rng, int(rng.integers(1, 4)))
    W, H = p.w, p.h
    clinic = texts._choice(rng, CLINICS)
    doctor = "Dr. " + texts._choice(rng, texts.FIRST_NAMES) + " " + texts._choice(rng, texts.LAST_NAMES) + ", MD"
    p.logo(100, 100, 45, int(rng.choice([0, 1, 1, 3])), "".join(w[0] for w in clinic.split()[:2]))
    p.text((170, 90), clinic, size=38, bold=True, serif=bool(rng.random() < 0.5))
    p.text((170, 125), doctor, size=24)
    p.text((170, 155), f"{int(rng.integers(1, 999))} {texts._choice(rng, STREETS)}  -  Tel. ({int(rng.integers(200, 999))}) "
           f"{int(rng.integers(200, 999))}-{int(rng.integers(1000, 9999))}", size=18)
    p.rule(40, 185, W - 40, width=3)
    # patient block
    y = 260
    p.text((50, y), "Patient", size=22)
    p.rule(150, y + 4, W - 330)
    p.handwrite(f["patient"], 165, y - 4, W - 520)
    p.text((W - 310, y), "Age", size=22)
    p.rule(W - 250, y + 4, W - 50)
    p.handwrite(f["age"], W - 240, y - 4, 180)
    y += 95
    p.text((50, y), "Date", size=22)
    p.rule(130, y + 4, 620)
    p.handwrite(f["date"], 145, y - 4, 460)
    # Rx and items
    y += 120
    p.text((50, y + 20), "Rx", size=80, bold=True, serif=True)
    y += 30
    gap = int(rng.integers(95, 120))
    for drug, sig in f["items"]:
        p.handwrite(drug, 200, y, W - 280)
        y += gap
        p.handwrite(sig, 240, y, W - 320)
        y += int(gap * 1.35)
    # footer
    yf = H - 260
    p.text((50, yf), "Refills", size=22)
    p.rule(140, yf + 4, 400)
    p.handwrite(f["refills"], 160, yf - 4, 220)
    d.rectangle([W - 520, yf - 22, W - 498, yf], outline=p.print_shade, width=2)
    p.text((W - 485, yf), "Substitution permitted", size=20)
    p.rule(W - 620, H - 120, W - 60)
    p.text((W - 620, H - 95), "Signature of prescriber", size=16)
    sig_faces = fonts.registry().faces_for("test" if p.split == "test" else "train", "latin")
    p.handwrite(f["signature"], W - 600, H - 128, 520, face=render._pick_face(rng, sig_faces))
    p.text((50, H - 40), f"DEA # {texts._choice(rng, 'ABFM')}{texts._choice(rng, texts.LAST_NAMES)[0]}{int(rng.integers(10**6, 10**7))}",
           size=16)


def _homework(p: _Page) -> None:
    rng, d = p.rng, p.draw
    W, H = p.w, p.h
    school = texts._choice(rng, SCHOOLS)
    p.logo(80, 70, 34, int(rng.choice([0, 2, 3])), school[:1])
    p.text((130, 65), school, size=26, bold=True)
    subject = texts._choice(rng, SUBJECTS if p.cjk_face is not None else SUBJECTS[:-1])
    p.text((130, 98), f"Homework - {subject} - Week {int(rng.integers(1, 40))}", size=22)
    y = 170
    p.text((50, y), "Name:", size=22)
    p.rule(125, y + 4, 640)
    p.handwrite(texts.person_name(rng), 140, y - 4, 480)
    p.text((680, y), "Date:", size=22)
    p.rule(750, y + 4, W - 50)
    p.handwrite(texts.date_text(rng), 765, y - 4, W - 830)
    # ruled writing area
    spacing = int(p.size * rng.uniform(2.0, 2.4))
    first = 290
    rule_shade = int(rng.integers(150, 215))
    ys = list(range(first, H - 60, spacing))
    for yv in ys:
        p.rule(40, yv, W - 40, shade=rule_shade, width=1)
    if rng.random() < 0.6:
        d.line([(100, first - spacing), (100, H - 40)], fill=int(rng.integers(120, 200)), width=2)
    n_lines = int(rng.integers(5, len(ys) + 1))
    used = 0
    k = 0
    for yv in ys:
        if used >= n_lines:
            break
        if rng.random() < 0.2:  # skipped ruled line: gaps are part of real pages
            continue
        k += 1
        kind = rng.random()
        if subject == "Chinese" and p.cjk_face is not None and kind < 0.7:
            allowed = fonts.coverage(p.cjk_face.path, set(texts.HANZI) | set("".join(texts.HANZI_WORDS)))
            s = texts.hanzi_line(rng, allowed)
            p.handwrite(s, 115, yv - 6, W - 200, cjk=True)
        else:
            if subject in ("Math", "Arithmetic") or (subject == "Math & Spelling" and kind < 0.5):
                s = f"{k}. " + texts.arithmetic(rng) if rng.random() < 0.6 else texts.arithmetic(rng)
            elif subject == "Spelling" or subject == "Math & Spelling":
                s = (f"{k}. " if rng.random() < 0.5 else "") + " ".join(str(texts._choice(rng, texts.SPELLING)) for _ in range(int(rng.integers(2, 5))))
            else:
                s = texts._choice(rng, texts.HOMEWORK_SENTENCES) if rng.random() < 0.6 else texts.generic_line(rng, 7)
            p.handwrite(s, 115, yv - 6, W - 200)
        used += 1


LAYOUTS = {"cheque": (_cheque, (1500, 680)), "prescription": (_prescription, (1240, 1600)), "homework": (_homework, (1240, 1600))}


class PageGenerator:
    """Synthetic pages on demand, deterministic per (seed, split, index). Test uses the test fonts only."""

    def __init__(self, seed: int = 0, split: str = "train", domains: Sequence[str] | None = None):
        self.seed, self.split = int(seed), split
        self.domains = list(domains or PAGE_DOMAINS)
        for dm in self.domains:
            if dm not in LAYOUTS:
                raise ValueError(f"unknown page domain {dm!r}; choose from {sorted(LAYOUTS)}")
        reg = fonts.registry()
        fs = "test" if split == "test" else "train"
        probe = "".join(sorted(set("".join(texts.FIRST_NAMES + texts.LAST_NAMES + texts.SPELLING + texts.COMPANIES
                                       + texts.HOMEWORK_SENTENCES + list(texts.DRUGS) + texts.MONTHS)
                                   + "0123456789$.,/-+=:;#()%&'!?x*")))  # × ÷: the rare line falls back to another hand
        full = [f for f in reg.faces_for(fs, "latin") if set(probe.replace(" ", "")) <= fonts.coverage(f.path, set(probe.replace(" ", "")))]
        self.latin = full or reg.faces_for(fs, "latin")
        self.cjk = reg.faces_for(fs, "cjk")

    def sample(self, index: int, with_masks: bool = False) -> PageSample:
        rng = render.sample_rng(self.seed, index, 10 + {"train": 0, "val": 1, "test": 2}.get(self.split, 3))
        domain = self.domains[int(rng.integers(len(self.domains)))]
        layout, (w, h) = LAYOUTS[domain]
        for attempt in range(5):
            face = render._pick_face(rng, self.latin)
            cjk = render._pick_face(rng, self.cjk) if self.cjk else None
            page = _Page(w, h, rng, face, self.split, cjk)
            try:
                layout(page)
                break
            except ValueError as e:  # an uncovered glyph or empty line: draw again with another hand
                log.debug("page %d attempt %d: %s", index, attempt, e)
        else:
            raise RuntimeError(f"could not lay out page {index} ({domain})")
        img = page.finish()
        return PageSample(img, page.lines, domain, self.split, face.name, meta={"cjk_font": cjk.name if cjk else None},
                          masks=page.masks if with_masks else None)


def render_page(domain: str | None = None, seed: int = 0, index: int = 0, split: str = "train") -> tuple[np.ndarray, list[dict]]:
    """(gray page uint8, [{"text", "bbox": [x0, y0, x1, y1]}, ...]) for one page: the plain entry point for
    demos and segmentation tests."""
    s = PageGenerator(seed, split, [domain] if domain else None).sample(index)
    return s.image, s.lines


def ink_on_paper(page: "_Page", rng: np.random.Generator, ink_range=(10, 90), pressure_spread: float = 0.25,
                 pressure_floor: float = 0.6, shadow_p: float = 0.6) -> np.ndarray:
    """A page's print and handwriting on textured paper, with uneven pen pressure and, with probability
    ``shadow_p``, a shadow band from one edge (book fold, lid not closed): the float gray page before
    the scan's skew and noise. Shared by the generated pages and the composed ones (layout_pages)."""
    h, w = page.h, page.w
    paper = render.paper(rng, h, w, clean=False)
    printed = np.asarray(page.printed, np.float32) / 255.0
    img = paper * printed
    ink = rng.uniform(*ink_range)
    pressure = np.clip(1 - np.abs(render._low_freq(rng, h, w, rng.uniform(30, 90))) * rng.uniform(0, pressure_spread),
                       pressure_floor, 1)
    cov = page.hand * pressure
    img = img * (1 - cov) + ink * cov
    if rng.random() < shadow_p:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        side = int(rng.integers(4))
        dist = (xx, w - 1 - xx, yy, h - 1 - yy)[side] / float((w, w, h, h)[side])
        depth, reach = rng.uniform(0.15, 0.45), rng.uniform(0.05, 0.25)
        img *= 1 - depth * np.exp(-dist / reach)
    return img
