from collections.abc import Sequence
from typing import Any

def event_frame(event: str, args: Sequence[Any]) -> bytes: ...
