"""Bounds on the templates a user supplies (issue 16): time, memory and size.

The Jinja sandbox (wording.jinja_env) keeps a template away from Python internals; it does
not stop one from looping for ever or allocating without end. A practice's own template
(`--template FILE`, or any file of a `--templates DIR` / $PRIORAUTH_TEMPLATES folder other
than the bundled one) is rendered with the environment made here, which adds:

- **sizes**: no string, list or number a template builds may exceed `MAX_SIZE` items
  (`'x' * 10**9`, `[x] * 10**9`, `range(10**12)`, `'x'|center(10**9)`, `2 ** 10**9`,
  `'%*s' % (10**9, x)`, a doubling `~` or `+` in a loop ...): checked before the operation
  when it multiplies, after it when it can only add;
- **output**: at most `MAX_OUTPUT` characters for one rendered template, and at most
  `MAX_TOTAL` items in all the values one render builds or prints (a macro's output, held
  in memory until the macro returns, included), counted as they are made;
- **time and memory**: a watchdog thread interrupts the render after `TEMPLATE_SECONDS`,
  or when the process has grown by more than `MAX_MEMORY` bytes since the render began
  (a loop that keeps many bounded values alive); the interrupt is delivered between two
  Python steps, which the size limits keep short;
- **depth**: a macro that calls itself without end stops at Python's recursion limit.

Each ends the render with `TemplateBoundsError` (an InputError: exit 2), naming the template
file and the limit, never a value. The built-in templates are not slowed by any of this.

Typst templates are data-driven (the letter is passed as JSON), but the Typst language can
still loop over `range(10**9)` or build a gigabyte string (its `while` has a guard, `for`
has none). A user's .typ template (or a user templates folder's) is therefore compiled in a
separate Python process with an address-space limit and a wall-clock timeout
(`compile_typst_bounded`); the bundled ones compile in-process as before.
"""

from __future__ import annotations

import ctypes
import functools
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any, Mapping, Optional

from jinja2.compiler import CodeGenerator
from jinja2.exceptions import TemplateRuntimeError

from ..core.errors import InputError

TEMPLATE_SECONDS = 5.0  # wall clock for one render of a user's template
MAX_SIZE = 1_000_000  # items in one string / list / range a template builds
MAX_INT_BITS = 64_000  # an integer of ~19,000 digits
MAX_OUTPUT = 10_000_000  # characters one template may write (a letter is ~30,000)
MAX_TOTAL = 50_000_000  # items of all the values one render builds and prints, together
MAX_MEMORY = 512 << 20  # growth of the process during one render
TYPST_SECONDS = 15.0  # a Typst compile in its own process (python start and import included)
TYPST_MEMORY = 2 << 30  # address space of that process


class TemplateBoundsError(TemplateRuntimeError, InputError):
    """A user's template went over a limit; the message names the limit, never a value."""

    exit_code = 2

    def __init__(self, message: str):
        TemplateRuntimeError.__init__(self, message)


class _Interrupt(BaseException):
    """Raised in the rendering thread by the watchdog (BaseException: no `except Exception`
    inside Jinja or the sandbox can swallow it)."""


def _too_big(what: str) -> TemplateBoundsError:
    return TemplateBoundsError(f"the template builds {what} larger than the limit of {MAX_SIZE:,} "
                               "(a custom template may not build unbounded values)")


def _size(value: Any) -> int:
    """Items in a built value: length of a string or sequence (a sequence's strings counted)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, (list, tuple)):
        return len(value) + sum(len(v) for v in value if isinstance(v, str))
    if isinstance(value, (dict, set, frozenset, range)):
        return len(value)
    return 0


def _spend(n: int) -> None:
    """Count `n` items against the render's MAX_TOTAL (only inside a guarded render)."""
    left = getattr(_local, "budget", None)
    if left is None:
        return
    left -= n
    _local.budget = left
    if left < 0:
        raise TemplateBoundsError(f"the template builds more than {MAX_TOTAL:,} characters or items in all "
                                  "(the limit for a custom template): stopped")


