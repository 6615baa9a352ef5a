"""Names a spec gives that become Python names in generated code: the spec's name (module and
class: `conv2former` -> class `Conv2former`) and its ops' names (parameter prefixes:
`branch1_channel` -> `self.branch1_channel_weight`)."""

from __future__ import annotations

import keyword
import re

NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")  # no leading underscore: `self.__x` is mangled
# module-level names of generated code that a class name can spell (capitalised parts: `f` ->
# `F`, torch.nn.functional; `i_n_t_e_r_p_r_e_t_e_d` -> INTERPRETED); a class of that name
# would rebind it (tests/test_codegen.py checks this set against every generated module)
GENERATED_CLASS_LIKE = frozenset({"F", "ChannelMajorLinear", "ThreadPoolExecutor", "COMPILING",
                                  "INTERPRETED", "GridLimitError", "Callable"})


def class_name(spec_name: str) -> str:
    """The generated module's class: the name's parts between underscores, capitalised."""
    return "".join(part.capitalize() for part in re.split(r"[^0-9a-zA-Z]+", spec_name) if part)


def name_problem(name: str, spec: bool = False) -> str | None:
    """Why `name` cannot name a spec (`spec`) or an op in generated code, or None."""
    if not isinstance(name, str):  # dsl.dense(x, 3): a problem, not a TypeError in re
        return f"is not a string ({type(name).__name__})"
    if not NAME.match(name):
        return "is not a name generated code can use"
    if spec and keyword.iskeyword(class_name(name)):
        return f"would name its class {class_name(name)}, a Python keyword"
    if spec and class_name(name) in GENERATED_CLASS_LIKE:
        return (f"would name its class {class_name(name)}, which the generated module "
                "already defines")
    return None
