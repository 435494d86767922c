"""The ``[eval]`` table of a recipe: the folders and schedule of a run's evaluations.

``reproduce`` reads it for the periodic k-NN during pre-training (every ``knn_every`` epochs, and
after the last one) and for the final evaluations of the exported backbone::

    [eval]
    train = "embedded:digits@32/train"   # labelled image folders; "" = none given
    val = "embedded:digits@32/val"
    knn_every = 1                        # epochs between periodic k-NN evaluations; 0 = off
    knn_k = 20                           # neighbours of the periodic k-NN
    protocols = ["knn"]                  # final evaluations: knn, linear, finetune, all, none
    options = { linear = "--epochs 10" } # further command-line options of a protocol

Catalog (ImageNet) recipes leave the folders empty: the user names them with ``--eval-train`` and
``--eval-val``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["EVAL_PROTOCOLS", "EvalConfig", "headline_protocols", "resolve_protocols"]

#: What ``protocols`` (and ``reproduce --eval``) may name; ``all`` = the method's headline
#: protocol plus k-NN, ``none`` = no final evaluation.
EVAL_PROTOCOLS: tuple[str, ...] = ("knn", "linear", "finetune", "all", "none")

# The protocol each method's papers report: CARE linear evaluation, SERE full fine-tuning.
_HEADLINE = {"care": "linear", "sere": "finetune"}


@dataclass
class EvalConfig:
    train: str = ""
    val: str = ""
    knn_every: int = 0
    knn_k: int = 20
    protocols: list[str] = field(default_factory=lambda: ["knn"])
    # protocol -> further options of its command line (``reproduce --eval-option`` adds to them)
    options: dict[str, str] = field(default_factory=dict)

    def problems(self) -> list[str]:
        """What is wrong with the table (empty when it is usable)."""
        found = []
        if self.knn_every < 0:
            found.append(f"eval.knn_every = {self.knn_every} must be >= 0 (0 = off)")
        if self.knn_k < 1:
            found.append(f"eval.knn_k = {self.knn_k} must be >= 1")
        unknown = [p for p in self.protocols if p not in EVAL_PROTOCOLS]
        if unknown:
            found.append(f"eval.protocols {unknown} are not among {', '.join(EVAL_PROTOCOLS)}")
        wrong = [k for k in self.options if k not in ("knn", "linear", "finetune")]
        if wrong:
            found.append(f"eval.options names {wrong}: its keys are knn, linear and finetune")
        return found

    def option_items(self) -> list[str]:
        """``options`` as ``PROTOCOL=ARGS`` strings (the form of ``--eval-option``)."""
        return [f"{protocol}={text}" for protocol, text in self.options.items()]

    def knn_epochs(self, epochs: int) -> set[int]:
        """The 1-based epochs of a run of ``epochs`` epochs after which the periodic k-NN runs:
        every ``knn_every``-th and the last one (none when ``knn_every`` is 0)."""
        if self.knn_every <= 0:
            return set()
        return set(range(self.knn_every, epochs + 1, self.knn_every)) | {epochs}


def headline_protocols(method_kind: str) -> list[str]:
    """The protocol(s) the papers of ``method_kind`` report (``[]`` for an unknown method)."""
    headline = _HEADLINE.get(method_kind)
    return [headline] if headline else []


def resolve_protocols(asked: list[str], method_kind: str) -> list[str]:
    """The final evaluations to run, in order: k-NN first (always, unless ``none`` is asked),
    then linear and fine-tuning as asked (``all`` = the method's headline protocol).

    Args:
        asked: names of :data:`EVAL_PROTOCOLS` (comma lists allowed: ``"knn,linear"``).
        method_kind: ``care`` or ``sere``.

    Returns:
        Protocol names without duplicates, e.g. ``["knn", "linear"]``; ``[]`` for ``none``.

    Raises:
        ValueError: an unknown name.
    """
    names = [n.strip() for item in asked for n in item.split(",") if n.strip()]
    unknown = [n for n in names if n not in EVAL_PROTOCOLS]
    if unknown:
        raise ValueError(f"--eval {unknown}: choose among {', '.join(EVAL_PROTOCOLS)}")
    if "none" in names:
        return []
    chosen = {"knn"}
    for n in names:
        chosen.update(headline_protocols(method_kind) if n == "all" else [n])
    return [p for p in ("knn", "linear", "finetune") if p in chosen]
