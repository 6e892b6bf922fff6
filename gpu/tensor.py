"""gpu.Tensor: ref.Tensor whose arrays live on the device (cupy arrays).

All autograd code is ref.tensor's; only the array module (`xp`, real or emulated cupy) and the op
package (`ops` = gpu.ops, set in gpu/__init__.py) differ.
"""
import ref
from gpu import cupy


class Tensor(ref.Tensor):
    xp = cupy

    def numpy(self):
        """The data as a host numpy array (copied from the device)."""
        return cupy.asnumpy(self.data)