def _check(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if value.bit_length() > MAX_INT_BITS:
            raise _too_big("a number")
        return value
    size = _size(value)
    if size > MAX_SIZE:
        raise _too_big("a string or list")
    if size > 64:
        _spend(size)
    return value


def _big_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_SIZE


def _check_args(args: tuple, kwargs: Mapping[str, Any]) -> None:
    """A width, count or fill size beyond MAX_SIZE is refused before the call."""
    values = list(args) + list(kwargs.values())
    for v in values:
        if _big_int(v) or (isinstance(v, (list, tuple)) and any(_big_int(x) for x in v)):
            raise _too_big("a string or list")


def _check_repeat(seq: Any, times: Any) -> None:
    if isinstance(times, int) and _size(seq) * max(times, 0) > MAX_SIZE:
        raise _too_big("a string or list")


def _check_replace(text: Any, old: Any, new: Any, count: Any = -1) -> None:
    if isinstance(text, str) and isinstance(old, str) and isinstance(new, str):
        hits = text.count(old) if old else len(text) + 1
        if isinstance(count, int) and count >= 0:
            hits = min(hits, count)
        if len(text) + hits * len(new) > MAX_SIZE:
            raise _too_big("a string")


def _check_join(parts: Any, sep: Any = "") -> None:
    if isinstance(parts, (list, tuple)):
        total = sum(len(p) if isinstance(p, str) else 20 for p in parts)
        if total + len(parts) * (len(sep) if isinstance(sep, str) else 0) > MAX_SIZE:
            raise _too_big("a string")


_BIG_WIDTH = re.compile(r"\d{7,}")  # a width or precision of 1,000,000 or more in a format


def _check_format(fmt: Any) -> None:
    if isinstance(fmt, str) and _BIG_WIDTH.search(fmt):
        raise _too_big("a string")


# ------------------------------------------------------------------ the watchdog


_local = threading.local()


def _rss() -> int:
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):  # pragma: no cover - not Linux: time bound only
        return 0


try:
    import os as _os

    _PAGE = _os.sysconf("SC_PAGE_SIZE")
except (AttributeError, ValueError, OSError):  # pragma: no cover
    _PAGE = 4096

_set_async_exc = getattr(getattr(ctypes, "pythonapi", None), "PyThreadState_SetAsyncExc", None)


class _Watchdog:
    """Interrupts one thread's render when it runs over the time or grows over the memory bound."""

    def __init__(self, seconds: float, memory: int):
        self.target = threading.get_ident()
        self.deadline = time.monotonic() + seconds
        self.memory = memory
        self.start_rss = _rss()
        self.reason: Optional[str] = None
        self.delivered = False
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="template-watchdog", daemon=True)

    def _watch(self) -> None:
        while not self.done.wait(0.01):
            reason = None
            if time.monotonic() > self.deadline:
                reason = f"took longer than {TEMPLATE_SECONDS:g} s (the limit for a custom template): stopped"
            elif self.start_rss and _rss() - self.start_rss > self.memory:
                reason = f"needed more than {self.memory >> 20} MB (the limit for a custom template): stopped"
            if reason is not None:
                with self.lock:
                    if not self.done.is_set() and _set_async_exc is not None:
                        self.reason = reason
                        _set_async_exc(ctypes.c_ulong(self.target), ctypes.py_object(_Interrupt))
                        self.delivered = True
                return

    def stop(self) -> None:
        with self.lock:
            self.done.set()
            if self.delivered:
                # delivered but perhaps not yet raised: withdraw it, the limit is reported anyway
                _set_async_exc(ctypes.c_ulong(self.target), None)


class guard:
    """Context manager: the enclosed render is bounded in time and memory (outermost wins)."""

    def __init__(self, label: str, seconds: Optional[float] = None, memory: Optional[int] = None):
        self.label = label
        self.seconds = TEMPLATE_SECONDS if seconds is None else seconds
        self.memory = MAX_MEMORY if memory is None else memory
        self.dog: Optional[_Watchdog] = None

    def __enter__(self):
        if getattr(_local, "active", False):
            return self
        _local.active = True
        _local.budget = MAX_TOTAL
        self.dog = _Watchdog(self.seconds, self.memory)
        self.dog.thread.start()
        return self

    def __exit__(self, typ, exc, tb):
        if self.dog is None:
            return False
        dog, self.dog = self.dog, None
        try:
            dog.stop()
        finally:
            _local.active = False
            _local.budget = None
        if dog.reason is not None:
            raise TemplateBoundsError(f"{self.label}: {dog.reason}") from None
        if typ is not None and issubclass(typ, _Interrupt):  # pragma: no cover - reason is always set first
            raise TemplateBoundsError(f"{self.label}: stopped (over a limit for a custom template)") from None
        return False


