"""Word and character error rates of hypothesis files against a reference, with jiwer.

Files are Kaldi ``text`` (``utt_id words...``) or sclite ``trn`` (``words... (utt_id)``): trn
where every line ends in a parenthesised id, so a Kaldi line whose last word is in parentheses
stays Kaldi.
"""

import re
from pathlib import Path
from typing import Dict, List, Tuple, Union

import jiwer

_TRN_LINE = re.compile(r"^(.*)\((\S+)\)\s*$")


def read_transcripts(path: Union[str, Path]) -> Dict[str, str]:
    """{utt_id: text} from a Kaldi text or an sclite trn file; errors name the line."""
    lines = [(number, line) for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1)
             if line.strip()]  # fmt: skip
    is_trn = bool(lines) and all(_TRN_LINE.match(line) for _, line in lines)
    out = {}
    for number, line in lines:
        if is_trn:
            text, utt_id = _TRN_LINE.match(line).groups()
        else:
            utt_id, text = (line.split(maxsplit=1) + [""])[:2]
        if utt_id in out:
            raise ValueError(f"{path}:{number}: utterance {utt_id} appears twice")
        out[utt_id] = " ".join(text.split())
    return out


def error_rates(ref: Dict[str, str], hyp: Dict[str, str]) -> dict:
    """WER and CER (percent) with substitution / deletion / insertion counts over the
    utterances of ``ref``; every one needs a hypothesis (an empty one is allowed)."""
    missing = sorted(set(ref) - set(hyp))
    if missing:
        raise ValueError(f"{len(missing)} reference utterances have no hypothesis, e.g. {missing[:3]}")
    utts = sorted(ref)
    if not utts:
        raise ValueError("the reference is empty")
    refs, hyps = [ref[u] for u in utts], [hyp[u] for u in utts]
    words = jiwer.process_words(refs, hyps)
    chars = jiwer.process_characters(refs, hyps)
    n_words = words.hits + words.substitutions + words.deletions
    return {
        "utterances": len(utts),
        "words": n_words,
        "wer": round(100 * words.wer, 2),
        "substitutions": words.substitutions,
        "deletions": words.deletions,
        "insertions": words.insertions,
        "cer": round(100 * chars.cer, 2),
        "sentence_error": round(100 * sum(r != h for r, h in zip(refs, hyps)) / len(utts), 2),
    }


def results_table(rows: List[Tuple[str, dict]]) -> str:
    """A Markdown table, one row per (name, error_rates)."""
    lines = [
        "| decoding | utts | words | WER % | sub | del | ins | CER % | SER % |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows:
        lines.append(
            f"| {name} | {r['utterances']} | {r['words']} | {r['wer']:.2f} | {r['substitutions']} | "
            f"{r['deletions']} | {r['insertions']} | {r['cer']:.2f} | {r['sentence_error']:.2f} |"
        )
    return "\n".join(lines) + "\n"
