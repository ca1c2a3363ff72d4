"""The recommended checkpoint: which of a run's measured checkpoints to keep.

The rule (docs/eval.md): among the checkpoints whose files still exist,
1. eligible: likeness > 0, leakage <= max_leakage_ratio x likeness (the class prompt does not draw the subject) and
   flexibility >= min_flex_ratio x likeness (the identity survives other prompts); none eligible: all are
   (a checkpoint that shows no likeness at all passes both ratio bounds trivially, 0 <= 0: it is never eligible);
2. the best likeness among the eligible; recommended: the earliest eligible checkpoint within `tolerance` of it
   (earlier = less overtrained at about the same likeness).
Likeness, flexibility and leakage are on one scale per metric (shares 0..1 for face and toy, similarities for image).
"""

from __future__ import annotations

from dataclasses import dataclass

LIKENESS_COLUMNS = ("likeness", "flexibility", "leakage")


@dataclass(frozen=True)
class Rule:
    tolerance: float = 0.1
    max_leakage_ratio: float = 0.5
    min_flex_ratio: float = 0.5

    @classmethod
    def from_config(cls, likeness_cfg) -> Rule:
        return cls(likeness_cfg.tolerance, likeness_cfg.max_leakage_ratio, likeness_cfg.min_flex_ratio)

    def eligible(self, row: dict) -> bool:
        like = row["likeness"]
        return (
            like > 0
            and row["leakage"] <= self.max_leakage_ratio * like
            and row["flexibility"] >= self.min_flex_ratio * like
        )

    def recommend(self, rows: list[dict]) -> int | None:
        """Index into `rows` (ordered by step) of the recommended checkpoint; None when no row is available.
        A row with `available: False` (its files pruned or missing) is never recommended."""
        candidates = [i for i, r in enumerate(rows) if r.get("available", True)]
        if not candidates:
            return None
        eligible = [i for i in candidates if self.eligible(rows[i])] or candidates
        best = max(rows[i]["likeness"] for i in eligible)
        return min((i for i in eligible if rows[i]["likeness"] >= best - self.tolerance), key=lambda i: rows[i]["step"])
