"""Build the Cython extensions of dpm.

Environment switches:
- ``DPM_DEBUG=1``: bounds checks, wraparound checks and initialized-memoryview checks on, -O0 -g:
  indexing bugs fail loudly (CI runs the suite once this way).
- ``DPM_NATIVE=1``: compile for the build machine only (-march=native), no runtime dispatch clones.
  The default build is portable: the SIMD kernels carry GCC target_clones for AVX-512, AVX2 and
  baseline x86-64, selected at load time.
- ``DPM_SANITIZE=1`` (with DPM_DEBUG): also AddressSanitizer, so out-of-bounds reads/writes inside
  the C kernels abort loudly, at -O1 (the sanitizer's advice for speed); run Python with
  ``LD_PRELOAD=$(gcc -print-file-name=libasan.so)``.
- ``DPM_ANNOTATE=1``: write Cython's HTML annotation next to each .pyx.

The extensions compile in parallel (one per core, as ``build_ext -j``; the pricing module alone
takes about two minutes on a 2-vCPU host), unless ``-j`` / ``--parallel`` says otherwise.
"""
from __future__ import annotations

import glob
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

DEBUG = os.environ.get("DPM_DEBUG", "0") not in ("", "0")
NATIVE = os.environ.get("DPM_NATIVE", "0") not in ("", "0")
ANNOTATE = os.environ.get("DPM_ANNOTATE", "0") not in ("", "0")
SANITIZE = DEBUG and os.environ.get("DPM_SANITIZE", "0") not in ("", "0")


def extensions() -> list:
    from Cython.Build import cythonize

    directives = {
        "language_level": 3,
        "boundscheck": DEBUG,
        "wraparound": DEBUG,
        "initializedcheck": DEBUG,
        "cdivision": True,
        "nonecheck": DEBUG,
        "embedsignature": True,
    }
    is_gcc_like = sys.platform != "win32"
    compile_args: list[str] = []
    define_macros: list[tuple[str, str | None]] = []
    libraries: list[str] = []
    link_args: list[str] = []
    if is_gcc_like:
        # -fno-math-errno lets sqrt/exp/log vectorise; NaN/inf semantics are kept (no -ffast-math).
        compile_args += ["-fopenmp-simd", "-fno-math-errno", "-fno-trapping-math", "-std=gnu11"]
        # the sanitized build at -O1, as AddressSanitizer's documentation advises for reasonable speed
        # (the checks are the same, and CI runs that suite on every change); a plain debug build at -O0
        compile_args += [("-O1" if SANITIZE else "-O0"), "-g", "-UNDEBUG"] if DEBUG else ["-O3"]
        if SANITIZE:
            compile_args += ["-fsanitize=address", "-fno-omit-frame-pointer"]
            link_args += ["-fsanitize=address"]
        if NATIVE:
            compile_args.append("-march=native")
            define_macros.append(("DPM_NATIVE", "1"))
        if sys.platform.startswith("linux"):
            libraries += ["mvec", "m"]  # glibc's SIMD math library (exp/log/erfc vector variants)
    if DEBUG:
        define_macros.append(("DPM_DEBUG_BUILD", "1"))

    sources = sorted(glob.glob(os.path.join("dpm", "_core", "*.pyx")))
    exts = [
        Extension(
            name=src[:-4].replace(os.sep, "."),
            sources=[src],
            include_dirs=[os.path.join("dpm", "_core")],
            extra_compile_args=compile_args,
            define_macros=define_macros,
            libraries=libraries,
            extra_link_args=link_args,
        )
        for src in sources
    ]
    return cythonize(
        exts,
        compiler_directives=directives,
        annotate=ANNOTATE,
        # the debug switch must force a rebuild of the generated C files
        force=DEBUG,
    )


class ParallelBuildExt(build_ext):
    """``build_ext`` compiling the extensions in parallel by default (pip builds included)."""

    def finalize_options(self) -> None:
        super().finalize_options()
        if self.parallel is None:
            self.parallel = max(1, min(os.cpu_count() or 1, 8))


setup(ext_modules=extensions(), cmdclass={"build_ext": ParallelBuildExt})
