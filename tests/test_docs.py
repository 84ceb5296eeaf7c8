"""Generated docs must match the code: run 'make docs' after changing tasks or config models."""

from upkeeper.docsgen import main


def test_generated_docs_are_current() -> None:
    assert main(["--check"]) == 0, "docs drifted from the code: run 'make docs'"
