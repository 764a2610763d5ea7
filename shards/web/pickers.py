"""The pages' principal pickers and form readers: who may be chosen, and what was chosen.

A picker offers the users the category allows (`rules.category_allows`, the ethical wall)
plus whoever already holds the role; `Management` drops any other principal on save, so
the picker only narrows the choice and never decides it.
"""

from __future__ import annotations

from collections.abc import Iterable

from core.rooms import rules
from core.store.base import CategoryRecord, UserRecord
from shards.web.html import Markup, join, render
from shards.web.pages_signin import Form

# Users offered in one picker: a few hundred checkboxes stay usable on a page (with the
# filter box); past it the page says so and the "others" field takes typed addresses.
MAX_PICKER_USERS = 500


def pool(users: Iterable[UserRecord], category: CategoryRecord) -> list[UserRecord]:
    """The users the category allows, those with persistent chat on, by address."""
    found = [u for u in users if (u.enabled or u.admin) and rules.category_allows(category, u.uri)]
    return sorted(found, key=lambda u: u.uri)


def address(uri: str) -> str:
    return uri[4:] if uri.startswith("sip:") else uri


_PICKER = """<fieldset>
<legend>$legend</legend>
<div class="picker" id="$field-list" data-filter="$legend" role="group" aria-label="$legend">
$boxes
</div>
$more_note
<p><label for="$field-more">Other $lower</label>
<input id="$field-more" name="${field}_more" type="text" value="">
</p><p class="hint">Comma-separated SIP addresses or domain:name. Only principals this
room's category allows are kept.</p>
</fieldset>"""

_BOX = '<label><input type="checkbox" name="$field" value="$value"$checked> $shown</label>'


def picker(field: str, legend: str, offered: list[UserRecord], chosen: Iterable[str]) -> Markup:
    """Checkboxes for ``offered`` (capped) and every principal in ``chosen``, checked."""
    chosen_set = set(chosen)
    names = {u.uri: u.display_name for u in offered}
    values = [u.uri for u in offered[:MAX_PICKER_USERS]]
    values += sorted(chosen_set - set(values))
    boxes = join(
        render(
            _BOX,
            field=field,
            value=v,
            checked=Markup(" checked" if v in chosen_set else ""),
            shown=f"{address(v)} ({names[v]})" if names.get(v) else address(v),
        )
        for v in values
    )
    note = Markup("")
    if len(offered) > MAX_PICKER_USERS:
        note = render(
            '<p class="hint">$n more users are allowed; type their addresses below.</p>',
            n=len(offered) - MAX_PICKER_USERS,
        )
    return render(
        _PICKER,
        field=field,
        legend=legend,
        lower=legend.lower(),
        boxes=boxes or Markup('<p class="hint">Nobody to choose.</p>'),
        more_note=note,
    )


def chosen(data: Form, field: str) -> list[str]:
    """The checked principals plus the typed ones (split on commas by `principals`)."""
    picked = [v for v in data.getall(field, []) if isinstance(v, str)]
    typed = data.get(f"{field}_more", "")
    return picked + ([typed] if isinstance(typed, str) and typed.strip() else [])


def text(data: Form, field: str) -> str:
    value = data.get(field, "")
    return value if isinstance(value, str) else ""
