"""Sequential: y = f_k(...f_1(f_0(x))), children named "0", "1", ... as in torch.nn.Sequential,
so parameter names read "features.0.weight"."""
import operator

from ref.nn.module import Module


class Sequential(Module):
    """Applies its children in order; indexable (an int gives a child, a slice a new Sequential
    of the same child objects), iterable, and with len()."""

    def __init__(self, *modules):
        super().__init__()
        for i, module in enumerate(modules):
            if not isinstance(module, Module):
                raise TypeError(f"Sequential: argument {i} is a {type(module).__name__}, "
                                f"not a Module")
            setattr(self, str(i), module)

    def forward(self, x):
        for module in self._modules.values():
            x = module(x)
        return x

    def __getitem__(self, index):
        modules = list(self._modules.values())
        if isinstance(index, slice):
            return Sequential(*modules[index])
        if not -len(modules) <= operator.index(index) < len(modules):
            raise IndexError(f"Sequential index {index} is out of range for {len(modules)} modules")
        return modules[index]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())
