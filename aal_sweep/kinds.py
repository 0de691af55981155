"""The kinds of trial and what each measures, for the plan, the training core and the store rows alike.

A trial's kind is the name of the phase that plans it (the store's `kind` column), except single and
pair, which share the first phase. No torch, no Ray: `status` and the queries import this.
"""

from __future__ import annotations

SINGLE, PAIR, ADVERSARIAL = "single", "pair", "adversarial"
MULTITASK_ALL = "multitask_all"  # one training, every sweep attribute's head on one backbone (Table 1, row 2)
ADVERSARIAL_MULTIPLE = "adversarial_multiple"  # a against every attribute that lowers it (eq. 10, 11)
ADVERSARIAL_SHARED = "adversarial_shared"  # frozen conv layers of the multitask_all model (Sec. 4.2.1)

# a screened pair phase's estimator trials (config.PairsConfig): their scores rank candidate partners
LOOKAHEAD = "lookahead"  # one multi-task training recording TAG's inter-task affinity (train/lookahead.py)
SHORT = "short"  # a pair trained for its first epochs only

VARIANTS = (MULTITASK_ALL, ADVERSARIAL_MULTIPLE, ADVERSARIAL_SHARED)  # their tasks: train/variants.py
# The auxiliary heads (C_b) are thrown away by design: only the primary attribute's head is measured.
PRIMARY_ONLY = (ADVERSARIAL, ADVERSARIAL_MULTIPLE, ADVERSARIAL_SHARED)
# Trained by gradient reversal whatever adversarial.method says: eq. 10-11 are written for it, and the
# paper's shared-representation row is an ablation of its default (GRL) training.
GRL_ONLY = (ADVERSARIAL_MULTIPLE, ADVERSARIAL_SHARED)
PARTNER_SEPARATOR = ","  # adversarial_multiple's `partner` column: its partners in sweep order, comma-joined


def evaluated(kind: str, attributes: tuple[str, ...]) -> tuple[str, ...]:
    """The attributes whose heads a trial of `kind` measures (primary first)."""
    return tuple(attributes[:1]) if kind in PRIMARY_ONLY else tuple(attributes)


def partner_of(kind: str, attributes: tuple[str, ...], head: str) -> str | None:
    """The store's `partner` for the row of `head`: the other attribute of a pair or pairwise adversarial
    trial; every partner, comma-joined, of an adversarial_multiple trial; none for single and multitask_all."""
    if kind in (SINGLE, MULTITASK_ALL, LOOKAHEAD):
        return None
    others = [a for a in attributes if a != head]
    if kind == ADVERSARIAL_MULTIPLE:
        return PARTNER_SEPARATOR.join(others)
    return others[0] if others else None
