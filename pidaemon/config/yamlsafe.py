"""YAML config files read with limits: bounded in size, nesting and aliases, strict on keys.

`yaml.safe_load` is safe from code, not from bombs: aliases let a 581-byte file stand for a
million values, deep nesting overflows Python's recursion limit, and a repeated key silently
replaces the first. Here every limit is checked while the node tree is composed, before anything
is expanded or constructed, so a hostile file costs milliseconds and ends in one ConfigError line
naming the file, the line, the problem and the fix. Nothing here knows pi-infer's keys.
"""

from __future__ import annotations

import os
import stat
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from pidaemon.errors import ConfigError

MAX_BYTES = 1 << 20  # a commented config is a few KiB; parsing 1 MiB takes about a second
MAX_DEPTH = 32  # levels of nesting, counted through aliases
MAX_NODES = 10_000  # values written in the file: bounds parse time and memory on a Pi
MAX_ALIASED = 10_000  # values that aliases stand for, in all: the bomb limit

MERGE_TAG = "tag:yaml.org,2002:merge"

Lines = dict[tuple[str, ...], int]


def read_config_text(path: str | os.PathLike[str]) -> str:
    """The file's text, refusing directories, pipes, oversized and non-UTF-8 files up front.

    FileNotFoundError is left to the caller, which knows what a missing file means for it.
    Opening does not block (a FIFO nobody writes), and no more than MAX_BYTES + 1 is read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}; check its permissions") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise ConfigError(f"{path}: is a directory, not a config file; pass the path of the "
                              f"YAML file itself")
        if not (stat.S_ISREG(info.st_mode) or stat.S_ISCHR(info.st_mode)):  # /dev/null is fine
            raise ConfigError(f"{path}: is not a regular file (a pipe or socket); pass a YAML "
                              f"file")
        if info.st_size > MAX_BYTES:
            raise _too_big(path)
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as file:
            raw = file.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}; check its permissions") from None
    finally:
        os.close(fd)
    if len(raw) > MAX_BYTES:
        raise _too_big(path)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None


def _too_big(path: str | os.PathLike[str]) -> ConfigError:
    return ConfigError(f"{path}: larger than {MAX_BYTES // 1024} KiB, the most a config file may "
                       f"be; is it the right file?")


def load_mapping(text: str, source: str) -> tuple[Any, Lines]:
    """Parse one YAML document: (data, line of each key path). `source` names it in errors.

    Raises ConfigError for invalid YAML (line, column, reason), for anything over the limits,
    and for a key given twice in one mapping (both lines).
    """
    if len(text) > MAX_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise _too_big(source)
    loader = None
    try:
        loader = _BoundedLoader(text, source)  # refuses control characters right away
        root = loader.get_single_node()
        if root is None:
            return None, {}
        lines = _line_map(root, loader.construct_object, source)
        return loader.construct_document(root), lines
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{source}{where}: not valid YAML: {reason}") from None
    finally:
        if loader is not None:
            loader.dispose()


def _error(source: str, line: int, message: str) -> ConfigError:
    return ConfigError(f"{source}, line {line}: {message}")


def _dotted(path: tuple[str, ...]) -> str:
    return ".".join(p if p.isprintable() and p else repr(p) for p in path) or "(top level)"


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that counts while composing: depth, values, and what each alias stands for.

    Each node's expanded size and height are known once it is composed (an alias names a node
    composed earlier), so counting costs one step per node and never expands anything.
    """

    def __init__(self, text: str, source: str) -> None:
        super().__init__(text)
        self.source = source
        self.depth = 0
        self.nodes = 0
        self.aliased = 0
        self.stats: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded values, height)

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        event = self.peek_event()
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent):
            node = super().compose_node(parent, index)
            stats = self.stats.get(id(node))
            if stats is None:
                raise _error(self.source, line, f"alias *{event.anchor} is used inside the value "
                                                f"it names; a config cannot contain itself")
            self.aliased += stats[0]
            if self.aliased > MAX_ALIASED:
                raise _error(self.source, line, f"aliases (*name) stand for more than "
                                                f"{MAX_ALIASED} values in all; write the values "
                                                f"out instead of aliasing aliases")
            return node
        self.depth += 1
        self.nodes += 1
        if self.depth > MAX_DEPTH:
            raise _error(self.source, line, f"nested more than {MAX_DEPTH} levels deep; a config "
                                            f"needs a few (section: key: value)")
        if self.nodes > MAX_NODES:
            raise _error(self.source, line, f"more than {MAX_NODES} values in one file; a config "
                                            f"needs far fewer: is it the right file?")
        try:
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
        if isinstance(node, MappingNode):
            children = [child for pair in node.value for child in pair]
        else:
            children = node.value if isinstance(node, SequenceNode) else []
        size = 1 + sum(self.stats[id(child)][0] for child in children)
        height = 1 + max((self.stats[id(child)][1] for child in children), default=0)
        if self.depth + height > MAX_DEPTH:
            raise _error(self.source, line, f"nested more than {MAX_DEPTH} levels deep through "
                                            f"aliases; write the values out")
        self.stats[id(node)] = (size, height)
        return node

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        """Bad scalars (`2001-13-45`, `!!int x`) are YAML errors with a line, not tracebacks."""
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, OverflowError) as exc:
            kind = str(node.tag).rpartition(":")[2]
            reason = str(exc).partition(";")[0]  # not Python's advice on raising its limits
            raise ConstructorError(None, None, f"cannot read this {kind}: {reason}",
                                   node.start_mark) from None


def _line_map(root: Node, construct: Any, source: str) -> Lines:
    """Each key path's line, visiting every node once; a key given twice is a ConfigError.

    Keys are compared as constructed (`1`, `1.0` and `true` are one key, as in the dict).
    Keys brought in by a merge (`<<: *base`) may be overridden: that is what merging means.
    """
    lines: Lines = {}
    seen: set[int] = set()
    stack: list[tuple[Node, tuple[str, ...]]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        children: list[tuple[Node, tuple[str, ...]]] = []
        if isinstance(node, SequenceNode):
            children = [(item, (*path, str(i))) for i, item in enumerate(node.value)]
        elif isinstance(node, MappingNode):
            first: dict[Any, int] = {}
            merged: list[Node] = []
            for key_node, value_node in node.value:
                if key_node.tag == MERGE_TAG:
                    merged.append(value_node)
                    continue
                if not isinstance(key_node, ScalarNode):
                    continue  # refused by the constructor as an unhashable key
                key = construct(key_node)
                line = key_node.start_mark.line + 1
                key_path = (*path, str(key))
                if key in first:
                    fix = "merge the two sections" if not path else (
                        "merge the two" if isinstance(value_node, MappingNode) else
                        "keep only one")
                    raise _error(source, line, f"{_dotted(key_path)}: defined again (first at "
                                               f"line {first[key]}); {fix}")
                first[key] = line
                lines[key_path] = line
                children.append((value_node, key_path))
            for key_node, _ in _merged_pairs(merged):
                if isinstance(key_node, ScalarNode) and key_node.tag != MERGE_TAG:
                    lines.setdefault((*path, str(construct(key_node))),
                                     key_node.start_mark.line + 1)
        stack.extend(reversed(children))  # document order, so a shared node maps where defined
    return lines


def _merged_pairs(values: list[Node]) -> list[tuple[Node, Node]]:
    """The key-value pairs that `<<:` values bring in (one level: lines only, no expansion)."""
    pairs = []
    for value in values:
        for mapping in value.value if isinstance(value, SequenceNode) else [value]:
            if isinstance(mapping, MappingNode):
                pairs.extend(mapping.value)
    return pairs