# ------------------------------------------------------------------ the environment


class _BoundedCodeGenerator(CodeGenerator):
    """`a ~ b` goes through environment.bounded_concat (its result size is checked)."""

    def visit_Concat(self, node, frame) -> None:  # noqa: N802 - Jinja's visitor name
        if frame.eval_ctx.volatile:
            func_name = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            func_name = "markup_join"
        else:
            func_name = "str_join"
        self.write(f"environment.bounded_concat({func_name}, (")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


_STR_AMPLIFIERS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs", "replace", "join", "format",
                             "format_map", "split", "rsplit", "splitlines", "encode", "translate"})


def _bounded_range(*args: int):
    rng = range(*args)
    if len(rng) > MAX_SIZE:
        raise _too_big("a range")
    return rng


def _wrap_filter(name: str, func: Any) -> Any:
    @functools.wraps(func)
    def bounded(*args, **kwargs):
        value_at = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0
        rest = args[value_at + 1:]
        _check_args(rest, kwargs)
        if name == "replace" and len(args) > value_at + 2:
            _check_replace(str(args[value_at]), str(args[value_at + 1]), str(args[value_at + 2]),
                           rest[2] if len(rest) > 2 else kwargs.get("count", -1))
        elif name == "join" and len(args) > value_at:
            items = args[value_at]
            _check_join(list(items) if isinstance(items, (list, tuple, range)) else items,
                        rest[0] if rest else kwargs.get("d", ""))
        elif name == "format" and len(args) > value_at:
            _check_format(args[value_at])
        return _check(func(*args, **kwargs))

    return bounded


@functools.lru_cache(maxsize=1)
def _bounded_class():
    from .wording import _sandbox

    base = _sandbox()

    class BoundedSandbox(base):
        code_generator_class = _BoundedCodeGenerator
        intercepted_binops = frozenset({"*", "**", "+", "%", "//"})
        label = "template"

        def call_binop(self, context, operator, left, right):
            if operator == "*":
                _check_repeat(left, right)
                _check_repeat(right, left)
                if isinstance(left, int) and isinstance(right, int) \
                        and left.bit_length() + right.bit_length() > MAX_INT_BITS:
                    raise _too_big("a number")
            elif operator == "**":
                if isinstance(left, (int, float)) and isinstance(right, int) and abs(left) > 1 \
                        and right > MAX_INT_BITS:
                    raise _too_big("a number")
            elif operator == "%" and isinstance(left, str):
                _check_format(left)
                _check_args(right if isinstance(right, tuple) else (right,), {})
            return _check(super().call_binop(context, operator, left, right))

        def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 - Jinja's signature
            inner = getattr(__obj, "__wrapped__", __obj)  # the sandbox wraps str.format
            owner = getattr(inner, "__self__", None)
            name = getattr(inner, "__name__", "")
            if isinstance(owner, (str, bytes, list, tuple)) or owner is str:
                if name in _STR_AMPLIFIERS or isinstance(owner, (list, tuple)):
                    _check_args(args, kwargs)
                if name == "replace" and len(args) >= 2:
                    _check_replace(owner, args[0], args[1], args[2] if len(args) > 2 else kwargs.get("count", -1))
                elif name == "join" and args:
                    _check_join(list(args[0]) if isinstance(args[0], (list, tuple, range)) else args[0], owner)
                elif name in ("format", "format_map"):
                    _check_format(owner)
            return _check(super().call(__context, __obj, *args, **kwargs))

        def bounded_concat(self, join, parts):
            return _check(join(parts))

        def bounded_render(self, parts) -> str:
            """Every top-level render (Template.render, docx_fast) ends here: the output cap,
            and the watchdog over the whole render."""
            try:
                with guard(self.label):
                    out, n = [], 0
                    for part in parts:
                        n += len(part)
                        if n > MAX_OUTPUT:
                            raise TemplateBoundsError(f"{self.label}: writes more than {MAX_OUTPUT:,} characters "
                                                      "(the limit for a custom template)")
                        out.append(part)
                    return "".join(out)
            except TemplateBoundsError as exc:
                if not str(exc).startswith(self.label):
                    raise TemplateBoundsError(f"{self.label}: {exc.message}") from None
                raise
            except RecursionError:
                raise TemplateBoundsError(f"{self.label}: nested too deeply (a macro that calls itself "
                                          "without end?)") from None
            except MemoryError:
                raise TemplateBoundsError(f"{self.label}: ran out of memory: stopped") from None

    return BoundedSandbox


