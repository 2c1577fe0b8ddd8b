"""API Gateway style route templates (`/a/{id}`, `/b/{proxy+}`): `RouteTemplate` is the one
parser and matcher of such templates, used by the route table (`routes`), the webhook's config
check and its sample events. No aiohttp here: checking a config (`triggerd validate`) imports
this module, not the HTTP server's."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "ANY"})


@dataclass(frozen=True, slots=True)
class RouteTemplate:
    """A parsed API Gateway template: its segments, matched against a raw path's segments."""

    text: str
    segments: tuple[str, ...]

    @classmethod
    def parse(cls, template: str) -> RouteTemplate:
        """ValueError for what API Gateway would refuse: no leading /, an unclosed or empty
        segment, a greedy `{name+}` before the end."""
        if not template.startswith("/"):
            raise ValueError(f"route {template!r} must start with /")
        segments = template.strip("/").split("/") if template != "/" else []
        for i, seg in enumerate(segments):
            if seg.startswith("{") != seg.endswith("}"):
                raise ValueError(f"route {template!r}: bad parameter segment {seg!r}")
            if seg.endswith("+}") and i != len(segments) - 1:
                raise ValueError(f"route {template!r}: a greedy {seg} must be the last segment")
            if seg == "":
                raise ValueError(f"route {template!r}: empty segment")
        return cls(template, tuple(segments))

    @property
    def greedy(self) -> bool:
        return bool(self.segments) and self.segments[-1].endswith("+}")

    @property
    def shape(self) -> tuple[str, ...]:
        """The segments with every parameter's name blanked: two templates of one shape
        match the same paths."""
        return tuple("{}" if s.startswith("{") else s for s in self.segments)

    def match(self, raw_path: str) -> dict[str, str] | None:
        """Path parameters of a raw (still percent-encoded) path, each decoded once, so that
        an encoded `/` stays inside one segment; None when the path does not fit."""
        params = self.match_parts(split_path(raw_path))
        return decode_params(params) if params else params

    def match_parts(self, parts: list[str]) -> dict[str, str] | None:
        """`match` on a path already split by `split_path`, parameters still encoded."""
        params: dict[str, str] = {}
        for i, seg in enumerate(self.segments):
            if seg.endswith("+}"):
                rest = parts[i:]
                if not rest or rest == [""]:
                    return None
                params[seg[1:-2]] = "/".join(rest)
                return params
            if i >= len(parts):
                return None
            if seg.startswith("{"):
                if parts[i] == "":
                    return None
                params[seg[1:-1]] = parts[i]
            elif seg != parts[i]:
                return None
        return params if len(parts) == len(self.segments) else None


def split_path(raw_path: str) -> list[str]:
    stripped = raw_path.strip("/")
    return stripped.split("/") if stripped else []


def decode_params(params: dict[str, str]) -> dict[str, str]:
    return {k: unquote(v) for k, v in params.items()}
