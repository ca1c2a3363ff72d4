"""The evaluation prompts: DreamBooth's 25 prompts per subject kind, the identifier and class noun of a run.

The lists are those of the DreamBooth dataset (google/dreambooth, `prompts_and_classes.txt`): `{identifier}` is the
rare token (e.g. `sks`), `{cls}` the class noun (e.g. `dog`). Each list has three kinds of prompt, in this order:
recontextualisation (the subject somewhere else), accessorisation (live subjects wearing things) and property
change (colour, material, shape).
"""

from __future__ import annotations

from pathlib import Path

from sdft.errors import ConfigError

RECONTEXT = [
    "a {identifier} {cls} in the jungle",
    "a {identifier} {cls} in the snow",
    "a {identifier} {cls} on the beach",
    "a {identifier} {cls} on a cobblestone street",
    "a {identifier} {cls} on top of pink fabric",
    "a {identifier} {cls} on top of a wooden floor",
    "a {identifier} {cls} with a city in the background",
    "a {identifier} {cls} with a mountain in the background",
    "a {identifier} {cls} with a blue house in the background",
    "a {identifier} {cls} on top of a purple rug in a forest",
]
PROPERTY = [
    "a red {identifier} {cls}",
    "a purple {identifier} {cls}",
    "a shiny {identifier} {cls}",
    "a wet {identifier} {cls}",
    "a cube shaped {identifier} {cls}",
]
LIVE = (
    RECONTEXT
    + [  # live subjects (pets, people, characters): accessorisation
        "a {identifier} {cls} wearing a red hat",
        "a {identifier} {cls} wearing a santa hat",
        "a {identifier} {cls} wearing a rainbow scarf",
        "a {identifier} {cls} wearing a black top hat and a monocle",
        "a {identifier} {cls} in a chef outfit",
        "a {identifier} {cls} in a firefighter outfit",
        "a {identifier} {cls} in a police outfit",
        "a {identifier} {cls} wearing pink glasses",
        "a {identifier} {cls} wearing a yellow shirt",
        "a {identifier} {cls} in a purple wizard outfit",
    ]
    + PROPERTY
)
OBJECT = (
    RECONTEXT
    + [  # objects: more recontextualisation instead of accessories
        "a {identifier} {cls} with a wheat field in the background",
        "a {identifier} {cls} with a tree and autumn leaves in the background",
        "a {identifier} {cls} with the Eiffel Tower in the background",
        "a {identifier} {cls} floating on top of water",
        "a {identifier} {cls} floating in an ocean of milk",
        "a {identifier} {cls} on top of green grass with sunflowers around it",
        "a {identifier} {cls} on top of a mirror",
        "a {identifier} {cls} on top of the sidewalk in a crowded street",
        "a {identifier} {cls} on top of a dirt road",
        "a {identifier} {cls} on top of a white rug",
    ]
    + PROPERTY
)
PROMPT_SETS = {"live": LIVE, "object": OBJECT}


def prompt_templates(name: str) -> list[str]:
    """`live`, `object`, or a text file with one template a line (`{identifier}` and `{cls}` are filled in)."""
    if name in PROMPT_SETS:
        return list(PROMPT_SETS[name])
    path = Path(name).expanduser()
    if not path.is_file():
        raise ConfigError(f"eval.prompts={name!r}: use live, object, or a text file with one prompt a line.")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    templates = [line for line in lines if line and not line.startswith("#")]
    if not templates:
        raise ConfigError(f"eval.prompts={name}: the file holds no prompt.")
    return templates


def spread(items: list, n: int | None) -> list:
    """`n` items spread evenly over the list (first and last included), so every kind of prompt is kept."""
    if n is None or n >= len(items):
        return list(items)
    if n < 1:
        raise ConfigError(f"eval.num_prompts={n}: must be >= 1.")
    if n == 1:
        return [items[0]]
    return [items[round(i * (len(items) - 1) / (n - 1))] for i in range(n)]


def fill(template: str, identifier: str, cls: str) -> str:
    try:
        text = template.format(identifier=identifier, cls=cls)
    except (KeyError, IndexError) as err:
        raise ConfigError(
            f"eval prompt {template!r}: only {{identifier}} and {{cls}} can be filled in ({err})."
        ) from err
    return " ".join(text.split())


def without_identifier(prompt: str, identifier: str) -> str:
    """The prompt as a class prompt: the identifier token removed (for CLIP-T and language drift)."""
    return " ".join(w for w in prompt.split() if w != identifier)
