#!/usr/bin/python3
"""Run a command under the seccomp rule of systemd's MemoryDenyWriteExecute=yes.

systemd.exec(5): reject mmap() with both PROT_EXEC and PROT_WRITE, mprotect()
and pkey_mprotect() with PROT_EXEC, and shmat() with SHM_EXEC. Rejected calls
fail with EPERM, as under systemd. Also turns on no_new_privs, like the units.

Usage: mdwe-exec.py COMMAND [ARG...]   (needs python3-seccomp)
"""
import errno
import mmap
import os
import sys

import seccomp

PROT_WRITE, PROT_EXEC = mmap.PROT_WRITE, mmap.PROT_EXEC
SHM_EXEC = 0o100000


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    deny = seccomp.ERRNO(errno.EPERM)
    wx = PROT_WRITE | PROT_EXEC
    f.add_rule(deny, "mmap", seccomp.Arg(2, seccomp.MASKED_EQ, wx, wx))
    f.add_rule(deny, "mprotect", seccomp.Arg(2, seccomp.MASKED_EQ, PROT_EXEC, PROT_EXEC))
    f.add_rule(deny, "pkey_mprotect", seccomp.Arg(2, seccomp.MASKED_EQ, PROT_EXEC, PROT_EXEC))
    f.add_rule(deny, "shmat", seccomp.Arg(2, seccomp.MASKED_EQ, SHM_EXEC, SHM_EXEC))
    f.load()
    os.execvp(sys.argv[1], sys.argv[1:])


if __name__ == "__main__":
    main()
