"""The sandbox a submission runs in: Debian's bubblewrap (``bwrap``), resource limits and a no-fork filter.

What the sandboxed process gets (``bwrap_command``):

- new user, pid, network, IPC, UTS and cgroup namespaces (``--unshare-all``): uid 65534 inside, no network (its
  own loopback only), it sees only its own processes and cannot signal any other; it dies with the grader
  (``--die-with-parent``) and has no controlling terminal (``--new-session``); every capability dropped;
- a read-only view of only what Python needs: ``/usr`` (and the ``/bin``, ``/lib`` links), a few files of
  ``/etc``, the Python installation, the virtual environment, the ``course_lib`` package, and — read-only, when
  they exist — the model cache and the MNIST folders; never the master notebooks, other submissions, the
  results or the grader's home (only the folders listed are mounted, at their own paths);
- a private writable ``/tmp`` (a fresh host folder, removed afterwards; its size is watched by the grader),
  ``HOME``, with the working directory ``/tmp/work``; nothing else is writable (the root and ``/dev`` that bwrap
  builds in memory are remounted read-only);
- an empty environment but for a few variables (``PATH``, ``HOME``, ``COURSE_*``, ``MPLBACKEND``);
- a seccomp filter that refuses to create processes (``fork``, ``vfork``, ``clone`` without ``CLONE_THREAD``;
  ``clone3`` answers "not implemented" so the C library falls back to ``clone``): threads work, a fork bomb
  does not start;
- resource limits (``Limits``): address space, CPU seconds, file size, open files, processes, no core dumps.

Where ``bwrap`` is missing or cannot create namespaces (a Mac, a locked-down container), ``check_bwrap`` says
why and how to get it; the grader then refuses unless told ``--no-sandbox``.
"""

from __future__ import annotations

import os
import platform
import resource
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Limits", "SandboxUnavailable", "bwrap_command", "check_bwrap", "no_fork_filter", "options_file",
           "readonly_paths"]

INSTALL_HINT = ("install bubblewrap (Debian/Ubuntu: `sudo apt-get install bubblewrap`; Fedora: `sudo dnf install "
                "bubblewrap`); on a Mac, grade inside a Linux virtual machine or container that has it, or pass "
                "--no-sandbox to run submissions without isolation (only for code you trust; every CSV row says so)")


class SandboxUnavailable(RuntimeError):
    """``bwrap`` is missing or does not work here; the message says why and what to do."""


@dataclass(frozen=True)
class Limits:
    """Per-submission limits. Sizes in MiB; ``cpu_seconds`` is CPU time (all threads) before SIGKILL."""

    memory_mb: int = 4096        # address space (RLIMIT_AS): importing torch reserves ~0.8 GiB of it
    cpu_seconds: int = 3600
    file_mb: int = 64            # largest file the submission may write (RLIMIT_FSIZE)
    disk_mb: int = 512           # everything in its /tmp together (watched by the grader)
    disk_files: int = 20000      # files and folders in its /tmp together
    open_files: int = 256        # RLIMIT_NOFILE
    processes: int = 512         # RLIMIT_NPROC, counted per user by the kernel (root ignores it: the filter holds)

    def apply(self) -> None:
        """Set the limits on this process (called between fork and exec; inherited by bwrap and the worker)."""
        mib = 1024 * 1024
        for what, value in ((resource.RLIMIT_AS, self.memory_mb * mib), (resource.RLIMIT_CPU, self.cpu_seconds),
                            (resource.RLIMIT_FSIZE, self.file_mb * mib), (resource.RLIMIT_NOFILE, self.open_files),
                            (resource.RLIMIT_CORE, 0)):
            resource.setrlimit(what, (value, value))
        if os.getuid() != 0:  # counted over all of the user's processes: add what the user runs already
            running = sum(1 for p in Path("/proc").iterdir() if p.name.isdigit())
            resource.setrlimit(resource.RLIMIT_NPROC, (running + self.processes, running + self.processes))


# ====================================================================== the seccomp filter
_ARCH = {  # machine -> (AUDIT_ARCH_*, clone, fork or None, vfork or None, clone3)
    "x86_64": (0xC000003E, 56, 57, 58, 435),
    "aarch64": (0xC00000B7, 220, None, None, 435),
}
_LD_W_ABS, _JEQ_K, _JGE_K, _JSET_K, _RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
_ALLOW, _ERRNO = 0x7FFF0000, 0x00050000
_EPERM, _ENOSYS = 1, 38
_CLONE_THREAD = 0x00010000


