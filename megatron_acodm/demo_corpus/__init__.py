"""The demo corpus: real multi-domain text from Debian and PyPI packages, built without other downloads.

`build.build(BuildOptions(...))` does the work; `tools/build_demo_corpus.py` is its command line.
"""
