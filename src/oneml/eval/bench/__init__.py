"""The benchmarks of `oneml eval`, one module each; a module registers its benchmark on its last line."""

from oneml.registry import import_submodules

import_submodules(__name__, __path__, skip=set())
