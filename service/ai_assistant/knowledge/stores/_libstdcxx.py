"""One C++ runtime per process: call `share_system_libstdcxx()` before usearch loads (embedded.py does).

usearch's Linux wheel carries its own libstdc++, linked in statically from a newer GCC than Debian 12's, and exports
it. Among the exports are the `std::locale` ids of the template facets (`numpunct<char>::id`, `num_get<char>::id`, ...)
as STB_GNU_UNIQUE symbols, which glibc binds once per process even across RTLD_LOCAL. So usearch's copy and the
system's libstdc++.so.6 (loaded by numpy; used by onnxruntime, ctranslate2, grpc, ...) share those ids but not the
ids of the other facets (`ctype<char>`, the `codecvt`s) nor the counter that numbers them. Whichever copy builds its
classic locale second finds some ids already taken, numbers the rest from its own counter, and puts two facets in one
slot. usearch's copy builds its locale as it loads, so the system's came second: onnxruntime then read a `codecvt`
where another facet was expected and segfaulted while importing, i.e. the first image sent to a service with the
knowledge base on (usearch loaded at start) killed the process in the OCR adapter. Priming the system's locale first
only moves the collision into usearch's copy.

With libstdc++.so.6 in the global scope before usearch loads, the dynamic linker resolves usearch's exported copy of
the runtime to the system's (the usual interposition, as in any program linked against libstdc++): one locale, one
numbering, whichever library touches it first. Only what the older system library lacks stays usearch's own, the same
split that manylinux wheels built with a newer GCC get by design.
"""

from __future__ import annotations

import ctypes
import sys


def share_system_libstdcxx() -> None:
    """Put the system libstdc++ in the process's global symbol scope (idempotent); a no-op where there is none.

    Too late once usearch has loaded: its copy is bound by then."""
    if not sys.platform.startswith("linux"):
        return  # STB_GNU_UNIQUE and this interposition are glibc/ELF matters
    try:
        # By soname: the copy numpy already loaded, or the one every later library would get; RTLD_GLOBAL promotes it.
        ctypes.CDLL("libstdc++.so.6", mode=ctypes.RTLD_GLOBAL)
    except OSError:
        return  # no shared libstdc++ at all: no second copy to disagree with
