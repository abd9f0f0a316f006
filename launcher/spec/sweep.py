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
    --lr "loguniform(1e-5, 1e-1)"       no N: random_search only, a fresh draw per trial

A value looks like a sweep when, stripped, it starts with ``[``, or it starts with ``NAME(``
where NAME is one of the functions above, or it is ``NAME(numbers`` with or without its ``)``,
such as ``normal(0, 1, 3)`` (a likely typo or an unsupported distribution). Such a value that
does not parse (``[1, 2``, ``uniform(1e-4, 1e-1, 5``) is a SpecError naming the argument and the
allowed forms, never a silent literal. Values are parsed with :mod:`ast` only: ``literal_eval``
for lists, and a whitelist of call names with numeric literal arguments; nothing is ever
evaluated. Every value must be finite (no ``inf``/``nan``, no bounds whose span overflows).

Flags are ``--name VALUE`` or ``--name=VALUE`` (also ``-n VALUE``); the experiment's params are
``{name: value}``. Values are rendered back as strings: floats as ``repr``, bools as
``True``/``False``. ``grid_search`` takes the cartesian product (distributions give their N
seeded draws, so they need an N); ``random_search`` draws ``trials`` points, each picking from
lists and ranges and sampling distributions afresh (an N is ignored), seeded so the same spec
gives the same experiments; when every sweep is a list or range, the points are distinct
(sampled without replacement).

A run holds at most ``max_experiments`` experiments (default :data:`MAX_EXPERIMENTS`, a typo
guard: ``range(100000)`` must not queue a fortune); ``--max-experiments N`` lifts it, up to
:data:`MAX_EXPERIMENTS_LIMIT`.
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

#: Default cap on experiments per run (``--max-experiments`` / spec ``max_experiments``).
MAX_EXPERIMENTS = 1000
#: The most ``max_experiments`` may be: every experiment is files in storage and a row in run.json.
MAX_EXPERIMENTS_LIMIT = 100_000

DISTRIBUTIONS = ("uniform", "loguniform", "randint")
FUNCTIONS = ("range", *DISTRIBUTIONS)
ALLOWED_FORMS = (
    "[a, b, ...], range([start,] stop[, step]), uniform(low, high[, n]), "
    "loguniform(low, high[, n]), randint(low, high[, n]) (n required with grid_search)"
)
STRATEGIES = ("grid_search", "random_search")

# NAME( at the start, then the arguments up to an optional closing ")" at the end
_CALL_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*\((.*?)\)?", re.S)
_NUMBERS_RE = re.compile(r"[\s0-9eE.,+\-_]*")
_FLAG_RE = re.compile(r"--?([A-Za-z_][A-Za-z0-9_.\-]*)")
_FLAG_EQ_RE = re.compile(r"(--?[A-Za-z_][A-Za-z0-9_.\-]*)=(.*)", re.S)
_INT_LIMIT = 2**63  # range/randint bounds: beyond this a length or a draw means nothing

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
    """A parsed sweep: either fixed ``values`` or a distribution to sample (``n`` 0: no count,
    a fresh draw per random_search trial only)."""

    kind: str  # list | range | uniform | loguniform | randint
    values: tuple = ()
    low: float = 0.0
    high: float = 0.0
    n: int = 0
    text: str = ""  # as written, for errors

    def grid_values(self, rng: random.Random) -> list[Scalar]:
        if self.kind in ("list", "range"):
            return list(self.values)
        return [self.draw(rng) for _ in range(self.n)]

    def draw(self, rng: random.Random) -> Scalar:
        if self.kind in ("list", "range"):
            return rng.choice(self.values)
        if self.kind == "randint":
            return rng.randint(int(self.low), int(self.high))  # inclusive both ends
        if self.kind == "uniform":
            value = rng.uniform(self.low, self.high)
        else:  # loguniform
            try:
                value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
            except OverflowError:  # exp rounding past the largest float: that is high
                value = self.high
        return min(max(value, self.low), self.high)  # rounding never leaves [low, high]


def _call(v: str) -> tuple[str, str] | None:
    """(NAME, arguments) when a stripped value starts like ``NAME(``, closed or not."""
    m = _CALL_RE.fullmatch(v)
    return (m.group(1), m.group(2)) if m else None


def looks_like_sweep(value: str) -> bool:
    """True if a flag value is meant as a sweep (see the module docstring for the rule)."""
    v = value.strip()
    if v.startswith("["):  # "[0.01, " is a broken list, not a literal to pass on
        return True
    call = _call(v)
    if call is None:
        return False
    name, inner = call
    # An unknown NAME(numbers) is a sweep gone wrong (normal(0, 1, 3), unifrom(...)), while
    # NAME(text) or NAME() is an ordinary value some script expects.
    numbers = bool(_NUMBERS_RE.fullmatch(inner)) and any(c.isdigit() for c in inner)
    return name in FUNCTIONS or numbers


def too_many(what: str, count: int, cap: int) -> SpecError:
    """The one-line error for a sweep bigger than the run's cap, naming the flag that lifts it."""
    if count > MAX_EXPERIMENTS_LIMIT:
        return SpecError(
            f"{what} gives {count} experiments, more than the {MAX_EXPERIMENTS_LIMIT} a run can "
            "hold even with --max-experiments; split the sweep into several runs"
        )
    return SpecError(
        f"{what} gives {count} experiments, more than the {cap} allowed per run (a guard against "
        f"typos); pass --max-experiments {count} (spec: max_experiments) to run them all"
    )


def parse_sweep(
    value: str, arg: str = "argument", max_experiments: int = MAX_EXPERIMENTS
) -> _Sweep:
    """Parse a value that looks like a sweep; SpecError (naming ``arg``) if it is malformed, or
    if it alone gives more than ``max_experiments`` values."""

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
            if isinstance(item, int) and abs(item) >= _INT_LIMIT:  # past 4,300 digits, str fails
                raise fail(f"integers must be within +-2**63, not one of {item.bit_length()} bits")
        return _Sweep("list", values=tuple(items), text=v)
    name = (_call(v) or ("", ""))[0]
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
        if len(r) > max_experiments:
            raise too_many(f"{arg} {v}", len(r), max_experiments)
        return _Sweep("range", values=tuple(r), text=v)
    if len(args) not in (2, 3):
        raise fail(f"{name} takes 2 or 3 numbers (low, high[, n]), got {len(args)}")
    low, high, *rest = args
    n = rest[0] if rest else 0
    if rest and (not isinstance(n, int) or n < 1):
        raise fail("n must be an integer >= 1")
    if not low < high:
        raise fail("low must be less than high")
    if name == "randint":
        if not (isinstance(low, int) and isinstance(high, int)):
            raise fail("randint needs integer low and high")
    else:
        low, high = float(low), float(high)
        if name == "loguniform" and low <= 0:
            raise fail("loguniform needs low > 0")
        if name == "uniform" and not math.isfinite(high - low):
            raise fail("high - low overflows to inf; values must be finite")
    return _Sweep(name, low=low, high=high, n=n, text=v)


def _numeric_args(v: str, fail) -> list[int | float]:
    try:
        node = ast.parse(v, mode="eval").body
    except SyntaxError:
        unclosed = " (unclosed '(')" if v.count("(") > v.count(")") else ""
        raise fail(f"not a valid call{unclosed}") from None
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
        if isinstance(a.value, int) and abs(a.value) >= _INT_LIMIT:
            raise fail(f"integer arguments must be within +-2**63, not {sign * a.value}")
        if isinstance(a.value, float) and not math.isfinite(a.value):
            raise fail("arguments must be finite")
        out.append(sign * a.value)
    return out


def render(value: Scalar) -> str:
    """A chosen value as the script sees it: floats as repr, bools as True/False."""
    return repr(value) if isinstance(value, float) else str(value)


def _find_sweeps(args: list[str], max_experiments: int) -> list[tuple[int, str, str, _Sweep]]:
    """(index, flag name, prefix to keep, sweep) for each swept flag value, in order."""
    found: list[tuple[int, str, str]] = []
    for i, arg in enumerate(args):
        m = _FLAG_EQ_RE.fullmatch(arg)
        if m and looks_like_sweep(m.group(2)):
            found.append((i, m.group(1).lstrip("-"), m.group(1) + "="))
            continue
        # A positional value (no flag right before it) always passes through literally.
        prev = _FLAG_RE.fullmatch(args[i - 1]) if i else None
        if prev and looks_like_sweep(arg):
            found.append((i, prev.group(1), ""))
    out = []
    seen: set[str] = set()
    for i, name, prefix in found:
        if name in seen:
            raise SpecError(f"flag --{name} is swept twice; sweep it once with all its values")
        seen.add(name)
        value = args[i][len(prefix) :]
        out.append((i, name, prefix, parse_sweep(value, f"--{name}", max_experiments)))
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
    *,
    max_experiments: int = MAX_EXPERIMENTS,
) -> list[Experiment]:
    """The experiments a script's args describe: one (args unchanged) if nothing sweeps; at most
    ``max_experiments`` of them, else a SpecError naming ``--max-experiments``."""
    if strategy not in STRATEGIES:
        raise SpecError(f"unknown strategy {strategy!r}; choose one of: {', '.join(STRATEGIES)}")
    max_experiments = min(max_experiments, MAX_EXPERIMENTS_LIMIT)
    sweeps = _find_sweeps(list(args), max_experiments)
    rng = random.Random(seed)
    if strategy == "grid_search":
        if trials is not None:
            raise SpecError("trials only applies to strategy random_search, not grid_search")
        for _, name, _, s in sweeps:
            if s.kind in DISTRIBUTIONS and not s.n:
                raise SpecError(
                    f"bad sweep --{name} {s.text!r}: grid_search needs a count, "
                    f"{s.kind}(low, high, n), as a distribution without one has no fixed values "
                    "to combine; add n, or use --strategy random_search --trials N"
                )
            if s.n > max_experiments:  # before drawing them
                raise too_many(f"--{name} {s.text}", s.n, max_experiments)
        axes = [s.grid_values(rng) for _, _, _, s in sweeps]
        total = math.prod(len(a) for a in axes)
        if total > max_experiments:
            raise too_many("grid_search", total, max_experiments)
        points = list(itertools.product(*axes))
    else:
        if trials is None or trials < 1:
            raise SpecError("strategy random_search needs trials >= 1")
        if trials > max_experiments:
            raise too_many(f"random_search with trials {trials}", trials, max_experiments)
        if not sweeps:
            raise SpecError(
                "strategy random_search needs at least one sweep in the script args, "
                f"e.g. --lr 'loguniform(1e-5, 1e-1)'; allowed forms: {ALLOWED_FORMS}"
            )
        points = _random_points([s for *_, s in sweeps], trials, rng)
    experiments = []
    for n, point in enumerate(points):
        exp_args = list(args)
        params: dict[str, Any] = {}
        for (i, name, prefix, s), value in zip(sweeps, point, strict=True):
            if isinstance(value, float) and not math.isfinite(value):  # a guard: parse rules out
                raise SpecError(
                    f"bad sweep --{name} {s.text!r}: drew {value}; values must be finite"
                )
            exp_args[i] = prefix + render(value)
            params[name] = value
        experiments.append(Experiment(id=f"exp-{n}", args=exp_args, params=params))
    return experiments
