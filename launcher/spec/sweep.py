"""Sweep expressions inside script args -> experiments (pure; no I/O).

A flag's value sweeps when it *looks like a sweep*; every other argument passes through
byte for byte (arguments never meet a shell). Forms, as Grid had them::

    --lr "[0.01, 0.001]"                a list of int/float/str/bool literals
    --backbone "['x3d_xs', 'x3d_m']"
    --flip "[True, False]"
    --epochs "range(1, 10, 2)"          range(stop) / range(start, stop[, step]), ints
    --lr "uniform(1e-4, 1e-1, 5)"       N values drawn uniformly from [low, high]
    --lr "loguniform(1e-5, 1e-1, 4)"    N values drawn log-uniformly (low > 0)
    --seed "randint(1, 100, 3)"         N ints drawn from [low, high], both inclusive

A value looks like a sweep when, stripped, it starts with ``[``, or it is
``NAME(...)`` where NAME is one of the functions above, or any ``NAME(numbers)`` such as
``normal(0, 1, 3)`` (a likely typo or an unsupported distribution). Such a value that does not
parse is a SpecError naming the argument and the allowed forms, never a silent literal.
Values are parsed with :mod:`ast` only: ``literal_eval`` for lists, and a whitelist of call
names with numeric literal arguments; nothing is ever evaluated.

Flags are ``--name VALUE`` or ``--name=VALUE`` (also ``-n VALUE``); the experiment's params are
``{name: value}``. Values are rendered back as strings: floats as ``repr``, bools as
``True``/``False``. ``grid_search`` takes the cartesian product (distributions give their N
seeded draws); ``random_search`` draws ``trials`` points, each picking from lists and ranges
and sampling distributions afresh (their N is ignored), seeded so the same spec gives the same
experiments; when every sweep is a list or range, the points are distinct (sampled without
replacement).
"""

from __future__ import annotations

import ast
import difflib
import itertools
import math
import random
import re
from dataclasses import dataclass, field
from typing import Any

from launcher.errors import SpecError

#: Hard cap on experiments per run: a typo like range(100000) must not queue a fortune.
MAX_EXPERIMENTS = 1000

FUNCTIONS = ("range", "uniform", "loguniform", "randint")
ALLOWED_FORMS = (
    "[a, b, ...], range([start,] stop[, step]), uniform(low, high, n), "
    "loguniform(low, high, n), randint(low, high, n)"
)
STRATEGIES = ("grid_search", "random_search")

_CALL_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*\((.*)\)$", re.S)
_NUMBERS_RE = re.compile(r"^[\s0-9eE.,+\-_]*$")
_FLAG_RE = re.compile(r"^--?([A-Za-z_][A-Za-z0-9_.\-]*)$")
_FLAG_EQ_RE = re.compile(r"^(--?[A-Za-z_][A-Za-z0-9_.\-]*)=(.*)$", re.S)

Scalar = int | float | str | bool


