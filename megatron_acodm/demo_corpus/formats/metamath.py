"""Metamath databases (`.mm`): keep the statements and comments, drop the proofs.

A proof is everything between the `$=` and `$.` tokens of a `$p` statement; in set.mm most of
them are compressed letter strings that are noise for a language model. Comments (`$(` ... `$)`)
are matched first so that a `$=` mentioned inside a comment is left alone. Tokens are
whitespace-delimited, hence the lookarounds.
"""

from __future__ import annotations

import re

_COMMENT_OR_PROOF = re.compile(r"(?s)(?<!\S)(\$\(.*?(?<!\S)\$\))(?!\S)|(?<!\S)\$=(?!\S).*?(?<!\S)\$\.(?!\S)")


def strip_proofs(text: str) -> str:
    """`label $p statement $= proof $.` becomes `label $p statement $.`; comments are kept verbatim."""
    return _COMMENT_OR_PROOF.sub(lambda match: match.group(1) or "$.", text)
