"""The README's JavaScript blocks are excerpts of the chat demo's page (so they stay true)."""

from __future__ import annotations

import re

from browser_kit import ROOT

JS_BLOCK = re.compile(r"^```js\n(.*?)^```", re.MULTILINE | re.DOTALL)


def test_readme_js_blocks_are_excerpts_of_the_demo_page() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    page = (ROOT / "examples" / "chat" / "index.html").read_text(encoding="utf-8")
    blocks = JS_BLOCK.findall(readme)
    assert blocks
    for block in blocks:
        assert block in page, block


def test_readme_first_image_is_the_demo_screenshot() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first = re.search(r"!\[[^\]]*\]\(([^)]+)\)", readme)
    assert first is not None and first.group(1) == "docs/images/chat-demo.png"
    assert (ROOT / first.group(1)).stat().st_size > 10_000
