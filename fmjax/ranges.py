"""The valid range of every numeric config key, declared where the key is declared.

A model, dataset, task-options or optimizer-options dataclass gives each numeric field one of the
types below, e.g. `num_layers: PositiveInt = 6`, `dropout_rate: Fraction = 0.1`, `kernel_sizes:
Sequence[PositiveInt] = (5, 3)` (a range on the element type applies to each element); the base
config's other sections declare theirs in `configs.BASE_RANGES`. `configs.validate` checks every
value with `check` before anything is built, so `dropout_rate=1.5` or a NaN learning rate stops
with one line naming the key, the value and the range. A numeric field without a declared range
fails tests/test_config_checks.py.
"""

import collections.abc
import dataclasses
import math
import numbers
import typing
from typing import Annotated

from fmjax.errors import UserError

INT32_MAX = 2**31 - 1   # steps, sizes and counts: the device holds them in int32
UINT32_MAX = 2**32 - 1  # seeds: numpy's legacy seeding and scikit-learn take at most 32 bits
_BOUND_NAMES = {INT32_MAX: "2**31 - 1", UINT32_MAX: "2**32 - 1", math.inf: "inf"}


@dataclasses.dataclass(frozen=True)
class Range:
    """An interval of allowed numbers (integers only, if `integer`), plus `special` values outside
    it that mean something (a mesh size of -1: the remaining devices). NaN is in no interval, and
    inf only where `high` is inf and `high_open` is False (never, below)."""
    low: float
    high: float
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    special: tuple = ()

    def __str__(self) -> str:
        interval = (f"{'(' if self.low_open else '['}{_bound(self.low)}, "
                    f"{_bound(self.high)}{')' if self.high_open else ']'}")
        text = f"an integer in {interval}" if self.integer else f"in {interval}"
        return text + "".join(f", or {value}" for value in self.special)

    def problem(self, value) -> str | None:
        """Why `value` is not allowed ('is out of range', ...), or None if it is."""
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return "is not a number"
        if self.integer and not isinstance(value, numbers.Integral):
            return "is not an integer"
        if value in self.special:
            return None
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return None if above and below else "is out of range"


def _bound(x: float) -> str:
    return _BOUND_NAMES.get(x, f"{x:g}")


PositiveInt = Annotated[int, Range(1, INT32_MAX, integer=True)]
NonNegativeInt = Annotated[int, Range(0, INT32_MAX, integer=True)]   # 0 means "off" or "all"
Seed = Annotated[int, Range(0, UINT32_MAX, integer=True)]
MeshSize = Annotated[int, Range(1, INT32_MAX, integer=True, special=(-1,))]
PositiveFloat = Annotated[float, Range(0, math.inf, low_open=True, high_open=True)]
NonNegativeFloat = Annotated[float, Range(0, math.inf, high_open=True)]   # 0 means "off"
Fraction = Annotated[float, Range(0, 1, high_open=True)]        # rates and betas: [0, 1)
OpenFraction = Annotated[float, Range(0, 1, low_open=True, high_open=True)]   # splits: (0, 1)


def declared(hint) -> tuple[Range | None, bool]:
    """(the Range a type declares, whether it is each element's: `Sequence[PositiveInt]`)."""
    if typing.get_origin(hint) is Annotated:
        return next((m for m in hint.__metadata__ if isinstance(m, Range)), None), False
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (collections.abc.Sequence, tuple) and args:
        return declared(args[0])[0], True
    return None, False


def check(key: str, value, hint) -> None:
    """UserError naming `config.<key>`, the value and its range unless `value` (each element of
    it, for a sequence type) is inside the range that type `hint` declares."""
    valid, each = declared(hint)
    if valid is None:
        return
    if not each:
        elements = [(f"config.{key}", value)]
    elif isinstance(value, (tuple, list)):
        elements = [(f"config.{key}[{i}]", v) for i, v in enumerate(value)]
    else:
        raise UserError(f"config.{key}={value!r} is not a sequence: must be a tuple, each "
                        f"element {valid}")
    for name, v in elements:
        problem = valid.problem(v)
        if problem:
            raise UserError(f"{name}={v!r} {problem}: must be {valid}")


def check_dataclass(section, cls, prefix: str) -> None:
    """`check` every key of config section `section` that is a field of dataclass `cls`."""
    for field in dataclasses.fields(cls):
        if field.name in section:
            check(f"{prefix}.{field.name}", section[field.name], field.type)
