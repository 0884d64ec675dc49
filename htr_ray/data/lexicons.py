"""Domain word lists and texts, in one place: cheque words (number words, months), drug names with
their strengths, dosage forms, routes and frequencies, homework sentences and spelling words, common
English words, names, and the Chinese characters the generators draw.

Used by the synthetic-data generator (:mod:`htr_ray.data.synth.texts` draws from these lists), by
decoding (:func:`builtin` lexicons: ``builtin:drugs``, ``builtin:prescription``, ``builtin:cheque``),
by the domain checks (the drug lexicon, number words) and by the language model build
(:func:`domain_texts`: phrases of the three domains, deterministic). Plain Python: no numpy, no torch.
"""

from __future__ import annotations

import random
import re
from typing import Sequence

# ------------------------------------------------------------------------------------ word lists

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

# ---------------------------------------------------------------------------------- number words

NUMBER_ONES = tuple(("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
                     "sixteen seventeen eighteen nineteen").split())
NUMBER_TENS = tuple("_ _ twenty thirty forty fifty sixty seventy eighty ninety".split())  # index = tens digit
NUMBER_SCALES = (("billion", 10**9), ("million", 10**6), ("thousand", 1000))
NUMBER_WORDS = tuple(NUMBER_ONES) + tuple(w for w in NUMBER_TENS if w != "_") + ("hundred",) + tuple(
    s for s, _ in NUMBER_SCALES)


def int_to_words(n: int) -> str:
    """English words for 0 <= n < 10**12: 1234 -> 'one thousand two hundred thirty-four'."""
    if n < 0:
        raise ValueError("negative")
    if n < 20:
        return NUMBER_ONES[n]
    if n < 100:
        return NUMBER_TENS[n // 10] + ("-" + NUMBER_ONES[n % 10] if n % 10 else "")
    if n < 1000:
        return NUMBER_ONES[n // 100] + " hundred" + (" " + int_to_words(n % 100) if n % 100 else "")
    for name, value in NUMBER_SCALES:
        if n >= value:
            return int_to_words(n // value) + " " + name + (" " + int_to_words(n % value) if n % value else "")
    raise AssertionError


CHEQUE_WORDS = NUMBER_WORDS + ("and", "dollars", "dollar", "cents", "only", "Pay", "Memo")
PRESCRIPTION_WORDS = ("Sig", "Refills", "take", "days", "weeks", "wks", "d", "with", "food", "for", "pain", "as",
                      "directed", "infection", "BP", "Dr", "none", "one", "two", "units", "mg", "mcg", "g", "IU",
                      "cream", "ointment")

# --------------------------------------------------------------------------------- built-in lexicons

BUILTIN = ("drugs", "prescription", "cheque")


def builtin(name: str) -> list[str]:
    """A built-in lexicon by name: ``drugs`` (generic drug names), ``prescription`` (drugs + dosage
    forms, routes, frequencies and the words around them), ``cheque`` (amount words, months)."""
    if name == "drugs":
        return sorted(DRUGS)
    if name == "prescription":
        words = set(DRUGS) | set(FORMS) | set(ROUTES) | {w for f in FREQS for w in f.split()} | set(PRESCRIPTION_WORDS)
        # letters only: "q.d." or "q4-6h" must not make dots and digits word characters
        return sorted({w for entry in words for w in re.findall(r"[A-Za-z]+", entry)})
    if name == "cheque":
        return sorted(set(CHEQUE_WORDS) | set(MONTHS))
    raise ValueError(f"unknown built-in lexicon {name!r} ({', '.join(BUILTIN)})")


# ------------------------------------------------------------------------------------ domain texts


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def domain_texts(seed: int = 0, per_domain: int = 600) -> list[str]:
    """Lines of the three document domains for training a language model, made from the lists above:
    every drug with each of its strengths (as written and in lower case), dosage instructions
    (count, form, route, frequency, duration), cheque amounts in words and in figures, dates, homework
    arithmetic with correct answers, homework sentences and spelling words. Deterministic for a seed;
    about ``3 * per_domain`` + a few hundred lines."""
    rng = random.Random(seed)
    out: list[str] = []
    # prescriptions
    for name in sorted(DRUGS):
        for strength in DRUGS[name]:
            out.append(f"{name} {strength}")
            out.append(f"{name.lower()} {strength}")
    for _ in range(per_domain):
        n = rng.choice(("1", "1", "2", "1/2", "1-2", "one", "two", "5", "10"))
        s = f"{n} {rng.choice(FORMS)} {rng.choice(ROUTES)} {rng.choice(FREQS)}"
        if rng.random() < 0.15:
            s = "Sig: " + s
        if rng.random() < 0.4:
            s += f" x {rng.randint(3, 30)} {rng.choice(('days', 'days', 'd', 'wks', 'weeks'))}"
        out.append(s)
    # cheques: amounts in words, dates
    for _ in range(per_domain):
        dollars = rng.choice((rng.randint(1, 99), rng.randint(100, 999), rng.randint(1000, 9999),
                              rng.randint(10000, 999999)))
        cents = 0 if rng.random() < 0.3 else rng.randint(1, 99)
        words = _cap(int_to_words(dollars))
        out.append(rng.choice((f"{words} and {cents:02d}/100", f"{words} dollars and {cents:02d}/100",
                               f"{words} and {cents:02d}/100 dollars")))
    for _ in range(per_domain // 2):  # amounts in figures, as cheques and their memo lines write them
        dollars, cents = rng.choice((rng.randint(1, 999), rng.randint(1000, 99999))), rng.randint(0, 99)
        us = f"{dollars:,}"
        out.append(rng.choice((f"${us}.{cents:02d}", f"{us}.{cents:02d}", f"**{us}.{cents:02d}",
                               f"€ {us.replace(',', ' ')},{cents:02d}", f"{us.replace(',', '.')},{cents:02d}",
                               f"Pay {rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)} ${us}.{cents:02d}")))
    for m in MONTHS:
        out.append(f"{m} {rng.randint(1, 28)}, {rng.randint(1995, 2030)}")
    # homework
    for _ in range(per_domain):
        a, b = rng.randint(0, 999), rng.randint(0, 999)
        op = rng.choice("+-x/")
        if op == "+":
            out.append(f"{a} + {b} = {a + b}")
        elif op == "-":
            a, b = max(a, b), min(a, b)
            out.append(f"{a} - {b} = {a - b}")
        elif op == "x":
            a, b = rng.randint(0, 12), rng.randint(0, 12)
            out.append(f"{a} {rng.choice(('x', '×', '*'))} {b} = {a * b}")
        else:
            b, q = rng.randint(1, 12), rng.randint(0, 12)
            out.append(f"{b * q} {rng.choice(('/', '÷', ':'))} {b} = {q}")
    out.extend(HOMEWORK_SENTENCES)
    words = list(SPELLING)
    for i in range(0, len(words), 5):
        out.append(" ".join(words[i:i + 5]))
    return out
