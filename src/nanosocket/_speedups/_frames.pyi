def apply_mask(data: bytes | bytearray | memoryview, mask: bytes) -> bytes: ...
def build_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv1: bool = False,
    mask_key: bytes | None = None,
) -> bytes: ...
def parse_header(
    buf: bytes | bytearray | memoryview, pos: int, end: int
) -> tuple[int, int, int, int] | None: ...
