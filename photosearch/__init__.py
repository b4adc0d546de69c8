"""photosearch: semantic photo search with CLIP, from the command line.

The package is a library first; the CLI (`photosearch.cli`) is a thin shell over it.
Heavy dependencies (torch, open_clip, faiss) are imported lazily by the modules that need
them, so importing this package, `--help` and `--version` stay instant.
"""

__version__ = "0.1.0"
