"""A backend wrapper that dies at a chosen moment, for kill-and-resume tests."""


class Crash(Exception):
    pass


class Flaky:
    """Wraps a backend and raises Crash on the n-th call of one method (a kill at that moment)."""

    def __init__(self, inner, method, n):
        self.inner, self.method, self.n, self.calls = inner, method, n, 0
        self.name = inner.name

    def __getattr__(self, attr):
        fn = getattr(self.inner, attr)
        if attr != self.method:
            return fn

        def wrapped(*a, **k):
            self.calls += 1
            if self.calls == self.n:
                raise Crash(attr)
            return fn(*a, **k)
        return wrapped
