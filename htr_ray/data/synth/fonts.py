"""Handwriting-like fonts: where they are, which characters each covers, and which split may use them.

Fonts come from Debian packages (see ``scripts/apt-packages.txt``); each *family* groups the files that
are variants of one hand (regular / italic), so the train/test split never puts two variants of one hand
on both sides. The split is deterministic: ``crc32(family) % 100 < TEST_PERCENT`` reserves a family for
the test split, with a fix-up that keeps at least one Latin and one CJK family on each side. Train and val
share the remaining families (val differs from train by seed, test by hand).

Coverage is read from the fonts themselves (a character is covered when the font draws something other
than its "missing glyph" box), so a text is only ever drawn with a font that has every one of its glyphs.
"""

from __future__ import annotations

import functools
import logging
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

log = logging.getLogger(__name__)

FONT_DIRS = [p for p in os.environ.get("HTR_FONT_DIRS", "").split(os.pathsep) if p] + ["/usr/share/fonts"]
TEST_PERCENT = 10

# family -> (debian package, file names, scripts). Only hands that write lower case as lower case
# (Humor Sans, Winks, ... draw small capitals and would teach the recogniser wrong labels), and no
# display faces that look nothing like a pen (Penguin Attack's blocks, It wasn't me's blobs).
HANDWRITING_FAMILIES: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "dkg": ("fonts-dkg-handwriting", ("dkg.ttf", "dkgIt.ttf"), ("latin",)),
    "breip": ("fonts-breip", ("Breip.ttf",), ("latin",)),
    "rufscript": ("fonts-rufscript", ("Rufscript010.ttf",), ("latin",)),
    "delphine": ("fonts-sjfonts", ("Delphine.ttf",), ("latin",)),
    "steve": ("fonts-sjfonts", ("SteveHand.ttf",), ("latin",)),
    "domestic-manners": ("fonts-dustin", ("Domestic_Manners.ttf",), ("latin",)),
    "el-abogado-loco": ("fonts-dustin", ("El_Abogado_Loco.ttf",), ("latin",)),
    "junkyard": ("fonts-dustin", ("Junkyard.ttf",), ("latin",)),
    "kristi": ("fonts-kristi", ("Kristi.ttf",), ("latin",)),
    "comic-neue": ("fonts-comic-neue", ("ComicNeue-Regular.otf", "ComicNeue-Italic.otf", "ComicNeue-Light.otf"), ("latin",)),
    "purisa": ("fonts-tlwg-purisa-ttf", ("Purisa.ttf", "Purisa-Oblique.ttf"), ("latin",)),
    "seto": ("fonts-seto", ("setofont.ttf",), ("latin", "cjk")),
    "klee-one": ("fonts-klee", ("KleeOne-Regular.ttf", "KleeOne-SemiBold.ttf"), ("cjk",)),  # its Latin is typeset
    "yozfont": ("fonts-yozvox-yozfont", ("YOzBA_.ttf",), ("cjk",)),
    "gkai": ("fonts-arphic-gkai00mp", ("gkai00mp.ttf",), ("cjk",)),
    "ukai": ("fonts-arphic-ukai", ("ukai.ttc",), ("cjk",)),
}
# printed parts of pages (form labels, logos, headings)
PRINTED_FAMILIES: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "dejavu-sans": ("fonts-dejavu-core", ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf"), ("latin",)),
    "dejavu-serif": ("fonts-dejavu-core", ("DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf"), ("latin",)),
    "liberation": ("fonts-liberation2", ("LiberationSans-Regular.ttf", "LiberationSans-Bold.ttf",
                                         "LiberationSerif-Regular.ttf", "LiberationSerif-Bold.ttf"), ("latin",)),
}
MISSING_PROBE = "\U0010FFFD"  # a private-use code point no font here draws: its mask is the "missing" box


class FontError(RuntimeError):
    pass


@dataclass(frozen=True)
class FontFace:
    family: str
    path: str
    scripts: tuple[str, ...]
    package: str

    @property
    def name(self) -> str:
        return f"{self.family}/{Path(self.path).name}"


@dataclass
class FontRegistry:
    """Installed fonts, grouped by family, with coverage and the split of families."""

    faces: list[FontFace]
    printed: list[FontFace] = field(default_factory=list)

    def families(self, script: str | None = None) -> list[str]:
        return sorted({f.family for f in self.faces if script is None or script in f.scripts})

    def test_families(self) -> set[str]:
        return split_families(self.faces)

    def families_for(self, split: str, script: str | None = None) -> list[str]:
        test = self.test_families()
        return [fam for fam in self.families(script) if (fam in test) == (split == "test")]

    def faces_for(self, split: str, script: str | None = None) -> list[FontFace]:
        fams = set(self.families_for(split, script))
        return [f for f in self.faces if f.family in fams and (script is None or script in f.scripts)]

    def covering(self, text: str, split: str, script: str | None = None) -> list[FontFace]:
        """Faces allowed in ``split`` that draw every character of ``text``."""
        need = {c for c in text if not c.isspace()}
        return [f for f in self.faces_for(split, script) if need <= coverage(f.path, frozenset(need))]


