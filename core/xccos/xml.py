"""Protocol layer: a hardened, namespace-stripping XML parser on expat with a tiny tree."""

from __future__ import annotations

from collections.abc import Iterator
from xml.parsers import expat

from core.errors import BadXml, TooLarge

# Namespace processing makes expat reject unbound prefixes and swallow xmlns
# attributes for us; a space can never occur in a local name, so everything
# after the last one is the local name.
_NS_SEP = " "


class Element:
    """One XML element: local tag name, prefix-free attributes, children, direct text."""

    __slots__ = ("tag", "attrs", "children", "text")

    def __init__(
        self,
        tag: str,
        attrs: dict[str, str] | None = None,
        children: list[Element] | None = None,
        text: str = "",
    ) -> None:
        self.tag = tag
        self.attrs: dict[str, str] = {} if attrs is None else attrs
        self.children: list[Element] = [] if children is None else children
        self.text = text

    def find(self, tag: str) -> Element | None:
        """The first direct child named `tag`, or None."""
        for child in self.children:
            if child.tag == tag:
                return child
        return None

    def findall(self, tag: str) -> list[Element]:
        """Every direct child named `tag`, in document order."""
        return [child for child in self.children if child.tag == tag]

    def findtext(self, tag: str, default: str = "") -> str:
        """The direct text of the first child named `tag`, or `default` without one."""
        child = self.find(tag)
        return default if child is None else child.text

    def get(self, name: str, default: str = "") -> str:
        """An attribute's value, or `default` when it is absent."""
        return self.attrs.get(name, default)

    def __iter__(self) -> Iterator[Element]:
        return iter(self.children)

    def __repr__(self) -> str:
        return f"Element({self.tag!r}, {self.attrs!r}, {len(self.children)} children)"


def _local(name: str) -> str:
    return name.rpartition(_NS_SEP)[2]


class _Builder:
    """expat callbacks building the tree; every refusal raises BadXml out of Parse()."""

    __slots__ = ("stack", "root", "count", "max_depth", "max_elements", "max_root_children")

    def __init__(self, max_depth: int, max_elements: int, max_root_children: int) -> None:
        self.stack: list[Element] = []
        self.root: Element | None = None
        self.count = 0
        self.max_depth = max_depth
        self.max_elements = max_elements
        self.max_root_children = max_root_children

    def start(self, name: str, attrs: dict[str, str]) -> None:
        self.count += 1
        if self.count > self.max_elements:
            raise BadXml(f"more than {self.max_elements} elements")
        stack = self.stack
        if len(stack) >= self.max_depth:
            raise BadXml(f"nested deeper than {self.max_depth}")
        name = name.rpartition(_NS_SEP)[2]
        # Prefixed attributes are rare: one scan of the joined names finds them.
        if attrs and _NS_SEP in "".join(attrs):
            attrs = {_local(k): v for k, v in attrs.items()}
        el = Element(name, attrs, [], "")
        if stack:
            siblings = stack[-1].children
            if len(stack) == 1 and len(siblings) >= self.max_root_children:
                # Refused while parsing: the rest of the document is never read.
                raise TooLarge(f"more than {self.max_root_children} items in one envelope")
            siblings.append(el)
        else:
            self.root = el
        stack.append(el)

    def end(self, name: str) -> None:
        self.stack.pop()

    def chars(self, data: str) -> None:
        # Character data outside the root has no element to belong to.
        if self.stack:
            self.stack[-1].text += data


def _refuse_doctype(*_: object) -> None:
    # Refusing every DTD shuts out billion-laughs expansion and XXE at once:
    # XCCOS has no use for one.
    raise BadXml("DOCTYPE not allowed")


def _refuse_entity_decl(*_: object) -> None:
    raise BadXml("entity declarations not allowed")


def _refuse_external_entity(*_: object) -> int:
    raise BadXml("external entities not allowed")


def _refuse_skipped_entity(*_: object) -> None:
    raise BadXml("undefined entity")


def _refuse_pi(*_: object) -> None:
    raise BadXml("processing instructions not allowed")


def parse_xml(
    data: bytes | str,
    *,
    max_bytes: int = 65536,
    max_depth: int = 32,
    max_elements: int = 10000,
    max_root_children: int = 10000,
) -> Element:
    """Parse one document, refusing DTDs, entities, PIs and anything over the limits
    (BadXml; TooLarge for more than `max_root_children` children of the root)."""
    if len(data) > max_bytes or (
        isinstance(data, str)
        and not data.isascii()
        and len(data.encode("utf-8", "replace")) > max_bytes
    ):
        raise BadXml(f"XML larger than {max_bytes} bytes")
    # XCCOS bodies are UTF-8 (SIP Content-Type says so); forcing it also keeps
    # expat away from exotic codecs an encoding declaration could select.
    parser = expat.ParserCreate(encoding="utf-8", namespace_separator=_NS_SEP)
    builder = _Builder(max_depth, max_elements, max_root_children)
    parser.buffer_text = True  # one CharacterData call per text run, not per line
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = _refuse_doctype
    parser.EntityDeclHandler = _refuse_entity_decl
    parser.UnparsedEntityDeclHandler = _refuse_entity_decl
    parser.ExternalEntityRefHandler = _refuse_external_entity
    parser.SkippedEntityHandler = _refuse_skipped_entity
    parser.ProcessingInstructionHandler = _refuse_pi
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.chars
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        raise BadXml(
            f"malformed XML: {expat.ErrorString(exc.code)} at {exc.lineno}:{exc.offset}"
        ) from None
    except UnicodeError:
        raise BadXml("XML is not valid UTF-8") from None
    if builder.root is None:  # unreachable: expat reports "no element found" first
        raise BadXml("no root element")
    return builder.root
