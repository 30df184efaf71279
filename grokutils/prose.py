"""The book's computed sentences: analysis returns values, templates turn them into words.

A sentence that depends on the results (how many seeds anti-grok, which run falls further) is a
Jinja2 macro in `grokutils/templates/<module>.j2`, named after the values it reads. The analysis
module computes those values as a plain dict (numbers, counts, lists of steps, flags), which tests
check; `say` renders the macro with them. So the wording lives in one place per topic, and a
reader can change it without touching the analysis:

    say("claims.verdict", claims.verdict_values(collapse))

Inside a template, these filters format values:

- `fmt(spec)`: a number with a format spec ("{:.3f}" is `x|fmt(".3f")`);
- `listed(spec)`: "a, b and c" ("none" for an empty list), each item with `spec`;
- `steps`: a set of steps as "38,430", "38,430 to 47,884" or "never";
- `step_words`: the same with its noun, "step 38,430" or "steps 38,430 to 47,884";
- `fired`: a rule's firing steps over seeds, "1,000 to 5,000; never in 1" (None: a seed where it
  stayed silent); `fired_words` the same with its noun, or "no step (never)";
- `lead_range`: signed leads in steps, "+1,234 to +5,678" (or "-" for none);
- `count(noun)`: "1 seed", "3 seeds".

Whitespace in a rendered sentence is collapsed to single spaces, so a template may break its text
over lines freely. An undefined value is an error, not a blank.
"""
from __future__ import annotations

from pathlib import Path

import jinja2

TEMPLATES_DIR = Path(__file__).with_name("templates")


def _is_value(value) -> bool:
    """False for a missing value: None, NaN, or pandas' NA (whose truth value raises a TypeError)."""
    if value is None:
        return False
    try:
        return not bool(value != value)  # NaN is the one value unequal to itself
    except TypeError:
        return False


def fmt(value, spec: str = "") -> str:
    """`format(value, spec)`."""
    return format(value, spec)


def listed(values, spec: str = "") -> str:
    """'a, b and c' for a few values formatted with `spec` ('none' when there is none; NaN and None
    are left out)."""
    words = [format(value, spec) for value in values if _is_value(value)]
    if not words:
        return "none"
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def step_set(values) -> list[int]:
    """The distinct steps among `values`, sorted (NaN and None left out)."""
    return sorted({int(value) for value in values if _is_value(value)})


def steps(values) -> str:
    """'38,430 to 47,884' for a set of steps (one step alone; 'never' for none)."""
    found = step_set(values)
    if not found:
        return "never"
    return f"{found[0]:,}" if len(found) == 1 else f"{found[0]:,} to {found[-1]:,}"


def step_words(values) -> str:
    """'step 38,430', 'steps 38,430 to 47,884' or 'never'."""
    found = step_set(values)
    if not found:
        return "never"
    return f"{'step' if len(found) == 1 else 'steps'} {steps(found)}"


def fired(values) -> str:
    """'1,000 to 5,000' over seeds for a rule's firing steps, with '; never in 2' for the seeds where it
    never fired (None or NaN); 'never' when it fired in none ('' for no seed at all)."""
    found, never = step_set(values), sum(not _is_value(value) for value in values)
    if not found:
        return "never" if never else ""
    return steps(found) + (f"; never in {never}" if never else "")


def fired_words(values) -> str:
    """`fired` with its noun: 'step 1,000', 'steps 1,000 to 5,000; never in 1', or 'no step (never)'."""
    found = step_set(values)
    return f"{'step' if len(found) == 1 else 'steps'} {fired(values)}" if found else "no step (never)"


def lead_range(values) -> str:
    """'+1,234 to +5,678' from the least to the most of some signed step counts; one value, or values
    all equal, alone ('+5', not '+5 to +5'); '-' for none."""
    found = sorted(int(value) for value in values if _is_value(value))
    if not found:
        return "-"
    return f"{found[0]:+,}" if found[0] == found[-1] else f"{found[0]:+,} to {found[-1]:+,}"


def count(number: int, noun: str, plural: str | None = None) -> str:
    """'1 seed', '3 seeds' (`plural` for a noun that does not take an s)."""
    return f"{number} {noun if number == 1 else plural or noun + 's'}"


_ENVIRONMENT = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES_DIR), undefined=jinja2.StrictUndefined,
                                  autoescape=False, keep_trailing_newline=False)
_ENVIRONMENT.filters.update(fmt=fmt, listed=listed, steps=steps, step_words=step_words, fired=fired,
                            fired_words=fired_words, lead_range=lead_range, count=count)


def macros(module: str) -> dict[str, object]:
    """The macros of `templates/<module>.j2`, by name."""
    template = _ENVIRONMENT.get_template(f"{module}.j2")
    return {name: getattr(template.module, name) for name in dir(template.module) if not name.startswith("_")}


def say(name: str, values: dict) -> str:
    """The sentence `name` ('module.macro', as 'claims.verdict') rendered with `values`, its
    whitespace collapsed. Raises KeyError naming the macro when there is no such template."""
    module, _, macro = name.partition(".")
    if not (TEMPLATES_DIR / f"{module}.j2").is_file():
        raise KeyError(f"no sentence {name!r}: there is no templates/{module}.j2 "
                       f"(templates: {sorted(path.stem for path in TEMPLATES_DIR.glob('*.j2'))})")
    found = macros(module)
    if macro not in found:
        raise KeyError(f"no sentence {name!r}: templates/{module}.j2 defines {sorted(found)}")
    return " ".join(str(found[macro](values)).split())
