"""BUG(): how the mini-kernel reports a broken kernel invariant.

What this file owns
  - KernelBug, the one exception for "the kernel is wrong" (Linux's BUG()
    and BUG_ON()): a double free, a bad page state, a sleep in atomic
    context.  Running out of a resource is NOT a KernelBug: that returns
    failure (None, -ENOMEM) to the caller, as in Linux.

Rules
  - The message reads "function: reason", naming the Linux routine the
    check mirrors, so a report points at the code that caught it.
"""


class KernelBug(Exception):
    """A broken kernel invariant (BUG()).  `message` says "function: reason"."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message