def bounded_env(fmt: str, label: str | Path, loader_dir: Optional[Path] = None):
    """wording.jinja_env(fmt) with the bounds above; errors name `label` (the template file)."""
    from .wording import jinja_env

    env = jinja_env(fmt, loader_dir, cls=_bounded_class())
    env.label = str(label)
    finalize = env.finalize

    def counted(value: Any) -> Any:  # every {{ value }} printed, in a macro or not, is counted
        out = finalize(value)
        if isinstance(out, str) and len(out) > 64:
            _spend(len(out))
        return out

    env.finalize = counted
    env.concat = env.bounded_render  # Template.render and docx_fast join the output with concat
    env.globals["range"] = _bounded_range
    env.filters.update({name: _wrap_filter(name, f) for name, f in env.filters.items()})
    return env


# ------------------------------------------------------------------ Typst


def is_bundled(path: str | Path) -> bool:
    """Is `path` in the bundled templates folder (not a user's)?"""
    from ..core.resources import bundled

    try:
        Path(path).resolve().relative_to(bundled("templates").resolve())
        return True
    except (ValueError, OSError):
        return False


_CHILD = r"""
import json, resource, sys
limit = int(sys.argv[1])
try:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
except (ValueError, OSError):
    pass
job = json.loads(sys.stdin.buffer.read())
import typst
try:
    comp = typst.Compiler(job["main"], root=job["root"], font_paths=job["fonts"], ignore_system_fonts=True)
    data = comp.compile(sys_inputs=job["inputs"], timestamp=job["timestamp"], pdf_tags=False)
except typst.TypstError as exc:
    sys.stderr.write((getattr(exc, "message", None) or str(exc)).splitlines()[0][:200] if str(exc) else "error")
    sys.exit(3)
except MemoryError:
    sys.exit(4)
sys.stdout.buffer.write(data)
"""


def compile_typst_bounded(main: Path, root: Path, fonts: list[str], inputs: Mapping[str, str], timestamp: int) -> bytes:
    """Compile a user's Typst template in its own process, bounded in time and memory.

    A failure is an InputError naming the template (Typst's own first line for a Typst
    error: it quotes the template, not the letter's data)."""
    import json
    import subprocess

    job = json.dumps({"main": str(main), "root": str(root), "fonts": fonts, "inputs": dict(inputs),
                      "timestamp": timestamp}).encode("utf-8")
    try:
        proc = subprocess.run([sys.executable, "-I", "-c", _CHILD, str(TYPST_MEMORY)], input=job,
                              capture_output=True, timeout=TYPST_SECONDS)
    except subprocess.TimeoutExpired:
        raise InputError(f"{main}: Typst took longer than {TYPST_SECONDS:g} s (the limit for a custom "
                         "template): stopped") from None
    except OSError as exc:
        raise InputError(f"{main}: cannot start the Typst compiler: {exc.strerror}") from None
    if proc.returncode == 3:
        first = proc.stderr.decode("utf-8", "replace").strip()[:200]
        raise InputError(f"{main}: Typst could not compile the template: {first}")
    if proc.returncode != 0:
        raise InputError(f"{main}: Typst stopped (exit {proc.returncode}): the template needed more than "
                         f"{TYPST_MEMORY >> 30} GB, or crashed the compiler (the limit for a custom template)")
    return proc.stdout