def split_families(faces: Sequence[FontFace], test_percent: int = TEST_PERCENT) -> set[str]:
    """Families reserved for the test split (never used by train or val)."""
    fams: dict[str, set[str]] = {}
    for f in faces:
        fams.setdefault(f.family, set()).update(f.scripts)
    h = {fam: zlib.crc32(fam.encode()) % 100 for fam in fams}
    test = {fam for fam in fams if h[fam] < test_percent}
    for script in ("latin", "cjk"):
        members = sorted((fam for fam in fams if script in fams[fam]), key=lambda f: (h[f], f))
        if len(members) < 2:
            continue  # cannot keep both sides; train keeps it
        if not any(m in test for m in members):
            test.add(members[0])
        rest = [m for m in members if m not in test]
        if not rest:
            test.discard(members[-1])
    return test


def _find(name: str) -> str | None:
    for root in FONT_DIRS:
        for p in _index(root).get(name, []):
            return p
    return None


@functools.lru_cache(maxsize=None)
def _index(root: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for dirpath, _, files in os.walk(root):
        for fn in files:
            out.setdefault(fn, []).append(os.path.join(dirpath, fn))
    for v in out.values():
        v.sort()
    return out


def _faces(table: dict) -> list[FontFace]:
    faces = []
    for family, (pkg, files, scripts) in table.items():
        for fn in files:
            p = _find(fn)
            if p:
                faces.append(FontFace(family, p, scripts, pkg))
    return faces


@functools.lru_cache(maxsize=1)
def registry() -> FontRegistry:
    """The fonts installed on this machine (cached per process)."""
    faces, printed = _faces(HANDWRITING_FAMILIES), _faces(PRINTED_FAMILIES)
    missing = sorted({pkg for fam, (pkg, _, _) in HANDWRITING_FAMILIES.items() if fam not in {f.family for f in faces}})
    if missing:
        log.warning("handwriting font packages not installed: %s (scripts/apt-packages.txt)", " ".join(missing))
    if not any("latin" in f.scripts for f in faces):
        raise FontError("no handwriting font found: install the packages in scripts/apt-packages.txt "
                        f"(looked under {FONT_DIRS})")
    return FontRegistry(faces, printed)


@functools.lru_cache(maxsize=256)
def load(path: str, size: int):
    from PIL import ImageFont

    return ImageFont.truetype(path, size)


@functools.lru_cache(maxsize=32768)
def glyph(path: str, size: int, ch: str) -> tuple[np.ndarray, int, int, float]:
    """Rasterised glyph: (alpha uint8 HxW, x offset, y offset from the baseline, advance)."""
    font = load(path, size)
    mask, (ox, oy) = font.getmask2(ch, mode="L", anchor="ls")
    w, h = mask.size
    a = np.frombuffer(bytes(mask), np.uint8).reshape(h, w) if w and h else np.zeros((0, 0), np.uint8)
    return a, ox, oy, float(font.getlength(ch))


@functools.lru_cache(maxsize=32768)
def glyph_hull(path: str, size: int, ch: str) -> np.ndarray:
    """Pixel corners of the convex hull of a glyph's ink (float32 Kx2, x/y in the glyph bitmap)."""
    import cv2

    a = glyph(path, size, ch)[0]
    ys, xs = np.nonzero(a > 40)
    if ys.size == 0:
        ys, xs = np.nonzero(a)
    if ys.size == 0:
        return np.zeros((0, 2), np.float32)
    hull = cv2.convexHull(np.column_stack([xs, ys]).astype(np.int32)).reshape(-1, 2).astype(np.float32)
    return np.concatenate([hull, hull + (1, 0), hull + (0, 1), hull + (1, 1)]).astype(np.float32)


# Zhang-Suen thinning with OpenCV: the 8 neighbours of a pixel coded as one byte (P2 = north = bit 0,
# clockwise), one lookup table per sub-iteration saying "delete". ~0.1-1 ms per glyph, cached.
_ZS_KERNEL = np.array([[128, 1, 2], [64, 0, 4], [32, 16, 8]], np.float32)


def _zs_lut(step: int) -> np.ndarray:
    lut = np.zeros(256, np.uint8)
    for c in range(256):
        p = [(c >> k) & 1 for k in range(8)]  # P2..P9
        seq = p + [p[0]]
        b = sum(p)
        a = sum(1 for k in range(8) if seq[k] == 0 and seq[k + 1] == 1)
        p2, _, p4, _, p6, _, p8, _ = p
        cond = (p2 * p4 * p6 == 0 and p4 * p6 * p8 == 0) if step == 0 else (p2 * p4 * p8 == 0 and p2 * p6 * p8 == 0)
        lut[c] = 1 if (2 <= b <= 6 and a == 1 and cond) else 0
    return lut


_ZS_LUTS = (_zs_lut(0), _zs_lut(1))


def thin(mask: np.ndarray) -> np.ndarray:
    """One-pixel-wide skeleton (uint8 0/1) of a binary mask; blobs thinning would erase keep one pixel."""
    import cv2

    img = (mask > 0).astype(np.uint8)
    src = img.copy()
    for _ in range(200):
        changed = False
        for lut in _ZS_LUTS:
            code = cv2.filter2D(img, cv2.CV_32F, _ZS_KERNEL, borderType=cv2.BORDER_CONSTANT).astype(np.uint8)
            dele = lut[code] & img
            if dele.any():
                img = img & (1 - dele)
                changed = True
        if not changed:
            break
    n, labels, stats, cents = cv2.connectedComponentsWithStats(src, connectivity=8)
    if n > 1:
        kept = np.zeros(n, bool)
        kept[np.unique(labels[img > 0])] = True
        for k in np.flatnonzero(~kept[1:]) + 1:  # e.g. the dot of an i
            ys, xs = np.nonzero(labels == k)
            j = int(np.argmin((ys - cents[k][1]) ** 2 + (xs - cents[k][0]) ** 2))
            img[ys[j], xs[j]] = 1
    return img


@functools.lru_cache(maxsize=32768)
def glyph_skeleton(path: str, size: int, ch: str) -> np.ndarray:
    """The glyph's centre line (uint8 0/255, same frame as :func:`glyph`): redrawn with a round pen it
    looks like a ball-point trace instead of a filled outline."""
    a = glyph(path, size, ch)[0]
    if a.size == 0:
        return a
    return thin(a > 100) * np.uint8(255)


@functools.lru_cache(maxsize=4096)
def glyph_slim(path: str, size: int, ch: str) -> np.ndarray:
    """A small mark (comma, dot, quote) eroded to about a pen's width: for pen mode, where thinning would
    turn a comma into a dot but the font's filled mark would be a blot."""
    import cv2

    a = glyph(path, size, ch)[0]
    n = int(round(stroke_width_ratio(path) * size / 2)) - 1
    if a.size == 0 or n <= 0:
        return a
    slim = cv2.erode(a, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)), iterations=n)
    return slim if (slim > 100).sum() >= 4 else a


