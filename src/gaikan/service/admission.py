"""Who may start an inspect request now: the in-flight cap and the per-client cap.

A request is admitted before its body is read and holds its slot until it
is answered; :mod:`.edge` bounds how long a body may take (the read
deadline), so a stalled upload frees its slot after ``read_timeout_s``.
The counters are touched on the event-loop thread only.
"""

from __future__ import annotations

from .errors import ApiError

__all__ = ["Admission"]


class Admission:
    """In-flight inspect requests, in total and per client address.

    Parameters
    ----------
    max_inflight : int
        Requests accepted at once (503 beyond it).
    max_per_client : int
        Requests one client address may have at once (429 beyond it).
    """

    def __init__(self, max_inflight: int, max_per_client: int) -> None:
        self.max_inflight = int(max_inflight)
        self.max_per_client = int(max_per_client)
        self.inflight = 0
        self.per_client: dict[str, int] = {}

    def enter(self, client: str) -> None:
        """Take a slot for ``client``.

        Raises
        ------
        ApiError
            429 (with Retry-After) when this client is at its cap, 503 when
            the station is.
        """
        held = self.per_client.get(client, 0)
        if held >= self.max_per_client:
            raise ApiError(
                429,
                f"too many uploads in flight from {client} (at most {self.max_per_client} at "
                "once); wait for an answer before sending the next request",
                {"Retry-After": "1"},
            )
        if self.inflight >= self.max_inflight:
            raise ApiError(503, "the station is busy; retry shortly", {"Retry-After": "1"})
        self.inflight += 1
        self.per_client[client] = held + 1

    def leave(self, client: str) -> None:
        """Give back a slot taken by :meth:`enter`."""
        self.inflight -= 1
        left = self.per_client.get(client, 1) - 1
        if left > 0:
            self.per_client[client] = left
        else:
            self.per_client.pop(client, None)

    def busiest_client(self) -> int:
        """Most requests in flight from one client address (0 when idle)."""
        return max(self.per_client.values(), default=0)

    def readiness(self) -> tuple[bool, str | None]:
        """(ready, reason): not ready while every inspect slot is taken."""
        if self.inflight >= self.max_inflight:
            return False, (
                f"saturated: {self.inflight} inspect requests in flight, the cap is "
                f"{self.max_inflight}; new uploads get 503 until some finish"
            )
        return True, None
