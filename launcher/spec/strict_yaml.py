"""Reading a job spec's YAML strictly: what PyYAML lets through silently is a one-line error.

PyYAML's ``safe_load`` keeps the last of two equal keys (``gpus: 1`` then ``gpus: 4`` is 4),
raises a bare ValueError for an integer past Python's 4,300-digit conversion limit, and a
UnicodeDecodeError for a file that is not UTF-8. Here each is a :class:`SpecError` naming the
file and the line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from launcher.errors import SpecError


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping key given twice and integers it cannot convert."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            self.flatten_mapping(node)  # merge keys (<<) first, as SafeLoader does
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: SafeLoader reports it
                    continue
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        None, None,
                        f"key {key!r} is given twice (first on line {first + 1}); give it once",
                        key_node.start_mark,
                    )  # fmt: skip
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node):
        try:
            return super().construct_yaml_int(node)
        except ValueError as e:  # past sys.get_int_max_str_digits()
            raise yaml.constructor.ConstructorError(
                None, None, f"integer too long ({len(node.value)} characters): {e}".split(";")[0],
                node.start_mark,
            ) from None  # fmt: skip


StrictLoader.add_constructor("tag:yaml.org,2002:int", StrictLoader.construct_yaml_int)


def load_spec_yaml(path: str | Path) -> Any:
    """The parsed YAML document at ``path``; SpecError (naming the file and line) if it is not
    UTF-8, not valid YAML, gives a key twice, or holds an integer too long to convert."""
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(
            f"{p}: not a UTF-8 text file (byte {e.object[e.start]:#04x} at offset {e.start}); "
            "save it as UTF-8"
        ) from None
    except OSError as e:
        raise SpecError(f"cannot read spec file {p}: {e.strerror or e}") from None
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SpecError(f"{p}{where}: invalid YAML: {problem}") from None
    except RecursionError:
        raise SpecError(f"{p}: invalid YAML: nested too deeply") from None
