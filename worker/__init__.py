"""FastBackend worker runtime: what ships in the serverless image.

Import cost is kept low on purpose: heavy libraries (torch, transformers, peft,
albumentations, runpod) are imported where they are used, never here.
"""

__version__ = "0.1.0"
