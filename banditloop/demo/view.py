"""The live view on stderr: load, CTR against the oracle and random, the model version served and
what the consumer has checkpointed."""

from __future__ import annotations

from typing import TextIO

from banditloop.demo.stats import RECENT_WINDOW, DemoStats


class LiveView:
    """A few lines on stderr, redrawn in place twice a second on a terminal; elsewhere (pipes, CI
    logs) one plain line every five seconds.

    "feedback pending" counts the clicks and conversions decided but not yet due; "checkpoint backlog"
    counts the impressions served that no checkpoint holds yet (see
    :class:`~banditloop.demo.stats.MonitorSample`), which is not the consumer's Kafka lag.
    """

    def __init__(self, stream: TextIO, header: str, total_seconds: float | None, total_requests: int | None) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.header = header
        self.total_seconds = total_seconds
        self.total_requests = total_requests
        self._drawn = 0
        self._last_plain = 0.0
        self._last_ok = 0
        self._last_t = 0.0
        self.rps = 0.0
        #: what the demo is doing once the load has stopped ("" while it runs)
        self.phase = ""

    def update(self, stats: DemoStats, t: float, pending: int, final: bool = False) -> None:
        """Redraw (or print a line) at ``t`` seconds into the load, ``pending`` feedback events not yet due."""
        if self.phase:  # the load has stopped: the mean rate of the run
            self.rps = stats.ok / max(len(stats.buckets), 1)
        elif t - self._last_t >= 1.0:
            self.rps = (stats.ok - self._last_ok) / max(t - self._last_t, 1e-9)
            self._last_ok, self._last_t = stats.ok, t
        if self.tty:
            self._draw(self.lines(stats, t, pending))
        elif final or t - self._last_plain >= 5.0:
            self._last_plain = t
            print(self.plain(stats, t), file=self.stream, flush=True)

    def _draw(self, lines: list[str]) -> None:
        out = []
        if self._drawn:
            out.append(f"\x1b[{self._drawn}F")  # back to the first line drawn
        out.extend(f"\x1b[2K{line}\n" for line in lines)
        self.stream.write("".join(out))
        self.stream.flush()
        self._drawn = len(lines)

    def _progress(self, stats: DemoStats, t: float) -> str:
        if self.phase:
            return self.phase
        if self.total_requests:
            return f"{stats.ok:,}/{self.total_requests:,} requests"
        return f"{t:5.1f} s / {self.total_seconds:g} s"

    def lines(self, stats: DemoStats, t: float, pending: int) -> list[str]:
        with stats.lock:
            ok, errors = stats.ok, sum(stats.errors.values())
            n = max(ok, 1)
            served, oracle, random = stats.served / n, stats.oracle / n, stats.random / n
            regret, random_regret = stats.oracle - stats.served, stats.oracle - stats.random
            sent = dict(stats.feedback_sent)
            fb_errors = sum(stats.feedback_errors.values())
            learned = dict(stats.learned)
        recent = stats.recent()
        version = stats.version
        backlog = stats.backlog()
        bar = _bar(1.0 if self.phase else t / self.total_seconds if self.total_seconds
                   else ok / max(self.total_requests or 1, 1))
        lines = [f"{self.header}   {bar} {self._progress(stats, t)}",
                 f"  users      {ok:,} scored ({self.rps:.0f}/s)   errors {errors}   "
                 f"clicks {sent.get('click', 0):,} → /feedback   conversions {sent.get('conversion', 0):,}   "
                 f"feedback pending {pending}" + (f"   feedback errors {fb_errors}" if fb_errors else "")]
        if recent is not None:
            r_served, r_oracle, r_random, r_real = recent
            gap = r_oracle - r_random
            captured = (r_served - r_random) / gap if gap > 0 else 0.0
            lines.append(f"  CTR {RECENT_WINDOW} s    served {_pct(r_served)}  (clicks {_pct(r_real)})   "
                         f"oracle {_pct(r_oracle)}   random {_pct(r_random)}   "
                         f"→ {captured:4.0%} of the way from random to oracle")
            lines.append(f"  CTR all    served {_pct(served)}   oracle {_pct(oracle)}   random {_pct(random)}   "
                         f"regret {regret:,.0f} (random {random_regret:,.0f})")
        else:
            lines.extend(["  CTR        waiting for the first answers…", ""])
        lines.append(f"  model      version {version if version is not None else '-'} served   "
                     f"learned {learned.get('impressions', 0):,} impressions, {learned.get('clicks', 0):,} clicks   "
                     f"checkpoint backlog {backlog if backlog is not None else '-'}")
        return lines

    def plain(self, stats: DemoStats, t: float) -> str:
        recent = stats.recent()
        ctr = "" if recent is None else (f" | CTR {RECENT_WINDOW}s served {_pct(recent[0])} oracle {_pct(recent[1])} "
                                         f"random {_pct(recent[2])}")
        return (f"demo {self._progress(stats, t)} | {stats.ok} scored ({self.rps:.0f}/s){ctr} | "
                f"model v{stats.version} | checkpoint backlog {stats.backlog()}")


def _pct(x: float) -> str:
    return f"{100 * x:5.1f}%"


def _bar(fraction: float, width: int = 20) -> str:
    filled = int(round(max(0.0, min(1.0, fraction)) * width))
    return "[" + "#" * filled + "." * (width - filled) + "]"