@dataclass(frozen=True)
class Experiment:
    """One point of a sweep: its id (``exp-N``), the script args to run, and the chosen values."""

    id: str
    args: list[str]
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The ``params.json`` form: ``{"id", "args", "params"}``."""
        return {"id": self.id, "args": list(self.args), "params": dict(self.params)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Experiment:
        return cls(id=data["id"], args=list(data["args"]), params=dict(data.get("params") or {}))


@dataclass(frozen=True)
class _Sweep:
    """A parsed sweep: either fixed ``values`` or a distribution to sample."""

    kind: str  # list | range | uniform | loguniform | randint
    values: tuple = ()
    low: float = 0.0
    high: float = 0.0
    n: int = 0

    def grid_values(self, rng: random.Random) -> list[Scalar]:
        if self.kind in ("list", "range"):
            return list(self.values)
        return [self.draw(rng) for _ in range(self.n)]

    def draw(self, rng: random.Random) -> Scalar:
        if self.kind in ("list", "range"):
            return rng.choice(self.values)
        if self.kind == "uniform":
            return rng.uniform(self.low, self.high)
        if self.kind == "loguniform":
            return math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        return rng.randint(int(self.low), int(self.high))  # randint: inclusive both ends


def looks_like_sweep(value: str) -> bool:
    """True if a flag value is meant as a sweep (see the module docstring for the rule)."""
    v = value.strip()
    if v.startswith("["):  # "[0.01, " is a broken list, not a literal to pass on
        return True
    m = _CALL_RE.match(v)
    if not m:
        return False
    inner = m.group(2)
    # An unknown NAME(numbers) is a sweep gone wrong (normal(0, 1, 3), unifrom(...)), while
    # NAME(text) or NAME() is an ordinary value some script expects.
    return m.group(1) in FUNCTIONS or (
        bool(_NUMBERS_RE.match(inner)) and any(c.isdigit() for c in inner)
    )


def parse_sweep(value: str, arg: str = "argument") -> _Sweep:
    """Parse a value that looks like a sweep; SpecError (naming ``arg``) if it is malformed."""

    def fail(why: str) -> SpecError:
        return SpecError(f"bad sweep {arg} {value!r}: {why}; allowed forms: {ALLOWED_FORMS}")

    v = value.strip()
    if v.startswith("["):
        try:
            items = ast.literal_eval(v)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise fail("not a valid list literal") from None
        if not isinstance(items, list) or not items:
            raise fail("a list needs at least one value")
        for item in items:
            if not isinstance(item, int | float | str | bool):
                raise fail(f"list items must be numbers, strings or booleans, not {item!r}")
            if isinstance(item, float) and not math.isfinite(item):
                raise fail(f"list items must be finite, not {item!r}")
        return _Sweep("list", values=tuple(items))
    m = _CALL_RE.match(v)
    name = m.group(1) if m else ""
    if name not in FUNCTIONS:
        close = difflib.get_close_matches(name, FUNCTIONS, n=1, cutoff=0.75)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise fail(f"unknown function {name!r}{hint}")
    args = _numeric_args(v, fail)
    if name == "range":
        if not 1 <= len(args) <= 3 or not all(isinstance(a, int) for a in args):
            raise fail("range takes 1 to 3 integers")
        if len(args) == 3 and args[2] == 0:
            raise fail("range step must not be 0")
        r = range(*args)
        if not r:
            raise fail("range is empty")
        if len(r) > MAX_EXPERIMENTS:
            raise fail(f"range has {len(r)} values, more than {MAX_EXPERIMENTS}")
        return _Sweep("range", values=tuple(r))
    if len(args) != 3:
        raise fail(f"{name} takes 3 numbers (low, high, n), got {len(args)}")
    low, high, n = args
    if not isinstance(n, int) or not 1 <= n <= MAX_EXPERIMENTS:
        raise fail(f"n must be an integer from 1 to {MAX_EXPERIMENTS}")
    if not low < high:
        raise fail("low must be less than high")
    if name == "loguniform" and low <= 0:
        raise fail("loguniform needs low > 0")
    if name == "randint" and not (isinstance(low, int) and isinstance(high, int)):
        raise fail("randint needs integer low and high")
    return _Sweep(name, low=low, high=high, n=n)


def _numeric_args(v: str, fail) -> list[int | float]:
    try:
        node = ast.parse(v, mode="eval").body
    except SyntaxError:
        raise fail("not a valid call") from None
    if not isinstance(node, ast.Call) or node.keywords:
        raise fail("only positional numeric arguments are allowed")
    out: list[int | float] = []
    for a in node.args:
        sign = 1
        if isinstance(a, ast.UnaryOp) and isinstance(a.op, ast.USub | ast.UAdd):
            sign = -1 if isinstance(a.op, ast.USub) else 1
            a = a.operand
        if not isinstance(a, ast.Constant) or type(a.value) not in (int, float):
            raise fail("arguments must be numeric literals")
        if not math.isfinite(a.value):
            raise fail("arguments must be finite")
        out.append(sign * a.value)
    return out


def render(value: Scalar) -> str:
    """A chosen value as the script sees it: floats as repr, bools as True/False."""
    return repr(value) if isinstance(value, float) else str(value)


def _find_sweeps(args: list[str]) -> list[tuple[int, str, str, _Sweep]]:
    """(index, flag name, prefix to keep, sweep) for each swept flag value, in order."""
    found: list[tuple[int, str, str]] = []
    for i, arg in enumerate(args):
        m = _FLAG_EQ_RE.match(arg)
        if m and looks_like_sweep(m.group(2)):
            found.append((i, m.group(1).lstrip("-"), m.group(1) + "="))
            continue
        # A positional value (no flag right before it) always passes through literally.
        prev = _FLAG_RE.match(args[i - 1]) if i else None
        if prev and looks_like_sweep(arg):
            found.append((i, prev.group(1), ""))
    out = []
    seen: set[str] = set()
    for i, name, prefix in found:
        if name in seen:
            raise SpecError(f"flag --{name} is swept twice; sweep it once with all its values")
        seen.add(name)
        value = args[i][len(prefix) :]
        out.append((i, name, prefix, parse_sweep(value, arg=f"--{name}")))
    return out


def _random_points(sweeps: list[_Sweep], trials: int, rng: random.Random) -> list[tuple]:
    """``trials`` points; distinct ones when every sweep is a finite list or range."""
    if any(s.kind not in ("list", "range") for s in sweeps):
        return [tuple(s.draw(rng) for s in sweeps) for _ in range(trials)]
    sizes = [len(s.values) for s in sweeps]
    space = math.prod(sizes)
    if trials > space:
        raise SpecError(
            f"random_search: trials {trials} is more than the {space} points of the space; "
            "use fewer trials, or grid_search to run them all"
        )
    points = []
    for index in rng.sample(range(space), trials):  # without replacement: no repeated runs
        point = []
        for s, n in zip(reversed(sweeps), reversed(sizes), strict=True):
            index, i = divmod(index, n)
            point.append(s.values[i])
        points.append(tuple(reversed(point)))
    return points


def expand(
    args: list[str],
    strategy: str = "grid_search",
    trials: int | None = None,
    seed: int = 0,
) -> list[Experiment]:
    """The experiments a script's args describe: one (args unchanged) if nothing sweeps."""
    if strategy not in STRATEGIES:
        raise SpecError(f"unknown strategy {strategy!r}; choose one of: {', '.join(STRATEGIES)}")
    sweeps = _find_sweeps(list(args))
    rng = random.Random(seed)
    if strategy == "grid_search":
        if trials is not None:
            raise SpecError("trials only applies to strategy random_search, not grid_search")
        axes = [s.grid_values(rng) for _, _, _, s in sweeps]
        total = math.prod(len(a) for a in axes)
        if total > MAX_EXPERIMENTS:
            raise SpecError(
                f"grid_search gives {total} experiments, more than {MAX_EXPERIMENTS}; "
                "use fewer values or strategy random_search with trials"
            )
        points = list(itertools.product(*axes))
    else:
        if trials is None or trials < 1:
            raise SpecError("strategy random_search needs trials >= 1")
        if trials > MAX_EXPERIMENTS:
            raise SpecError(f"trials {trials} is more than {MAX_EXPERIMENTS}")
        if not sweeps:
            raise SpecError(
                "strategy random_search needs at least one sweep in the script args, "
                f"e.g. --lr 'loguniform(1e-5, 1e-1, 1)'; allowed forms: {ALLOWED_FORMS}"
            )
        points = _random_points([s for *_, s in sweeps], trials, rng)
    experiments = []
    for n, point in enumerate(points):
        exp_args = list(args)
        params: dict[str, Any] = {}
        for (i, name, prefix, _), value in zip(sweeps, point, strict=True):
            exp_args[i] = prefix + render(value)
            params[name] = value
        experiments.append(Experiment(id=f"exp-{n}", args=exp_args, params=params))
    return experiments
