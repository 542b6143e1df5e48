"""Pointing Amp at ampbridge: ``amp.url`` in Amp's settings file, or a wrapper for one installation.

Amp's settings file (``AMP_SETTINGS_FILE`` or ``~/.config/amp/settings.json``) is the user's:
it may hold comments and trailing commas (JSONC), other settings, secrets in MCP server entries,
and be a symlink into a dotfiles repository. So ``amp.url`` is set by editing the text in place
(everything else, comments included, stays as written), a backup is made only when the content
changes and never over an earlier one, the write goes through symlinks to their target, keeps the
file's mode (a new file is 0600) and replaces it atomically.

``setup --cli PATH_OR_NAME`` instead writes a small wrapper script that sets ``AMP_URL`` and runs
that one installation, so other Amp installations keep talking to Amp directly.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

URL_SETTING = "amp.url"
NEW_FILE_MODE = 0o600
WRAPPER_MODE = 0o755
WRAPPER_NAME = "amp-via-ampbridge"
WRAPPER_MARKER = "# written by ampbridge setup --cli"
_DEFAULT_INDENT = "  "
_REST_OF_LINE = re.compile(r"[ \t]*(?://[^\n]*)?(?=\n)")


class SettingsFileError(ValueError):
    """The settings file (or the wrapper's place) cannot be used; nothing was changed."""


Token = tuple[str, int, int]  # kind ("{", "}", "[", "]", ":", ",", "string", "literal"), start, end


def _tokens(text: str) -> Iterator[Token]:
    """JSONC tokens, comments and whitespace skipped."""
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char in " \t\r\n\ufeff":
            i += 1
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise SettingsFileError("unterminated /* comment")
            i = end + 2
        elif char == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            if j >= n:
                raise SettingsFileError("unterminated string")
            yield ("string", i, j + 1)
            i = j + 1
        elif char in "{}[]:,":
            yield (char, i, i + 1)
            i += 1
        else:
            j = i
            while j < n and text[j] not in ' \t\r\n{}[]:,"/':
                j += 1
            if j == i:
                raise SettingsFileError(f"unexpected {char!r} at offset {i}")
            yield ("literal", i, j)
            i = j


def _plain_json(text: str, tokens: Sequence[Token]) -> str:
    """The tokens as strict JSON: comments gone, trailing commas dropped."""
    following = [t[0] for t in tokens[1:]] + [""]
    pairs = zip(tokens, following, strict=True)
    kept = [token for token, after in pairs if not (token[0] == "," and after in ("}", "]"))]
    return " ".join(text[start:end] for _, start, end in kept)


def parse_jsonc(text: str) -> object:
    """JSON with ``//`` and ``/* */`` comments and trailing commas."""
    try:
        return json.loads(_plain_json(text, list(_tokens(text))))
    except ValueError as error:
        raise SettingsFileError(f"not valid JSON (with comments): {error}") from error


@dataclass(frozen=True)
class _Member:
    key: str
    value_start: int
    value_end: int
    comma_end: int | None  # end of the comma after the value, if there is one


def _top_level_members(text: str, tokens: Sequence[Token]) -> tuple[list[_Member], int]:
    """The members of the top-level object and the offset of its closing brace."""
    if not tokens or tokens[0][0] != "{":
        raise SettingsFileError("not a JSON object")
    members: list[_Member] = []
    k = 1
    while tokens[k][0] != "}":
        key_token = tokens[k]
        if key_token[0] != "string" or tokens[k + 1][0] != ":":
            raise SettingsFileError("not a JSON object")
        key = json.loads(text[key_token[1] : key_token[2]])
        k += 2
        value_start, depth = tokens[k][1], 0
        while True:
            kind = tokens[k][0]
            if kind in ("{", "["):
                depth += 1
            elif kind in ("}", "]"):
                depth -= 1
            k += 1
            if depth == 0:
                break
        value_end = tokens[k - 1][2]
        comma_end = None
        if tokens[k][0] == ",":
            comma_end = tokens[k][2]
            k += 1
        members.append(_Member(key, value_start, value_end, comma_end))
    return members, tokens[k][1]


def _indent_of(text: str, offset: int) -> str:
    line_start = text.rfind("\n", 0, offset) + 1
    prefix = text[line_start:offset]
    return prefix if prefix and not prefix.strip() else _DEFAULT_INDENT


def set_string_setting(text: str, key: str, value: str) -> str:
    """``text`` (a JSONC object) with top-level ``key`` set to ``value``, all else kept as written."""
    if not text.strip():
        return "{\n" + f"{_DEFAULT_INDENT}{json.dumps(key)}: {json.dumps(value)}\n" + "}\n"
    tokens = list(_tokens(text))
    if not isinstance(parse_jsonc(text), dict):
        raise SettingsFileError("not a JSON object")
    members, closing = _top_level_members(text, tokens)
    encoded = json.dumps(value, ensure_ascii=False)
    same_key = [m for m in members if m.key == key]
    if same_key:
        last = same_key[-1]
        return text[: last.value_start] + encoded + text[last.value_end :]
    member = f"{json.dumps(key)}: {encoded}"
    if not members:
        indent = _DEFAULT_INDENT
        return text[:closing].rstrip(" \t") + f"\n{indent}{member}\n" + text[closing:].lstrip(" \t")
    last = members[-1]
    indent = _indent_of(text, tokens[1][1])
    insert_at = last.comma_end if last.comma_end is not None else last.value_end
    rest = _REST_OF_LINE.match(text, insert_at)
    if rest is not None:
        insert_at = rest.end()
    updated = text[:insert_at] + f"\n{indent}{member}" + text[insert_at:]
    if last.comma_end is None:
        updated = updated[: last.value_end] + "," + updated[last.value_end :]
    return updated


@dataclass(frozen=True)
class SetupResult:
    """What ``point_amp_at`` did, for the CLI to print."""

    path: Path  # the settings path as given
    target: Path  # the file written (the symlink's target when ``path`` is a link)
    url: str
    previous_url: str | None
    changed: bool
    created: bool
    backup: Path | None

    def lines(self) -> list[str]:
        where = str(self.path) if self.target == self.path else f"{self.path} (-> {self.target})"
        if not self.changed:
            return [f"{where}: {URL_SETTING} is already {self.url}"]
        lines = []
        if self.backup is not None:
            lines.append(f"backed up {self.target} to {self.backup}")
        was = " (new file)" if self.created else f" (was {self.previous_url})" if self.previous_url else ""
        lines.append(f"{where}: {URL_SETTING} = {self.url}{was}")
        return lines


def _backup_name(target: Path, now: time.struct_time) -> Iterator[Path]:
    stamp = time.strftime("%Y%m%d-%H%M%S", now)
    yield target.with_name(f"{target.name}.{stamp}.bak")
    for n in range(1, 10_000):
        yield target.with_name(f"{target.name}.{stamp}-{n}.bak")


def _backup(target: Path, content: bytes, mode: int, now: time.struct_time) -> Path:
    """A copy of ``content`` under a name no earlier backup has (created exclusively)."""
    for candidate in _backup_name(target, now):
        try:
            descriptor = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        except FileExistsError:
            continue
        with os.fdopen(descriptor, "wb") as file:
            file.write(content)
        return candidate
    raise SettingsFileError(f"cannot find a free backup name beside {target}")


def write_atomically(target: Path, content: bytes, mode: int) -> None:
    """Replace ``target`` with ``content`` in one step (a crash leaves the old or the new file)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def point_amp_at(
    url: str, settings_path: Path, *, now: Callable[[], time.struct_time] = time.localtime
) -> SetupResult:
    """Set ``amp.url`` to ``url`` in Amp's settings file. Raises ``SettingsFileError`` (file left
    unchanged) when the file is not a JSONC object."""
    target = Path(os.path.realpath(settings_path))
    try:
        original = target.read_bytes()
        mode = stat.S_IMODE(target.stat().st_mode)
        created = False
    except FileNotFoundError:
        original, mode, created = b"", NEW_FILE_MODE, True
    try:
        text = original.decode("utf-8")
    except UnicodeDecodeError as error:
        raise SettingsFileError(f"{settings_path}: not UTF-8 text") from error
    try:
        current = parse_jsonc(text) if text.strip() else {}
        if not isinstance(current, dict):
            raise SettingsFileError("not a JSON object")
        updated = set_string_setting(text, URL_SETTING, url)
    except SettingsFileError as error:
        raise SettingsFileError(f"{settings_path}: {error}; left unchanged") from error
    previous = current.get(URL_SETTING)
    previous_url = previous if isinstance(previous, str) else None
    if updated == text and not created:
        return SetupResult(settings_path, target, url, previous_url, False, False, None)
    backup = None if created else _backup(target, original, mode, now())
    write_atomically(target, updated.encode("utf-8"), mode)
    return SetupResult(settings_path, target, url, previous_url, True, created, backup)


@dataclass(frozen=True)
class WrapperResult:
    wrapper: Path
    cli: Path
    url: str
    changed: bool

    def lines(self) -> list[str]:
        if not self.changed:
            return [f"{self.wrapper} already runs {self.cli} through {self.url}"]
        return [
            f"wrote {self.wrapper}: runs {self.cli} with AMP_URL={self.url}",
            f"run `{self.wrapper.name}` to use that Amp through ampbridge; "
            "other Amp installations are unchanged",
        ]


def default_wrapper_path(home: Path) -> Path:
    return home / ".local" / "bin" / WRAPPER_NAME


def resolve_cli(path_or_name: str, path_dirs: Sequence[Path]) -> Path:
    """The executable ``--cli`` names: a path (kept as given, so an npm symlink survives upgrades)
    or a command name looked up in ``path_dirs``."""
    if os.sep in path_or_name or (os.altsep and os.altsep in path_or_name) or path_or_name.startswith("~"):
        candidate: Path | None = Path(path_or_name).expanduser().absolute()
    else:
        found = shutil.which(path_or_name, path=os.pathsep.join(map(str, path_dirs)))
        candidate = Path(found).absolute() if found else None
    if candidate is None or not candidate.is_file() or not os.access(candidate, os.X_OK):
        raise SettingsFileError(f"{path_or_name}: no such Amp executable")
    return candidate


def wrapper_script(cli: Path, url: str) -> str:
    return (
        "#!/bin/sh\n"
        f"{WRAPPER_MARKER}: runs this one Amp installation through ampbridge;\n"
        "# other Amp installations keep talking to Amp directly.\n"
        f"AMP_URL={shlex.quote(url)}\n"
        "export AMP_URL\n"
        f'exec {shlex.quote(str(cli))} "$@"\n'
    )


def write_cli_wrapper(cli: Path, url: str, wrapper: Path) -> WrapperResult:
    """Write (or update) the wrapper script; an existing file that ampbridge did not write is
    never overwritten, and a wrapper cannot run itself."""
    target = Path(os.path.realpath(wrapper))
    if Path(os.path.realpath(cli)) == target:
        raise SettingsFileError(f"{cli} is the wrapper itself")
    script = wrapper_script(cli, url)
    try:
        existing = target.read_text(encoding="utf-8")
    except FileNotFoundError:
        existing = None
    except (OSError, UnicodeDecodeError) as error:
        raise SettingsFileError(f"{wrapper}: exists and cannot be read ({type(error).__name__})") from error
    if existing is not None and WRAPPER_MARKER not in existing:
        raise SettingsFileError(f"{wrapper}: exists and was not written by ampbridge; left unchanged")
    if existing == script:
        return WrapperResult(wrapper, cli, url, changed=False)
    write_atomically(target, script.encode("utf-8"), WRAPPER_MODE)
    return WrapperResult(wrapper, cli, url, changed=True)
