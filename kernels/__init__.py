"""CUDA C sources of kgengine, shipped as the package ``kgengine._cuda`` (see README.md)."""
