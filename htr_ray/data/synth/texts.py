"""Text sources with ground truth, one per domain: cheque, prescription, homework, hanzi, generic.

Every function takes a ``numpy.random.Generator`` and returns the exact string to draw, so a seed fixes
the text. Page layouts call the field-level functions (``cheque_fields``, ``prescription_fields``) and
lines call :func:`line_text`.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from htr_ray import paths

log = logging.getLogger(__name__)

LINE_DOMAINS = ("cheque", "prescription", "homework", "hanzi", "generic")

# ------------------------------------------------------------------------------------------- vocab

FIRST_NAMES = """James Mary John Patricia Robert Jennifer Michael Linda William Elizabeth David Barbara Richard Susan
Joseph Jessica Thomas Sarah Charles Karen Christopher Nancy Daniel Lisa Matthew Betty Anthony Margaret Mark Sandra
Donald Ashley Steven Kimberly Paul Emily Andrew Donna Joshua Michelle Kenneth Dorothy Kevin Carol Brian Amanda George
Melissa Edward Deborah Ronald Stephanie Timothy Rebecca Jason Sharon Jeffrey Laura Ryan Cynthia Jacob Kathleen Gary
Amy Nicholas Shirley Eric Angela Jonathan Helen Stephen Anna Larry Brenda Justin Pamela Scott Nicole Brandon Emma
Benjamin Samantha Samuel Katherine Gregory Christine Frank Debra Alexander Rachel Raymond Catherine Patrick Carolyn
Jack Janet Dennis Ruth Jerry Maria Tyler Heather Aaron Diane Jose Virginia Henry Julie Adam Joyce Douglas Victoria
Nathan Olivia Peter Kelly Zachary Christina Kyle Lauren Walter Joan Harold Evelyn Jeremy Judith Ethan Megan Carl
Cheryl Keith Andrea Roger Hannah Gerald Martha Christian Jacqueline Terry Frances Sean Gloria Arthur Ann Austin Teresa
Noah Kathryn Lawrence Sara Jesse Janice Joe Jean Bryan Alice Billy Madison Jordan Doris Albert Abigail Dylan Julia
Bruce Judy Willie Grace Gabriel Denise Alan Amber Juan Marilyn Logan Beverly Wayne Danielle Ralph Theresa Roy Sophia
Eugene Marie Randy Diana Vincent Brittany Russell Natalie Louis Isabella Philip Charlotte Bobby Rose Johnny Alexis
Bradley Kayla Priya Wei Mohammed Fatima Hiroshi Yuki Olga Ivan Pierre Claire Hans Ingrid Luca Giulia Carlos Lucia
Ahmed Aisha Kwame Ama Sven Astrid Rahul Ananya Chen Mei Tomasz Agnieszka Sean Siobhan Dmitri Elena Jorge Camila""".split()
LAST_NAMES = """Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez Gonzalez Wilson
Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris Sanchez Clark Ramirez Lewis Robinson Walker
Young Allen King Wright Scott Torres Nguyen Hill Flores Green Adams Nelson Baker Hall Rivera Campbell Mitchell Carter
Roberts Gomez Phillips Evans Turner Diaz Parker Cruz Edwards Collins Reyes Stewart Morris Morales Murphy Cook Rogers
Gutierrez Ortiz Morgan Cooper Peterson Bailey Reed Kelly Howard Ramos Kim Cox Ward Richardson Watson Brooks Chavez Wood
James Bennett Gray Mendoza Ruiz Hughes Price Alvarez Castillo Sanders Patel Myers Long Ross Foster Jimenez Powell
Jenkins Perry Russell Sullivan Bell Coleman Butler Henderson Barnes Gonzales Fisher Vasquez Simmons Romero Jordan
Patterson Alexander Hamilton Graham Reynolds Griffin Wallace Moreno West Cole Hayes Bryant Herrera Gibson Ellis Tran
Medina Aguilar Stevens Murray Ford Castro Marshall Owens Harrison Fernandez McDonald Woods Washington Kennedy Wells
Vargas Henry Chen Freeman Webb Tucker Guzman Burns Crawford Olson Simpson Porter Hunter Gordon Mendez Silva Shaw
Snyder Mason Dixon Munoz Hunt Hicks Holmes Palmer Wagner Black Robertson Boyd Rose Stone Salazar Fox Warren Mills
Meyer Rice Schmidt Garza Daniels Ferguson Nichols Stephens Soto Weaver Ryan Gardner Payne Grant Dunn Kelley Spencer
Hawkins Arnold Pierce Vazquez Hansen Peters Santos Hart Bradley Knight Elliott Cunningham Duncan Armstrong Hudson
Carroll Lane Riley Andrews Alvarado Ray Delgado Berry Perkins Hoffman Johnston Matthews Pena Richards Contreras
Willis Carpenter Lawrence Sandoval O'Brien O'Neill McKenzie Fitzgerald Schneider Muller Kowalski Nowak Yamamoto
Tanaka Suzuki Wang Zhang Liu Singh Kumar Sharma Okafor Mensah Haddad Novak Dubois Lefebvre Rossi Bianchi Jensen""".split()
COMPANIES = """Acme Plumbing|City Water Dept.|Northside Dental|Green Valley School|Riverside Apartments|Bright Star
Electric|Oak Street Garage|Smith & Sons Roofing|Harbor Insurance Co.|Sunrise Daycare|Metro Gas & Power|Parkview Clinic
|Blue Ridge Landscaping|First Avenue Books|St. Mary's Church|Lakeside Veterinary|Hilltop Farm Supply|Central Library
Fund|Westfield Tennis Club|Maple Leaf Movers|Golden Gate Catering|Pioneer Hardware|Evergreen Florist|Summit Law Office
|Redwood Pharmacy|Coastal Cable TV|Union Credit Card|Old Town Bakery|Silver Lake HOA|Brookside Pediatrics""".replace("\n", " ").split("|")
COMPANIES = [c.strip() for c in COMPANIES]
MEMOS = """rent|rent - March|deposit|invoice #{n}|acct {n}|tuition|Spring term|dues|repairs|lawn care|birthday gift|
wedding gift|piano lessons|water bill|gas bill|electric|insurance|car payment|loan repayment|donation|field trip|
school lunch|daycare|dentist|vet bill|books|groceries|refund|reimbursement|gift|plumbing job|roof repair|
Inv. {n}|Order {n}|policy {n}|ref {n}|Q{q} estimated tax|membership {y}|Thank you!|for Mom""".replace("\n", "").split("|")
MONTHS = "January February March April May June July August September October November December".split()

# Real generic drug names (INN / USAN) with plausible strengths.
DRUGS: dict[str, Sequence[str]] = {
    "Amoxicillin": ("250 mg", "500 mg", "875 mg", "125 mg/5 mL"), "Azithromycin": ("250 mg", "500 mg"),
    "Cephalexin": ("250 mg", "500 mg"), "Ciprofloxacin": ("250 mg", "500 mg", "750 mg"), "Doxycycline": ("100 mg",),
    "Metronidazole": ("250 mg", "500 mg"), "Nitrofurantoin": ("50 mg", "100 mg"), "Clindamycin": ("150 mg", "300 mg"),
    "Sulfamethoxazole/Trimethoprim": ("800/160 mg",), "Levofloxacin": ("500 mg", "750 mg"),
    "Metformin": ("500 mg", "850 mg", "1000 mg"), "Glipizide": ("5 mg", "10 mg"), "Sitagliptin": ("100 mg",),
    "Lisinopril": ("5 mg", "10 mg", "20 mg", "40 mg"), "Losartan": ("25 mg", "50 mg", "100 mg"),
    "Amlodipine": ("2.5 mg", "5 mg", "10 mg"), "Hydrochlorothiazide": ("12.5 mg", "25 mg"), "Metoprolol": ("25 mg", "50 mg"),
    "Atenolol": ("25 mg", "50 mg"), "Carvedilol": ("3.125 mg", "6.25 mg", "12.5 mg"), "Furosemide": ("20 mg", "40 mg"),
    "Spironolactone": ("25 mg", "50 mg"), "Atorvastatin": ("10 mg", "20 mg", "40 mg", "80 mg"),
    "Simvastatin": ("20 mg", "40 mg"), "Rosuvastatin": ("5 mg", "10 mg", "20 mg"), "Warfarin": ("1 mg", "2 mg", "5 mg"),
    "Apixaban": ("2.5 mg", "5 mg"), "Clopidogrel": ("75 mg",), "Aspirin": ("81 mg", "325 mg"),
    "Levothyroxine": ("25 mcg", "50 mcg", "75 mcg", "100 mcg"), "Omeprazole": ("20 mg", "40 mg"),
    "Pantoprazole": ("20 mg", "40 mg"), "Famotidine": ("20 mg", "40 mg"), "Ondansetron": ("4 mg", "8 mg"),
    "Sertraline": ("25 mg", "50 mg", "100 mg"), "Fluoxetine": ("10 mg", "20 mg", "40 mg"), "Citalopram": ("10 mg", "20 mg"),
    "Escitalopram": ("5 mg", "10 mg", "20 mg"), "Bupropion": ("150 mg", "300 mg"), "Trazodone": ("50 mg", "100 mg"),
    "Gabapentin": ("100 mg", "300 mg", "600 mg"), "Pregabalin": ("75 mg", "150 mg"), "Ibuprofen": ("400 mg", "600 mg", "800 mg"),
    "Naproxen": ("250 mg", "500 mg"), "Acetaminophen": ("325 mg", "500 mg"), "Paracetamol": ("500 mg", "1 g"),
    "Tramadol": ("50 mg",), "Cyclobenzaprine": ("5 mg", "10 mg"), "Prednisone": ("5 mg", "10 mg", "20 mg"),
    "Methylprednisolone": ("4 mg",), "Montelukast": ("10 mg",), "Albuterol": ("90 mcg/inh", "2.5 mg/3 mL"),
    "Fluticasone": ("50 mcg", "110 mcg"), "Cetirizine": ("10 mg",), "Loratadine": ("10 mg",),
    "Tamsulosin": ("0.4 mg",), "Finasteride": ("1 mg", "5 mg"), "Allopurinol": ("100 mg", "300 mg"),
    "Alprazolam": ("0.25 mg", "0.5 mg"), "Lorazepam": ("0.5 mg", "1 mg"), "Zolpidem": ("5 mg", "10 mg"),
    "Quetiapine": ("25 mg", "50 mg", "100 mg"), "Hydroxyzine": ("10 mg", "25 mg"), "Meloxicam": ("7.5 mg", "15 mg"),
    "Valacyclovir": ("500 mg", "1 g"), "Fluconazole": ("150 mg",), "Oseltamivir": ("75 mg",), "Insulin glargine": ("100 units/mL",),
    "Diclofenac": ("50 mg", "75 mg"), "Propranolol": ("10 mg", "40 mg"), "Topiramate": ("25 mg", "50 mg"),
    "Lamotrigine": ("25 mg", "100 mg"), "Levetiracetam": ("500 mg",), "Venlafaxine": ("37.5 mg", "75 mg"),
    "Duloxetine": ("30 mg", "60 mg"), "Mirtazapine": ("15 mg", "30 mg"), "Buspirone": ("5 mg", "10 mg"),
    "Ranitidine": ("150 mg",), "Dexamethasone": ("4 mg",), "Hydrocortisone": ("1% cream",), "Mupirocin": ("2% ointment",),
    "Ferrous sulfate": ("325 mg",), "Folic acid": ("1 mg",), "Vitamin D3": ("1000 IU", "50,000 IU"), "Docusate": ("100 mg",),
}
FORMS = ("tab", "tabs", "cap", "caps", "tablet", "capsule", "mL", "puff", "puffs", "drop", "drops", "gtt", "supp", "patch")
ROUTES = ("PO", "po", "by mouth", "SL", "IM", "IV", "SC", "top", "topically", "inh", "PR", "OU", "OD", "OS", "PV")
FREQS = ("QD", "qd", "daily", "once daily", "BID", "bid", "twice a day", "TID", "tid", "QID", "qid", "q4h", "q6h",
         "q8h", "q12h", "QHS", "qhs", "at bedtime", "PRN", "prn", "q4-6h prn pain", "q6h PRN", "every morning",
         "with meals", "AC", "PC", "qAM", "qPM", "weekly", "q.d.", "b.i.d.", "t.i.d.")

COMMON_WORDS = """the of and to a in that is was he for it with as his on be at by I had not are but from or have an
they which one you were her all she there would their we him been has when who will more no if out so said what up its
about into than them can only other new some could time these two may then do first any my now such like our over man
me even most made after also did many before must through back years where much your way well down should because
each just those people how too little state good very make world still own see men work long get here between both
life being under never day same another know while last might us great old year off come since against go came right
used take three states himself few house use during without again place american around however home small found
Mrs thought went say part once general high upon school every don't does got united left number course war until
always away something fact though water less public put thing almost hand enough far took head yet government system
better set told nothing night end why called didn't eyes find going look asked later knew point next program city
business give group toward young days let room president side social given present several order national possible
rather second face per among form important often things looked early white case John become large big need four
within felt along children saw best church ever least power development light thought family interest want members
mind country area others done turned although open God service problem certain kind different thus began door help
means sense whole matter perhaps itself York times law human line above name example action company hands local show
whether five history gave today either act feet across taken past quite anything seen having death experience body
word half really week field car words already information tell together college shall money period held keep sure
probably free seems political real behind cannot miss question air office making brought whose special heard major
problems ago became federal study available known result street economic boy position reason change south board
individual job areas society west close turn love community true court force full seem am wife future age voice
center woman control common policy necessary following front sometimes six girl clear further land run students
provide feel party able mother music education university child effect level stood military town short morning total
outside rate figure class art century washington north usually leave therefore evidence percent plan million sound
minister labour peers meeting tomorrow resolution subject support majority committee conference trade union wages
council report election leader debate parliament prime treaty ambassador crisis troops army navy speech bill budget
tax prices industry factory workers strike coal steel railway london paris moscow berlin africa europe britain
french german russian british queen king prince lord sir captain doctor professor editor newspaper letter story
garden river hill village station road bridge window kitchen table chair coffee tea bread butter sugar apple
orange dinner breakfast lunch holiday summer winter spring autumn weather rain snow wind sunshine cold warm hot
quickly slowly quietly suddenly carefully happily nearly hardly certainly simply clearly especially exactly
beautiful wonderful terrible strange lovely quiet brave clever gentle proud angry tired hungry famous ancient
modern simple difficult serious pleasant narrow broad bright dark heavy empty""".split()
PUNCT_END = (".", ".", ".", ".", "!", "?", ";", ":", ",", "...", " .", " ?", " !")
HOMEWORK_SENTENCES = """The cat sat on the mat.|My dog likes to run in the park.|We went to the zoo on Saturday.|
The sun is hot and bright.|I can read a book by myself.|Plants need water and light to grow.|
My favourite colour is blue.|The moon goes around the Earth.|She has two brothers and one sister.|
Birds build nests in the spring.|We learned about fractions today.|A triangle has three sides.|
The bus was late this morning.|I helped my mom bake a cake.|Frogs can jump very far.|
Water freezes at zero degrees.|My teacher is Mrs. Lee.|It rained all day on Tuesday.|
The library opens at nine.|Whales are the largest animals.|I lost my pencil again!|
Can you help me with my homework?|Ten minus four equals six.|We planted beans in a cup.|
The opposite of hot is cold.|Paris is the capital of France.|Why is the sky blue?|
I read two chapters last night.|A noun is a person, place or thing.|Please show your work.""".replace("\n", "").split("|")
SPELLING = """because friend people school their there they're would could should which where when again
always answer beautiful believe busy caught certain different enough February guess heard island knowledge
library minute necessary neighbour often piece question receive remember separate special surprise through
tomorrow until Wednesday weird whether young science history island February rhythm calendar favourite
careful thought brought laugh daughter autumn castle listen whistle knife write wrong honest hour""".split()
# ~400 of the most frequent Chinese characters (simplified); fonts are checked per character before use
HANZI = ("的一是不了人我在有他这为之大来以个中上们到说国和地也子时道出而要于就下得可你年生自会那后能对着事其里所去行过家十用发"
         "天如然作方成者多日都三小军二无同么经法当起与好看学进种将还分此心前面又定见只主没公从知手本工已名明问机部水动全长"
         "老新外意高正第两些爱已走回先山气等内头物理相开女才打文月平心路电常少期很身现东书条入西给美门听候最吗东写车信读"
         "花校米字写课早晚鸟鱼雨雪风云白红黑绿猫狗牛马羊田林木石火土金笔本朋友妈爸哥姐弟妹吃喝睡觉快乐春夏秋冬今昨明年")
HANZI_WORDS = ("我们", "学校", "老师", "同学", "朋友", "今天", "明天", "昨天", "妈妈", "爸爸", "中国", "北京", "上海",
               "作业", "数学", "语文", "英语", "写字", "读书", "下雨", "天气", "春天", "秋天", "快乐", "小鸟", "花园",
               "吃饭", "喝水", "睡觉", "时间", "问题", "大家", "一起", "高兴", "红色", "白云", "太阳", "月亮")


def _choice(rng: np.random.Generator, seq: Sequence):
    return seq[int(rng.integers(len(seq)))]


# -------------------------------------------------------------------------------- numbers as words

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def int_to_words(n: int) -> str:
    """English words for 0 <= n < 10**12: 1234 -> 'one thousand two hundred thirty-four'."""
    if n < 0:
        raise ValueError("negative")
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("-" + _ONES[n % 10] if n % 10 else "")
    if n < 1000:
        return _ONES[n // 100] + " hundred" + (" " + int_to_words(n % 100) if n % 100 else "")
    for value, name in ((10**9, "billion"), (10**6, "million"), (1000, "thousand")):
        if n >= value:
            return int_to_words(n // value) + " " + name + (" " + int_to_words(n % value) if n % value else "")
    raise AssertionError


def amount_in_words(cents: int, style: int = 0) -> str:
    """Cheque wording: 123456 -> 'One thousand two hundred thirty-four and 56/100'."""
    dollars, c = divmod(cents, 100)
    words = int_to_words(dollars)
    words = words[0].upper() + words[1:]
    if style == 1:
        return f"{words} dollars and {c:02d}/100"
    if style == 2:
        return f"{words} and {c:02d}/100 dollars"
    if style == 3:
        return f"{words.upper()} AND {c:02d}/100"
    return f"{words} and {c:02d}/100"


def amount_in_figures(cents: int, style: int = 0) -> str:
    """'$1,234.56' (0), '1,234.56' (1), '1 234,56' (2), '1.234,56' (3), '€ 1 234,56' (4), '**1,234.56' (5)."""
    dollars, c = divmod(cents, 100)
    us = f"{dollars:,}"
    eu_space = us.replace(",", " ")
    if style == 0:
        return f"${us}.{c:02d}"
    if style == 1:
        return f"{us}.{c:02d}"
    if style == 2:
        return f"{eu_space},{c:02d}"
    if style == 3:
        return f"{us.replace(',', '.')},{c:02d}"
    if style == 4:
        return f"€ {eu_space},{c:02d}"
    return f"**{us}.{c:02d}"


def random_cents(rng: np.random.Generator) -> int:
    magnitude = int(rng.choice([100, 1000, 10000, 100000, 1000000], p=[0.3, 0.35, 0.25, 0.08, 0.02]))
    cents = int(rng.integers(100, magnitude * 100))
    if rng.random() < 0.3:
        cents -= cents % 100  # round dollars: "and 00/100"
    return cents


def date_text(rng: np.random.Generator) -> str:
    y = int(rng.integers(1995, 2031))
    m = int(rng.integers(1, 13))
    d = int(rng.integers(1, 29))
    style = int(rng.integers(9))
    if style == 0:
        return f"{m:02d}/{d:02d}/{y}"
    if style == 1:
        return f"{m}/{d}/{y % 100:02d}"
    if style == 2:
        return f"{d:02d}.{m:02d}.{y}"
    if style == 3:
        return f"{y}-{m:02d}-{d:02d}"
    if style == 4:
        return f"{MONTHS[m - 1]} {d}, {y}"
    if style == 5:
        return f"{d} {MONTHS[m - 1][:3]} {y}"
    if style == 6:
        return f"{MONTHS[m - 1][:3]}. {d}, {y}"
    if style == 7:
        return f"{d}/{m}/{y}"
    return f"{d}-{MONTHS[m - 1][:3]}-{y % 100:02d}"


def person_name(rng: np.random.Generator) -> str:
    first, last = _choice(rng, FIRST_NAMES), _choice(rng, LAST_NAMES)
    style = int(rng.integers(6))
    if style == 0:
        return f"{first[0]}. {last}"
    if style == 1:
        return f"{last}, {first}"
    if style == 2:
        return f"{first} {_choice(rng, FIRST_NAMES)[0]}. {last}"
    return f"{first} {last}"


# ---------------------------------------------------------------------------------------- cheques


def payee(rng: np.random.Generator) -> str:
    return _choice(rng, COMPANIES) if rng.random() < 0.4 else person_name(rng)


def memo(rng: np.random.Generator) -> str:
    m = _choice(rng, MEMOS)
    return m.format(n=int(rng.integers(100, 99999)), q=int(rng.integers(1, 5)), y=int(rng.integers(2000, 2031)))


def cheque_fields(rng: np.random.Generator) -> dict[str, str]:
    cents = random_cents(rng)
    return {
        "date": date_text(rng),
        "payee": payee(rng),
        "amount": amount_in_figures(cents, int(rng.choice(6, p=[0.15, 0.55, 0.1, 0.05, 0.05, 0.1]))).lstrip("$€ "),
        "words": amount_in_words(cents, int(rng.choice(4, p=[0.6, 0.2, 0.1, 0.1]))),
        "memo": memo(rng),
        "signature": person_name(rng),
    }


def cheque_line(rng: np.random.Generator) -> str:
    f = cheque_fields(rng)
    kind = int(rng.integers(6))
    if kind == 0:
        return f["date"]
    if kind == 1:
        return f["payee"]
    if kind == 2:
        return amount_in_figures(random_cents(rng), int(rng.integers(6)))
    if kind == 3:
        return f["words"]
    if kind == 4:
        return f["memo"]
    return f"Pay {f['payee']} {amount_in_figures(random_cents(rng), 0)}"


# ---------------------------------------------------------------------------------- prescriptions


def drug_line(rng: np.random.Generator) -> str:
    name = _choice(rng, sorted(DRUGS))
    strength = _choice(rng, DRUGS[name])
    if rng.random() < 0.25:
        name = name.lower()
    if rng.random() < 0.4:
        return f"{name} {strength} #{int(rng.integers(1, 13)) * 10 if rng.random() < 0.7 else int(rng.integers(5, 100))}"
    return f"{name} {strength}"


def sig_line(rng: np.random.Generator) -> str:
    n = _choice(rng, ("1", "1", "2", "1/2", "1-2", "one", "two", "5", "10"))
    form = _choice(rng, FORMS)
    route = _choice(rng, ROUTES)
    freq = _choice(rng, FREQS)
    s = f"{n} {form} {route} {freq}" if rng.random() < 0.85 else f"Sig: {n} {form} {route} {freq}"
    if rng.random() < 0.5:
        s += f" x {int(rng.integers(3, 31))} {_choice(rng, ('days', 'days', 'd', 'wks', 'weeks'))}"
    if rng.random() < 0.15:
        s += _choice(rng, (" with food", " for pain", " prn", " for infection", " for BP", " as directed"))
    return s


def prescription_fields(rng: np.random.Generator, n_drugs: int | None = None) -> dict:
    n = n_drugs if n_drugs is not None else int(rng.integers(1, 4))
    return {
        "patient": person_name(rng),
        "date": date_text(rng),
        "age": f"{int(rng.integers(1, 95))}" + (" y" if rng.random() < 0.3 else ""),
        "items": [(drug_line(rng), sig_line(rng)) for _ in range(n)],
        "refills": _choice(rng, ("0", "1", "2", "3", "5", "none", "NR", "x2")),
        "signature": "Dr. " + _choice(rng, LAST_NAMES) if rng.random() < 0.6 else person_name(rng),
    }


def prescription_line(rng: np.random.Generator) -> str:
    kind = int(rng.integers(7))
    if kind in (0, 1):
        return drug_line(rng)
    if kind in (2, 3):
        return sig_line(rng)
    if kind == 4:
        return f"{drug_line(rng)} {sig_line(rng)}"
    if kind == 5:
        return person_name(rng) if rng.random() < 0.5 else date_text(rng)
    return f"Refills: {_choice(rng, ('0', '1', '2', '3', 'none'))}"


# ---------------------------------------------------------------------------------------- homework


def arithmetic(rng: np.random.Generator) -> str:
    """An exercise WITH its correct answer: '17 + 25 = 42', '3/4 + 1/8 = 7/8', '144 / 12 = 12'."""
    from fractions import Fraction

    kind = int(rng.integers(7))
    big = int(rng.choice([10, 100, 1000], p=[0.3, 0.5, 0.2]))
    a, b = int(rng.integers(0, big)), int(rng.integers(0, big))
    if kind == 0:
        return f"{a} + {b} = {a + b}"
    if kind == 1:
        a, b = max(a, b), min(a, b)
        return f"{a} - {b} = {a - b}"
    if kind == 2:
        a, b = int(rng.integers(0, 13)), int(rng.integers(0, 13))
        return f"{a} {_choice(rng, ('x', '×', '*'))} {b} = {a * b}"
    if kind == 3:
        b, q = int(rng.integers(1, 13)), int(rng.integers(0, 13))
        return f"{b * q} {_choice(rng, ('÷', '/', ':'))} {b} = {q}"
    if kind == 4:
        d1, d2 = int(rng.integers(2, 13)), int(rng.integers(2, 13))
        f1, f2 = Fraction(int(rng.integers(1, d1)), d1), Fraction(int(rng.integers(1, d2)), d2)
        op = _choice(rng, ("+", "-", "x"))
        if op == "-" and f2 > f1:
            f1, f2 = f2, f1
        r = f1 + f2 if op == "+" else f1 - f2 if op == "-" else f1 * f2
        rs = f"{r.numerator}/{r.denominator}" if r.denominator != 1 else str(r.numerator)
        return f"{f1.numerator}/{f1.denominator} {op} {f2.numerator}/{f2.denominator} = {rs}"
    if kind == 5:
        x = int(rng.integers(1, 20))
        c, k = int(rng.integers(1, 10)), int(rng.integers(0, 30))
        return f"{c}x + {k} = {c * x + k}, x = {x}"
    a10, b10 = round(float(rng.integers(0, 10000)) / 100, 2), round(float(rng.integers(0, 10000)) / 100, 2)
    return f"{a10:.2f} + {b10:.2f} = {a10 + b10:.2f}"


def homework_line(rng: np.random.Generator) -> str:
    kind = int(rng.choice(4, p=[0.45, 0.3, 0.15, 0.1]))
    prefix = f"{int(rng.integers(1, 21))}. " if rng.random() < 0.3 else (f"{'abcdef'[int(rng.integers(6))]}) " if rng.random() < 0.1 else "")
    if kind == 0:
        return prefix + arithmetic(rng)
    if kind == 1:
        return prefix + _choice(rng, HOMEWORK_SENTENCES)
    if kind == 2:
        k = int(rng.integers(2, 6))
        words = [str(_choice(rng, SPELLING)) for _ in range(k)]
        return prefix + _choice(rng, (", ", "  ", " ")).join(words)
    return prefix + generic_line(rng, max_words=8)


def hanzi_line(rng: np.random.Generator, allowed: set[str] | None = None) -> str:
    """A short line of common characters (and words); ``allowed`` restricts to what a font covers."""
    n = int(rng.integers(3, 13))
    out = ""
    while len(out) < n:
        if rng.random() < 0.4:
            w = _choice(rng, HANZI_WORDS)
        else:
            w = _choice(rng, HANZI)
        if allowed is None or all(c in allowed for c in w):
            out += w
    if rng.random() < 0.3:
        out += _choice(rng, ("。", "，", "！", "？", ""))
        if allowed is not None and out[-1:] and out[-1] not in allowed:
            out = out[:-1]
    return out


# ---------------------------------------------------------------------------------------- generic


def iam_form_split(line_id: str) -> str:
    """The split of an IAM line under htr_ray.data.datasets' rule (by form), so that synthetic data never
    reuses text or strokes from held-out forms."""
    from htr_ray.data.datasets import iam_form_id, split_by_group

    return split_by_group(iam_form_id(line_id))


def _iam_labels_path() -> Path:
    return paths.shared_data() / "iam_ondb_lines" / "labels.tsv"


@functools.lru_cache(maxsize=1)
def iam_train_lines() -> tuple[tuple[str, str], ...]:
    """(line_id, transcription) of the IAM-OnDB lines of TRAIN forms only (empty if the data is absent)."""
    p = _iam_labels_path()
    if not p.is_file():
        return ()
    out = []
    with open(p, encoding="utf-8") as fh:
        next(fh, None)
        for row in fh:
            parts = row.rstrip("\n").split("\t")
            if len(parts) >= 3 and iam_form_split(parts[0]) == "train" and parts[2].strip():
                out.append((parts[0], parts[2]))
    return tuple(out)


@functools.lru_cache(maxsize=1)
def _bigrams() -> dict[str, tuple[str, ...]]:
    """Word bigram model over the train-form IAM transcriptions (LOB tokenisation kept: 'Mr . Foot')."""
    table: dict[str, list[str]] = {}
    for _, text in iam_train_lines():
        words = ["<s>"] + text.split() + ["</s>"]
        for a, b in zip(words, words[1:]):
            table.setdefault(a, []).append(b)
    return {k: tuple(v) for k, v in table.items()}


@functools.lru_cache(maxsize=1)
def _bigram_keys() -> tuple[str, ...]:
    return tuple(sorted(k for k in _bigrams() if k not in ("<s>", "</s>")))


def _markov_line(rng: np.random.Generator, max_chars: int) -> str:
    table = _bigrams()
    if not table:
        return ""
    w = _choice(rng, table["<s>"]) if rng.random() < 0.5 else _choice(rng, _bigram_keys())
    out: list[str] = []
    while w != "</s>" and len(" ".join(out + [w])) <= max_chars:
        out.append(w)
        nxt = table.get(w)
        if not nxt:
            break
        w = _choice(rng, nxt)
    return " ".join(out)


def _word(rng: np.random.Generator) -> str:
    r = rng.random()
    if r < 0.04:
        return str(int(rng.integers(0, 2000)))
    if r < 0.08:
        return _choice(rng, FIRST_NAMES + LAST_NAMES)
    w = _choice(rng, COMMON_WORDS)
    if rng.random() < 0.04:
        w = w.upper()
    return w


def generic_line(rng: np.random.Generator, max_words: int = 11) -> str:
    """English-looking text with varied vocabulary and punctuation; ~40 % follows the IAM LOB style."""
    r = rng.random()
    if r < 0.4:
        s = _markov_line(rng, max_chars=int(rng.integers(15, 60)))
        if s:
            return s
    n = int(rng.integers(2, max_words + 1))
    words = [_word(rng) for _ in range(n)]
    lob = rng.random() < 0.3  # LOB tokenisation: detached punctuation, "M Ps"
    out = []
    for i, w in enumerate(words):
        if i == 0 and rng.random() < 0.6:
            w = w[:1].upper() + w[1:]
        out.append(w)
        if i < n - 1 and rng.random() < 0.12:
            p = _choice(rng, (",", ",", ";", ":", " -", "'s"))
            if lob and p in (",", ";", ":"):
                out.append(p)
            else:
                out[-1] += p
        if rng.random() < 0.02:
            out[-1] = f'"{out[-1]}"'
        if rng.random() < 0.015:
            out[-1] = f"({out[-1]})"
    end = _choice(rng, PUNCT_END) if rng.random() < 0.6 else ""
    s = " ".join(out)
    if end:
        s = s + (" " + end.strip() if lob else end)
    return s


SOURCES: dict[str, Callable[[np.random.Generator], str]] = {
    "cheque": cheque_line,
    "prescription": prescription_line,
    "homework": homework_line,
    "hanzi": hanzi_line,
    "generic": generic_line,
}


def line_text(domain: str, rng: np.random.Generator) -> str:
    if domain not in SOURCES:
        raise ValueError(f"unknown text domain {domain!r}; choose from {sorted(SOURCES)}")
    return " ".join(SOURCES[domain](rng).split())  # one space between words: what a reader can tell apart
