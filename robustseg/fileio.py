"""Small file helpers: atomic writes (temp file + rename), content hashes, and the readers of every JSON/TOML file
the project is given (``read_json``, ``read_toml``), which turn whatever goes wrong into one line naming the file."""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import tomllib
from pathlib import Path
from typing import Any, Callable

from .errors import RobustsegError

# Deeper than any file the project reads needs (a COCO polygon sits 5 levels down). The bound is what keeps later
# recursive code (repr in an error message, copy.deepcopy in pycocotools, json.dumps) from hitting Python's limit.
MAX_NESTING = 64


def atomic_write(path: str | Path, write: Callable[[io.IOBase], None], mode: str = "w") -> Path:
    """Write through ``write(fileobj)`` into a temp file beside ``path``, then rename over it.

    A killed process leaves either the old file or the new one, never half of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode open() would
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text))


def write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write(path, lambda f: json.dump(obj, f, indent=1, default=str))


def write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data), mode="wb")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_json(path: str | Path, what: str, *, error: type[RobustsegError] = RobustsegError,
              max_depth: int = MAX_NESTING) -> Any:
    """The parsed JSON file, or ``error`` with one line "``what`` ``path``: problem" (no such file, a directory,
    unreadable, not UTF-8/16/32 text, invalid JSON, nested more than ``max_depth`` levels, too large for memory)."""
    # from bytes, json detects UTF-8, -16 or -32 itself (RFC 8259), as json.load on a binary file does
    return _read_parsed(path, what, error, max_depth, "JSON", json.loads)


def read_toml(path: str | Path, what: str, *, error: type[RobustsegError] = RobustsegError,
              max_depth: int = MAX_NESTING) -> dict:
    """The parsed TOML file (UTF-8, as TOML requires), or ``error`` with one line, as ``read_json``."""
    return _read_parsed(path, what, error, max_depth, "TOML", lambda data: tomllib.loads(data.decode("utf-8")))


def _read_parsed(path: str | Path, what: str, error: type[RobustsegError], max_depth: int, fmt: str,
                 parse: Callable[[bytes], Any]) -> Any:
    where = f"{what} {path}"
    data = _read_bytes(path, where, error)
    try:
        obj = parse(data)
    except RecursionError:  # the parsers recurse once per level: Python's limit is reached long before the end
        raise error(_too_deep(where, max_depth)) from None
    except MemoryError:
        raise error(f"{where}: too large to read into memory") from None
    except UnicodeDecodeError as e:
        raise error(f"{where}: invalid {fmt} (not UTF-8 text: {_one_line(e)})") from None
    except ValueError as e:  # JSONDecodeError/TOMLDecodeError, and int() refusing a number of 4300+ digits
        raise error(f"{where}: invalid {fmt} ({_one_line(e)})") from None
    if nesting_depth(obj, max_depth) > max_depth:
        raise error(_too_deep(where, max_depth))
    return obj


def _read_bytes(path: str | Path, where: str, error: type[RobustsegError]) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise error(f"{where}: no such file") from None
    except IsADirectoryError:
        raise error(f"{where}: is a directory, not a file") from None
    except MemoryError:
        raise error(f"{where}: too large to read into memory") from None
    except OSError as e:  # permissions, a name too long, a path through a file, an I/O error
        raise error(f"{where}: cannot be read ({_one_line(e.strerror or e)})") from None


def nesting_depth(obj: Any, limit: int | None = None) -> int:
    """How many levels of lists/dicts ``obj`` has (a scalar: 0), counted level by level without recursion; stops
    early, returning ``limit + 1``, once ``limit`` is exceeded."""
    depth, level = 0, [obj] if isinstance(obj, (list, dict)) else []
    while level:
        depth += 1
        if limit is not None and depth > limit:
            break
        # only the containers of the next level are kept: a list of a million numbers adds nothing to hold
        level = [c for x in level for c in (x.values() if isinstance(x, dict) else x) if isinstance(c, (list, dict))]
    return depth


def _too_deep(where: str, max_depth: int) -> str:
    return (f"{where}: nested more than {max_depth} levels deep (lists or objects within each other); "
            f"no file robustseg reads needs that")


def _one_line(e: Any) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def write_png(path: str | Path, image, scale: int = 1, dpi: float | None = None) -> Path:
    """An 8-bit RGB PNG of a [0,1] image: a (3,H,W) torch tensor or an (H,W,3) array; ``scale`` enlarges it
    nearest-neighbour (small patches); ``dpi`` goes into the pHYs chunk (its physical size when printed). The one
    PNG writer of every kind's example and patch images."""
    import numpy as np
    from PIL import Image
    a = image.detach().float().cpu().permute(1, 2, 0).numpy() if hasattr(image, "detach") else np.asarray(image)
    im = Image.fromarray((np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8))
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    extra = {"dpi": (dpi, dpi)} if dpi else {}
    return atomic_write(path, lambda f: im.save(f, format="PNG", **extra), mode="wb")
