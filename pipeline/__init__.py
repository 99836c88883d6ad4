"""mesodata's curation pipeline: dataset folders in, a leak-free face-crop benchmark out."""

__version__ = "0.1.0"