def no_fork_filter(machine: str | None = None) -> bytes:
    """A classic-BPF seccomp program (``bwrap --seccomp FD``) that lets threads be created but no process.

    Layout of ``struct seccomp_data``: nr at offset 0, arch at 4, args[0] (clone's flags, low 32 bits) at 16.
    Any other architecture (32-bit or x32 system calls) gets EPERM for every call.
    """
    machine = machine or platform.machine()
    if machine not in _ARCH:
        raise SandboxUnavailable(f"no process filter for the {machine} architecture (x86_64 and aarch64 only)")
    arch, clone, fork, vfork, clone3 = _ARCH[machine]
    deny, nosys = _ERRNO | _EPERM, _ERRNO | _ENOSYS
    prog: list[tuple] = []  # (code, jt, jf, k), jumps as labels resolved below

    def op(code, k, jt=0, jf=0):
        prog.append([code, jt, jf, k])

    op(_LD_W_ABS, 4)
    op(_JEQ_K, arch, 0, "deny")
    op(_LD_W_ABS, 0)
    op(_JGE_K, 0x40000000, "deny", 0)  # the x32 ABI
    op(_JEQ_K, clone3, "nosys", 0)
    for nr in (fork, vfork):
        if nr is not None:
            op(_JEQ_K, nr, "deny", 0)
    op(_JEQ_K, clone, 0, "allow")
    op(_LD_W_ABS, 16)
    op(_JSET_K, _CLONE_THREAD, "allow", "deny")
    labels = {"allow": len(prog), "deny": len(prog) + 1, "nosys": len(prog) + 2}
    op(_RET_K, _ALLOW)
    op(_RET_K, deny)
    op(_RET_K, nosys)
    out = b""
    for i, (code, jt, jf, k) in enumerate(prog):
        jt = labels[jt] - i - 1 if isinstance(jt, str) else jt
        jf = labels[jf] - i - 1 if isinstance(jf, str) else jf
        out += struct.pack("=HBBI", code, jt, jf, k)
    return out


# ====================================================================== what the sandbox may read
def readonly_paths() -> list[Path]:
    """The host folders mounted read-only: Python, the venv, course_lib, and the model and data caches."""
    import course_lib

    from ._runtime import cache_dir

    found = [Path(sys.base_prefix), Path(sys.prefix), Path(sys.exec_prefix), Path(course_lib.__file__).parent]
    import site

    found += [Path(p) for p in site.getsitepackages()]
    data = os.environ.get("COURSE_DATA_DIR", "").strip()
    if data:
        found.append(Path(data))
    found.append(cache_dir())
    out: list[Path] = []
    for p in sorted({p.resolve() for p in found if p.is_dir()}, key=lambda p: len(p.parts)):
        if not any(q == p or q in p.parents for q in out):  # a folder inside one already mounted comes with it
            out.append(p)
    return out


def bwrap_command(argv: list[str], tmp_dir: Path, *, env: dict[str, str], seccomp_fd: int | None = None,
                  readonly: list[Path] | None = None, bwrap: str = "bwrap", cwd: str = "/tmp") -> list[str]:
    """The ``bwrap`` command line that runs ``argv`` in the sandbox, with ``tmp_dir`` as its private /tmp."""
    cmd = [bwrap, "--unshare-all", "--unshare-user", "--uid", "65534", "--gid", "65534", "--die-with-parent",
           "--new-session", "--cap-drop", "ALL", "--clearenv", "--ro-bind", "/usr", "/usr"]
    for name in ("bin", "lib", "lib64", "sbin", "lib32"):
        p = Path("/") / name
        if p.is_symlink():
            cmd += ["--symlink", os.readlink(p), str(p)]
        elif p.is_dir():
            cmd += ["--ro-bind", str(p), str(p)]
    for f in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/fonts", "/etc/localtime",
              "/etc/alternatives", "/etc/matplotlibrc"):
        cmd += ["--ro-bind-try", f, f]
    passwd = tmp_dir / ".passwd"
    passwd.write_text("nobody:x:65534:65534:student:/tmp:/usr/sbin/nologin\n")
    # /tmp first: a read-only folder below /tmp on the host (a cache, say) is mounted over it, not hidden by it
    cmd += ["--bind", str(tmp_dir), "/tmp", "--ro-bind", str(passwd), "/etc/passwd", "--dev", "/dev",
            "--proc", "/proc"]
    for p in readonly if readonly is not None else readonly_paths():
        cmd += ["--ro-bind", str(p), str(p)]
    # the root and /dev are in-memory file systems bwrap made: read-only, or they would be unmetered storage
    cmd += ["--remount-ro", "/", "--remount-ro", "/dev", "--chdir", cwd]
    for k, v in env.items():
        cmd += ["--setenv", k, v]
    if seccomp_fd is not None:
        cmd += ["--seccomp", str(seccomp_fd)]
    return cmd + ["--"] + list(argv)


def options_file(cmd: list[str]) -> tuple[bytes, list[str]]:
    """Split a ``bwrap_command`` into the bytes of an ``--args`` file (its options, NUL-separated) and the rest
    (``--`` and the program), so that the sandbox's /proc/1/cmdline reads ``bwrap --args N -- python ...``
    and shows no host path."""
    split = cmd.index("--")
    return b"".join(a.encode() + b"\0" for a in cmd[1:split]), cmd[split:]


def check_bwrap(bwrap: str = "bwrap") -> str:
    """The path of a working ``bwrap``; raises ``SandboxUnavailable`` (saying how to get one) otherwise."""
    path = shutil.which(bwrap)
    if path is None:
        raise SandboxUnavailable(f"the grading sandbox needs bubblewrap (`bwrap`), which is not installed: "
                                 f"{INSTALL_HINT}")
    try:
        r = subprocess.run([path, "--unshare-all", "--unshare-user", "--uid", "65534", "--die-with-parent",
                            "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "true"],
                           capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SandboxUnavailable(f"`bwrap` does not run here ({exc}): {INSTALL_HINT}") from None
    if r.returncode != 0:
        why = r.stderr.decode(errors="replace").strip()[-300:]
        raise SandboxUnavailable(f"`bwrap` cannot create its namespaces here ({why}); user namespaces may be "
                                 f"disabled (sysctl kernel.unprivileged_userns_clone=1), or {INSTALL_HINT}")
    return path
