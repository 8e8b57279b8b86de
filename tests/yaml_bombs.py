"""Hostile YAML texts: an alias bomb and deep nesting, as a probe would write them."""


def alias_bomb(levels: int) -> str:
    """The probe's bomb: each anchor a mapping of two aliases to the one before it."""
    lines = ["a0: &a0 {a: 1, b: 1}"]
    lines += [f"a{i}: &a{i} {{a: *a{i - 1}, b: *a{i - 1}}}" for i in range(1, levels)]
    return "\n".join([*lines, f"camera: *a{levels - 1}"]) + "\n"


def flow_nesting(levels: int) -> str:
    return "camera: " + "{a: " * levels + "1" + "}" * levels + "\n"


def block_nesting(levels: int) -> str:
    return "camera:\n" + "".join(" " * i + "a:\n" for i in range(1, levels + 1)) + \
        " " * (levels + 1) + "1\n"
