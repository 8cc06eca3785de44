"""Limits for parsing and evaluating conditions: one frozen options record.

The limits exist because conditions come from task definitions that any peer
may publish, and every evaluator in the mesh runs them whenever a dataset
changes.  A rule must therefore cost a bounded, small amount of work whatever
its text and whatever the data it reads.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InvalidOptions

#: Hard ceiling on ``max_depth``: the parser-to-AST step and the evaluator
#: recurse once per nesting level, and Python's default recursion limit is
#: 1000 frames, so we keep well below it whatever the caller configures.
DEPTH_CEILING = 200


@dataclass(frozen=True)
class ConditionOptions:
    """Limits applied by :func:`~conditions.parse_untrusted`, evaluation and firing.

    Attributes:
        max_length: Longest condition text accepted, in characters (default
            4096).  Bounds parse time, which is linear in the text.
        max_depth: Deepest expression nesting accepted (default 32).  A chain
            ``a && b && c`` is one level however long, so the limit only bites
            on genuinely nested calls, parentheses and ``!``.  At most 200.
        max_steps: Most evaluation steps (default 10,000).  One step is one
            expression node visited, one resolver call, or one collection
            element looked at (iterated, compared or copied).
        max_collection: Largest list, dict or set a function may materialize
            or iterate (default 100,000); also the most tasks one ``map`` rule
            may generate.  ``len`` does not iterate, so it works on larger
            collections.
    """

    max_length: int = 4096
    max_depth: int = 32
    max_steps: int = 10_000
    max_collection: int = 100_000

    def __post_init__(self) -> None:
        for name in ("max_length", "max_depth", "max_steps", "max_collection"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise InvalidOptions(f"{name} must be a positive int, got {value!r}")
        if self.max_depth > DEPTH_CEILING:
            raise InvalidOptions(f"max_depth must be at most {DEPTH_CEILING}, got {self.max_depth}")