@functools.lru_cache(maxsize=256)
def stroke_width_ratio(path: str) -> float:
    """The font's stroke width as a fraction of its size (ink area / centre-line length of "nlo")."""
    ink = skel = 0
    for ch in "nlo":
        a = glyph(path, 48, ch)[0]
        if a.size:
            ink += int((a > 100).sum())
            skel += int((glyph_skeleton(path, 48, ch) > 0).sum())
    return ink / max(1, skel) / 48.0


@functools.lru_cache(maxsize=64)
def _missing_mask(path: str) -> bytes:
    font = load(path, 32)
    return bytes(font.getmask(MISSING_PROBE))


@functools.lru_cache(maxsize=8192)
def _covers(path: str, ch: str) -> bool:
    font = load(path, 32)
    m = font.getmask(ch)
    data = bytes(m)
    if ch.isspace():
        return True
    if not data or max(data) == 0:
        return False  # draws nothing: missing (or a blank "missing" glyph)
    return data != _missing_mask(path)


COMMON_CHARS = "".join(chr(c) for c in range(0x20, 0x7F)) + "€£¥°×÷±½¼¾§©®µ·–—‘’“”…àáâäçèéêëíîïñóôöúûüßÀÉÖÜ"


@functools.lru_cache(maxsize=256)
def _common_coverage(path: str) -> frozenset[str]:
    return frozenset(coverage(path, COMMON_CHARS))


def covers_all(path: str, chars: Iterable[str]) -> bool:
    """Whether the font draws every character (fast for common Latin text: one cached set per font)."""
    common = _common_coverage(path)
    rest = [c for c in chars if c not in common]
    return all(_covers(path, c) for c in rest)


def coverage(path: str, chars: Iterable[str]) -> set[str]:
    """The subset of ``chars`` that the font at ``path`` draws."""
    return {c for c in chars if _covers(path, c)}
