"""The README's Python API examples, run as written against a real platform: what the README
promises a notebook user is what they get."""
from __future__ import annotations

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def _examples() -> list[str]:
    text = README.read_text()
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_readme_python_api_examples_run(platform, monkeypatch, capsys) -> None:
    examples = _examples()
    assert len(examples) >= 2  # the section exists and still holds its examples
    # As `lambdascope up` would be found, with its admin key.
    monkeypatch.setenv("LAMBDASCOPE_SERVER", platform.endpoints["registry"])
    monkeypatch.setenv("LAMBDASCOPE_API_KEY", platform.api_key)
    namespace: dict = {}
    for code in examples:
        exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - our own README
    out = capsys.readouterr().out
    assert "LLC " in out and out.count("rep-") >= 1
